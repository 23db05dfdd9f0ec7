//! The body of `GET /api/v1/accounts/{id}/token`, rendered once per token.
//!
//! Everything in the answer but `seconds_left` is fixed for a token's life, so it is
//! rendered on the first read and kept beside the in-memory token (a [`TokenBody`] in
//! [`CurrentToken`]). A rotation makes a new `CurrentToken`, so the next read renders
//! the new token; the old rendering goes (zeroized) with the old token. Each answer is
//! the cached head, the seconds left and a fixed tail, in a buffer that is zeroized too
//! when the response has been written.
//!
//! The bytes are exactly what `serde_json` made of the former `json!` object: the keys
//! in its (sorted) order, compact, strings escaped by `serde_json` itself.

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

use axum::body::Bytes;
use upkeep_core::expiry::format_ist;
use zeroize::Zeroizing;

use crate::engine::CurrentToken;

/// What follows the value of `seconds_left`.
const TAIL: &[u8] = br#","token_type":"Bearer"}"#;

/// The longest `seconds_left` (an `i64`, clamped at 0).
const MAX_NUMBER: usize = 20;

/// The token endpoint's rendering of one token. Holds the token: zeroized on drop,
/// never printed (`Debug` shows `[REDACTED]`).
#[derive(Clone, Default)]
pub struct TokenBody(OnceLock<Zeroizing<Vec<u8>>>);

impl fmt::Debug for TokenBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenBody([REDACTED])")
    }
}

impl TokenBody {
    /// The JSON answer for `account`'s token `c` with `seconds_left` to go.
    pub(crate) fn answer(&self, account: &str, c: &CurrentToken, seconds_left: i64) -> Bytes {
        let head = self.0.get_or_init(|| render_head(account, c));
        let mut body = Zeroizing::new(Vec::with_capacity(head.len() + MAX_NUMBER + TAIL.len()));
        body.extend_from_slice(head);
        // Within the capacity reserved above: no reallocation leaves a copy behind.
        let _ = write!(body, "{}", seconds_left.max(0));
        body.extend_from_slice(TAIL);
        Bytes::from_owner(body)
    }
}

/// `{"access_token":…,…,"seconds_left":` for `c`.
fn render_head(account: &str, c: &CurrentToken) -> Zeroizing<Vec<u8>> {
    // Measured first, then written into a buffer of exactly that size: a growing
    // buffer would leave copies of the token in freed memory.
    let mut count = Count(0);
    let _ = write_head(&mut count, account, c);
    let mut head = Zeroizing::new(Vec::with_capacity(count.0));
    let _ = write_head(&mut *head, account, c);
    head
}

fn write_head(w: &mut impl Write, account: &str, c: &CurrentToken) -> io::Result<()> {
    let string = |w: &mut dyn Write, s: &str| serde_json::to_writer(w, s).map_err(io::Error::from);
    w.write_all(br#"{"access_token":"#)?;
    string(w, c.token.expose())?;
    w.write_all(br#","account":"#)?;
    string(w, account)?;
    w.write_all(br#","expires_at":"#)?;
    string(w, &format_ist(c.expires_at))?;
    w.write_all(br#","fingerprint":"#)?;
    string(w, &c.fingerprint)?;
    w.write_all(br#","kind":"#)?;
    string(w, c.kind.as_str())?;
    w.write_all(br#","seconds_left":"#)
}

/// A writer that only counts.
struct Count(usize);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use upkeep_core::AccessToken;
    use upkeep_core::expiry::TokenKind;

    #[test]
    fn the_rendering_is_the_json_object_and_never_printed() {
        let secret = "eyJ0eXAiOiJKV1QifQ.e30.sig\"with\\quotes";
        let expires_at: jiff::Timestamp = "2026-12-01T22:00:00Z".parse().unwrap_or_default();
        let c = CurrentToken {
            token: AccessToken::new(secret),
            issued_at: None,
            expires_at,
            kind: TokenKind::Daily,
            source: "totp".into(),
            stored_at: expires_at,
            fingerprint: "0123456789ab".into(),
            user_id: None,
            api_body: TokenBody::default(),
            bearer: Default::default(),
        };
        let body = c.api_body.answer("main", &c, -5);
        let expected = serde_json::json!({
            "access_token": secret, "account": "main", "expires_at": "2026-12-02T03:30:00+05:30",
            "fingerprint": "0123456789ab", "kind": "daily", "seconds_left": 0, "token_type": "Bearer",
        });
        assert_eq!(body, expected.to_string().into_bytes());
        // Rendered now, and still not in Debug (of the token or its rendering).
        assert!(!format!("{c:?}").contains("with"));
    }
}
