//! The dashboard's doors: the page needs no key, a single-use sign-in link or an admin
//! key starts a session (cookie HttpOnly, SameSite=Strict), a session reads the API and
//! changes things only with its CSRF token. (The page itself is driven in a real
//! browser by the browser test.)

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use jiff::civil::date;
use serde_json::Value;
use sha2::{Digest, Sha256};

use common::{Setup, browser, eventually_async, ist, spawn_app};

#[tokio::test]
async fn a_single_use_link_signs_a_browser_in_and_the_session_needs_its_csrf_token_to_change_things()
 {
    let h = spawn_app(
        Setup::at(ist(date(2026, 12, 1), 10, 0, 0)).token_issued_at(ist(
            date(2026, 12, 1),
            9,
            0,
            0,
        )),
    )
    .await;
    let b = browser();
    // The page holds no data: no key needed; it is locked down.
    let page = b
        .get(format!("{}/dashboard", h.daemon_url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(page.text().await.unwrap().contains("/dashboard/app.js"));
    // Not signed in: no session, no data.
    let r = b
        .get(format!("{}/dashboard/session", h.daemon_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = b
        .get(format!("{}/api/v1/accounts", h.daemon_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // `upkeep dashboard-link` (any process with the master key) mints the link.
    let link = h.engine.dashboard_link();
    let path = link.split_once("/dashboard/").unwrap().1;
    let resp = b
        .get(format!("{}/dashboard/{path}", h.daemon_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "redirected to the page");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["upkeep_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    // The link works once.
    let again = browser()
        .get(format!("{}/dashboard/{path}", h.daemon_url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);

    // The session reads the API ...
    let s: Value = b
        .get(format!("{}/dashboard/session", h.daemon_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let csrf = s["csrf"].as_str().unwrap().to_owned();
    let r = b
        .get(format!("{}/api/v1/accounts", h.daemon_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // ... and changes things only with its CSRF token (a cross-site form cannot).
    let url = format!("{}/api/v1/accounts/main/renew", h.daemon_url);
    let r = b.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "csrf");
    let r = b
        .post(&url)
        .header("x-csrf-token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = b
        .post(&url)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "renewed");

    // Signing out ends the session.
    let r = b
        .post(format!("{}/dashboard/signout", h.daemon_url))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = b
        .get(format!("{}/api/v1/accounts", h.daemon_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn only_an_admin_key_signs_in_by_form_and_a_forged_link_does_not() {
    let h = spawn_app(Setup::at(ist(date(2026, 12, 1), 10, 0, 0))).await;
    let now = h.clock.now();
    for (name, key, scope) in [
        ("ops", "upk_admin_for_dashboard_test_000000000", "admin"),
        (
            "bot",
            "upk_token_for_dashboard_test_000000000",
            "token:read",
        ),
    ] {
        h.engine
            .store()
            .create_api_key(name, &Sha256::digest(key.as_bytes()).into(), scope, now)
            .await
            .unwrap();
    }
    let post = |key: &'static str| {
        let url = format!("{}/dashboard/signin", h.daemon_url);
        async move {
            browser()
                .post(url)
                .form(&[("key", key)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Both keys reach the daemon's cache within its refresh.
    eventually_async("the keys loaded", || async {
        (post("upk_token_for_dashboard_test_000000000").await == 403).then_some(())
    })
    .await;
    assert_eq!(post("upk_admin_for_dashboard_test_000000000").await, 303);
    assert_eq!(post("upk_token_for_dashboard_test_000000000").await, 403);
    assert_eq!(post("upk_nothing").await, 401);
    // A link signed with another key, or an OAuth state, is not a sign-in link.
    let oauth_state = h
        .engine
        .login_link("main")
        .unwrap()
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let r = browser()
        .get(format!(
            "{}/dashboard/signin?token={oauth_state}",
            h.daemon_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
