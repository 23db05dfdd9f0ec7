//! The notifier webhook body (`upkeep_upstox::webhook::parse_notifier`): whatever anyone
//! on the network POSTs to the daemon's webhook endpoint.

#![no_main]

use libfuzzer_sys::fuzz_target;
use upkeep_core::expiry::inspect;
use upkeep_upstox::webhook::{MAX_NOTIFIER_BODY, parse_notifier};

fuzz_target!(|body: &[u8]| {
    match parse_notifier(body) {
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error: {msg}");
        }
        Ok(p) => {
            // What the parser promises about an accepted payload.
            assert!(body.len() <= MAX_NOTIFIER_BODY);
            assert_eq!(p.message_type, "access_token");
            assert!(p.token_type.eq_ignore_ascii_case("bearer"));
            assert!(!p.access_token.expose().is_empty());
            assert!(!p.client_id.is_empty() && !p.user_id.is_empty());
            assert!(p.expires_at > p.issued_at);
            // The token never shows in the payload's Debug (checked when the token is
            // longer than the token's own Debug and is not also sent as another field,
            // so it cannot appear by coincidence).
            let token = p.access_token.expose();
            if token.len() > format!("{:?}", p.access_token).len()
                && !p.client_id.contains(token)
                && !p.user_id.contains(token)
            {
                assert!(!format!("{p:?}").contains(token), "Debug leaks the token");
            }
            // The engine's next step: decode the delivered token.
            let _ = inspect(&p.access_token);
        }
    }
});
