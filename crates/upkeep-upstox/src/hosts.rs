//! The Upstox hosts. Every URL this crate builds starts from one of these, so a test
//! (or the demo) can point all of them at the simulator's single listener.

use url::Url;

/// The hosts the client talks to. `Default` is the real Upstox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    /// REST API: profile, funds, quotes, the OAuth dialog and the token endpoints.
    pub api: Url,
    /// The order host the official SDK sends order placement to.
    pub order: Url,
    /// The login-site service used by the headless TOTP login (`service.upstox.com`).
    pub login: Url,
    /// The login page (`login.upstox.com`): its origin is sent as `origin`/`referer`.
    pub login_page: Url,
}

impl Hosts {
    /// Every host set to the same base URL (the simulator serves them all on one listener).
    pub fn all(base: &Url) -> Self {
        Self {
            api: base.clone(),
            order: base.clone(),
            login: base.clone(),
            login_page: base.clone(),
        }
    }

    /// Whether `url` is on one of these hosts (same scheme, host and port).
    pub(crate) fn is_known(&self, url: &Url) -> bool {
        [&self.api, &self.order, &self.login, &self.login_page]
            .iter()
            .any(|h| h.origin() == url.origin())
    }
}

/// The real login site may hop between subdomains of this domain.
const UPSTOX_DOMAIN: &str = "upstox.com";

impl Hosts {
    /// Whether the login flow may follow a redirect to `url`: one of these hosts, or, when
    /// the login page is Upstox's own, any https `*.upstox.com` host. A stand-in login
    /// service (the simulator, a relay) may redirect only among the configured hosts: its
    /// "parent domain" could be a public suffix such as `co.in`. Anything else, like the
    /// app's redirect URI, is read from `Location`, never fetched.
    pub(crate) fn may_follow(&self, url: &Url) -> bool {
        if self.is_known(url) {
            return true;
        }
        let (Some(url::Host::Domain(target)), Some(url::Host::Domain(page))) =
            (url.host(), self.login_page.host())
        else {
            return false;
        };
        let under_upstox = |host: &str| {
            host.to_ascii_lowercase()
                .strip_suffix(UPSTOX_DOMAIN)
                .is_some_and(|rest| rest.ends_with('.'))
        };
        url.scheme() == "https" && under_upstox(page) && under_upstox(target)
    }
}

impl Default for Hosts {
    fn default() -> Self {
        Self {
            api: fixed("https://api.upstox.com/"),
            order: fixed("https://api-hft.upstox.com/"),
            login: fixed("https://service.upstox.com/"),
            login_page: fixed("https://login.upstox.com/"),
        }
    }
}

/// Parses a URL literal written in this file (checked by a unit test).
#[allow(clippy::expect_used)] // a compile-time literal, not input: cannot fail at run time
fn fixed(literal: &str) -> Url {
    Url::parse(literal).expect("hard-coded Upstox host is a valid URL")
}

/// `base` + `path`, keeping any path prefix `base` has (`http://127.0.0.1:9/up/` +
/// `v2/user/profile` = `http://127.0.0.1:9/up/v2/user/profile`). The query is cleared.
pub(crate) fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    let rest = path.trim_start_matches('/');
    url.set_path(&format!("{prefix}/{rest}"));
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so `|` is `%7C` and a
/// space is `%20`, as the quote endpoints expect).
pub(crate) fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_hosts_are_the_real_upstox_hosts() {
        let h = Hosts::default();
        assert_eq!(h.api.as_str(), "https://api.upstox.com/");
        assert_eq!(h.order.as_str(), "https://api-hft.upstox.com/");
        assert_eq!(h.login.as_str(), "https://service.upstox.com/");
        assert_eq!(h.login_page.as_str(), "https://login.upstox.com/");
    }

    #[test]
    fn endpoint_keeps_a_base_path_prefix() {
        let base = Url::parse("http://127.0.0.1:9/up/").unwrap();
        assert_eq!(
            endpoint(&base, "/v2/user/profile").as_str(),
            "http://127.0.0.1:9/up/v2/user/profile"
        );
        let bare = Url::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(
            endpoint(&bare, "v2/logout").as_str(),
            "http://127.0.0.1:9/v2/logout"
        );
    }

    #[test]
    fn instrument_keys_are_encoded_like_the_docs_show() {
        assert_eq!(
            encode_component("NSE_EQ|INE848E01016"),
            "NSE_EQ%7CINE848E01016"
        );
        assert_eq!(
            encode_component("NSE_INDEX|Nifty 50"),
            "NSE_INDEX%7CNifty%2050"
        );
    }

    #[test]
    fn known_hosts_match_by_origin_only() {
        let h = Hosts::default();
        assert!(h.is_known(&Url::parse("https://login.upstox.com/login/x?y=1").unwrap()));
        assert!(!h.is_known(
            &Url::parse("https://api-v2.upstox.com/login/authorization/redirect").unwrap()
        ));
        assert!(!h.is_known(&Url::parse("http://api.upstox.com/").unwrap()));
    }

    #[test]
    fn login_flow_through_a_stand_in_login_host_never_follows_a_redirect_to_a_neighbour_domain() {
        // A relay on a multi-label suffix (co.in): "the parent domain" would be all of co.in.
        let relay = Url::parse("https://login.broker.co.in/").unwrap();
        let mut h = Hosts::all(&relay);
        h.api = Url::parse("https://api.broker.co.in/").unwrap();
        let ok = |u: &str| h.may_follow(&Url::parse(u).unwrap());
        assert!(ok("https://login.broker.co.in/next?step=2"));
        assert!(ok("https://api.broker.co.in/v2/login"));
        assert!(!ok("https://evil.co.in/steal"));
        assert!(!ok("https://auth.other-broker.co.in/x"));
    }

    #[test]
    fn login_flow_follows_upstox_subdomains_but_not_the_app() {
        let h = Hosts::default();
        let ok = |u: &str| h.may_follow(&Url::parse(u).unwrap());
        assert!(ok("https://login.upstox.com/?user_id=X"));
        assert!(ok("https://accounts.upstox.com/x"));
        assert!(!ok("http://accounts.upstox.com/x"));
        assert!(!ok("https://evilupstox.com/x"));
        assert!(!ok("https://127.0.0.1:8400/oauth/callback?code=abc"));
        let sim = Hosts::all(&Url::parse("http://127.0.0.1:9000/").unwrap());
        assert!(sim.may_follow(&Url::parse("http://127.0.0.1:9000/sim/login").unwrap()));
        assert!(!sim.may_follow(&Url::parse("http://127.0.0.1:8400/oauth/callback").unwrap()));
        assert!(!sim.may_follow(&Url::parse("https://login.upstox.com/").unwrap()));
    }
}
