//! The notifier webhook: what Upstox POSTs to the app's notifier URL when the user
//! approves an access-token request (reference 3). Upstox signs nothing, so parsing is
//! strict: every field must be present with the documented type, timestamps must be
//! epoch-millisecond strings, and `message_type` must be `access_token`. Errors name the
//! field, never its value.

use jiff::Timestamp;
use serde_json::{Map, Value};
use upkeep_core::AccessToken;

use crate::models::epoch_ms_string;

/// Largest body accepted (the documented payload is well under 2 KiB).
pub const MAX_NOTIFIER_BODY: usize = 16 * 1024;

/// A parsed notifier webhook payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierPayload {
    /// The app's API key.
    pub client_id: String,
    /// The UCC the token belongs to.
    pub user_id: String,
    pub access_token: AccessToken,
    /// `Bearer`.
    pub token_type: String,
    pub expires_at: Timestamp,
    pub issued_at: Timestamp,
    /// Always `access_token`.
    pub message_type: String,
}

/// Why a webhook body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("notifier body is larger than {MAX_NOTIFIER_BODY} bytes; not an Upstox notification")]
    TooLarge,
    #[error("notifier body is not a JSON object; not an Upstox notification")]
    NotJson,
    #[error("notifier body lacks `{0}` (or it is empty); not an Upstox access-token notification")]
    Missing(&'static str),
    #[error("notifier field `{0}` has the wrong type; expected a string")]
    NotAString(&'static str),
    #[error("notifier field `{0}` is not an epoch-milliseconds string")]
    BadTimestamp(&'static str),
    #[error("notifier message_type is not `access_token`; ignoring it")]
    WrongMessageType,
    #[error("notifier token_type is not `Bearer`; ignoring it")]
    WrongTokenType,
    #[error("notifier expires_at is not after issued_at; ignoring it")]
    ExpiresBeforeIssued,
}

/// Parses a notifier webhook body. Never panics; never echoes the token.
pub fn parse_notifier(body: &[u8]) -> Result<NotifierPayload, WebhookError> {
    if body.len() > MAX_NOTIFIER_BODY {
        return Err(WebhookError::TooLarge);
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(WebhookError::NotJson);
    };
    let message_type = string(&map, "message_type")?;
    if message_type != "access_token" {
        return Err(WebhookError::WrongMessageType);
    }
    let token_type = string(&map, "token_type")?;
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(WebhookError::WrongTokenType);
    }
    let client_id = string(&map, "client_id")?;
    let user_id = string(&map, "user_id")?;
    let access_token = AccessToken::new(string(&map, "access_token")?);
    if access_token.expose().is_empty() {
        return Err(WebhookError::Missing("access_token"));
    }
    let expires_at = timestamp(&map, "expires_at")?;
    let issued_at = timestamp(&map, "issued_at")?;
    if expires_at <= issued_at {
        return Err(WebhookError::ExpiresBeforeIssued);
    }
    Ok(NotifierPayload {
        client_id: client_id.to_owned(),
        user_id: user_id.to_owned(),
        access_token,
        token_type: token_type.to_owned(),
        expires_at,
        issued_at,
        message_type: message_type.to_owned(),
    })
}

fn string<'a>(map: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, WebhookError> {
    match map.get(key) {
        None | Some(Value::Null) => Err(WebhookError::Missing(key)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(WebhookError::Missing(key)),
        Some(Value::String(s)) => Ok(s.trim()),
        Some(_) => Err(WebhookError::NotAString(key)),
    }
}

fn timestamp(map: &Map<String, Value>, key: &'static str) -> Result<Timestamp, WebhookError> {
    epoch_ms_string(string(map, key)?).ok_or(WebhookError::BadTimestamp(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str =
        "eyJ0eXAiOiJKV1QiLCJrZXlfaWQiOiJza192MS4wIiwiYWxnIjoiSFMyNTYifQ.e30.c2VjcmV0LXNpZw";

    fn sample() -> Value {
        serde_json::json!({
            "client_id": "615b1297-d443-3b39-ba19-1927fbcdddc7",
            "user_id": "2ZCDQ9",
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_at": "1731448800000",
            "issued_at": "1731412800000",
            "message_type": "access_token"
        })
    }

    fn with(key: &str, value: Value) -> Vec<u8> {
        let mut v = sample();
        v[key] = value;
        serde_json::to_vec(&v).unwrap()
    }

    fn without(key: &str) -> Vec<u8> {
        let mut v = sample();
        v.as_object_mut().unwrap().remove(key);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn parses_the_documented_payload() {
        let p = parse_notifier(&serde_json::to_vec(&sample()).unwrap()).unwrap();
        assert_eq!(p.client_id, "615b1297-d443-3b39-ba19-1927fbcdddc7");
        assert_eq!(p.user_id, "2ZCDQ9");
        assert_eq!(p.access_token.expose(), TOKEN);
        assert_eq!(p.token_type, "Bearer");
        // 2024-11-13 03:30 IST and 2024-11-12 17:30 IST
        assert_eq!(p.expires_at.to_string(), "2024-11-12T22:00:00Z");
        assert_eq!(p.issued_at.to_string(), "2024-11-12T12:00:00Z");
        assert_eq!(p.message_type, "access_token");
        assert!(!format!("{p:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn rejects_garbage_with_a_typed_error_naming_the_field() {
        use WebhookError::*;
        let cases: Vec<(Vec<u8>, WebhookError)> = vec![
            (b"".to_vec(), NotJson),
            (b"not json".to_vec(), NotJson),
            (b"[1,2]".to_vec(), NotJson),
            (b"\"access_token\"".to_vec(), NotJson),
            (vec![0xff, 0xfe, 0x00], NotJson),
            (vec![b' '; MAX_NOTIFIER_BODY + 1], TooLarge),
            (without("access_token"), Missing("access_token")),
            (
                with("access_token", Value::from("  ")),
                Missing("access_token"),
            ),
            (
                with("access_token", Value::from(12)),
                NotAString("access_token"),
            ),
            (without("client_id"), Missing("client_id")),
            (with("user_id", Value::Null), Missing("user_id")),
            (
                with("expires_at", Value::from(1731448800000_i64)),
                NotAString("expires_at"),
            ),
            (
                with("expires_at", Value::from("2024-11-13T03:30:00+05:30")),
                BadTimestamp("expires_at"),
            ),
            (
                with("issued_at", Value::from("-1")),
                BadTimestamp("issued_at"),
            ),
            (
                with("issued_at", Value::from("99999999999999999999")),
                BadTimestamp("issued_at"),
            ),
            (with("message_type", Value::from("order")), WrongMessageType),
            (without("message_type"), Missing("message_type")),
            (with("token_type", Value::from("MAC")), WrongTokenType),
            (
                with("issued_at", Value::from("1731448800000")),
                ExpiresBeforeIssued,
            ),
        ];
        for (body, want) in cases {
            let got = parse_notifier(&body).unwrap_err();
            assert_eq!(got, want, "{}", String::from_utf8_lossy(&body));
            assert!(!got.to_string().contains("c2VjcmV0"));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_notifier(&body);
        }

        #[test]
        fn arbitrary_field_values_never_panic(key in "[a-z_]{1,13}", value in ".{0,40}") {
            let _ = parse_notifier(&with(&key, Value::from(value)));
        }
    }

    #[test]
    fn error_messages_never_contain_the_token() {
        let body = with("message_type", Value::from(TOKEN));
        let err = parse_notifier(&body).unwrap_err();
        assert!(!err.to_string().contains("eyJ0"), "{err}");
    }
}
