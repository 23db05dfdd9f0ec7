//! Small HTTP helpers: cookies, lenient form parsing, URL building, HTML escaping.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

/// Value of cookie `name` from the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Adds `Set-Cookie: name=value; Path=/; HttpOnly; SameSite=Lax`.
pub(crate) fn set_cookie(resp: &mut Response, name: &str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax"))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Parses `a=b&c=d` leniently: percent-escapes are decoded when present, but raw
/// `:`/`/` are accepted too (the upstox-totp client does not URL-encode its body).
/// The first occurrence of a key wins.
pub(crate) fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// `base` with extra query pairs appended (properly encoded).
pub(crate) fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(base) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            url.to_string()
        }
        Err(_) => {
            let encoded: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}{encoded}")
        }
    }
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The bearer token of the request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unencoded_form_body_from_totp_client_parses() {
        let f = parse_form(
            b"code=ab12cd&client_id=x-y&client_secret=s3&redirect_uri=http://127.0.0.1:9/cb&grant_type=authorization_code",
        );
        assert_eq!(f["redirect_uri"], "http://127.0.0.1:9/cb");
        assert_eq!(f["code"], "ab12cd");
    }

    #[test]
    fn query_is_appended_to_redirect_uri() {
        assert_eq!(
            with_query("http://h/cb", &[("code", "a b"), ("state", "x&y")]),
            "http://h/cb?code=a+b&state=x%26y"
        );
    }
}
