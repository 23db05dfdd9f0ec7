use std::time::Duration;

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::*;

/// A tiny notifier endpoint that forwards each JSON body it receives.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/notify",
        post(move |Json(body): Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/notify"), rx)
}

async fn sim_with_notifier(
    auto_approve: bool,
) -> (TestSim, mpsc::UnboundedReceiver<Value>, String) {
    let (url, rx) = receiver().await;
    let mut c = config();
    c.apps[0].notifier_url = Some(url.clone());
    c.auto_approve_token_requests = auto_approve;
    (TestSim::start_with(c).await, rx, url)
}

async fn request_token(sim: &TestSim, secret: &str) -> (u16, String, Value) {
    parts(
        sim.post_json(
            &format!("/v3/login/auth/token/request/{CLIENT_ID}"),
            &json!({"client_secret": secret}),
        )
        .await,
    )
    .await
}

#[tokio::test]
async fn approved_token_request_posts_the_token_to_the_notifier() {
    let (sim, mut rx, url) = sim_with_notifier(false).await;
    let (status, ct, body) = request_token(&sim, CLIENT_SECRET).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    assert_eq!(body["status"], "success");
    let rollover_ms = ist(2026, 2, 6, 3, 30, 0).as_millisecond().to_string();
    assert_eq!(body["data"]["authorization_expiry"], rollover_ms.as_str());
    assert_eq!(body["data"]["notifier_url"], url.as_str());

    let pending = parts(
        sim.http
            .get(sim.url("/sim/token-requests"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .2;
    assert_eq!(pending.as_array().unwrap().len(), 1);

    let (status, _, approval) = parts(
        sim.post_json(
            &format!("/sim/token-requests/{CLIENT_ID}/approve"),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{approval}");
    assert_eq!(approval["webhook_status"], 200);

    let payload = rx
        .try_recv()
        .expect("webhook delivered before approve returned");
    assert_eq!(payload["client_id"], CLIENT_ID);
    assert_eq!(payload["user_id"], UCC);
    assert_eq!(payload["token_type"], "Bearer");
    assert_eq!(payload["message_type"], "access_token");
    assert_eq!(payload["expires_at"], rollover_ms.as_str());
    let issued = sim.clock().now().as_millisecond().to_string();
    assert_eq!(payload["issued_at"], issued.as_str());
    let token = payload["access_token"].as_str().unwrap();
    assert_eq!(token, approval["access_token"].as_str().unwrap());
    let (status, _, _) = parts(sim.get_with("/v2/user/profile", token).await).await;
    assert_eq!(status, 200);
    assert!(sim.handle.state().pending_token_requests().is_empty());
}

#[tokio::test]
async fn rejected_token_request_sends_nothing() {
    let (sim, mut rx, _) = sim_with_notifier(false).await;
    request_token(&sim, CLIENT_SECRET).await;
    let (status, _, _) = parts(
        sim.post_json(
            &format!("/sim/token-requests/{CLIENT_ID}/reject"),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = parts(
        sim.post_json(
            &format!("/sim/token-requests/{CLIENT_ID}/approve"),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404, "nothing left to approve");
    assert!(rx.try_recv().is_err());
    assert_eq!(sim.handle.state().counters().webhooks_delivered, 0);
}

#[tokio::test]
async fn unapproved_request_lapses_at_0330_ist() {
    let (sim, mut rx, _) = sim_with_notifier(false).await;
    request_token(&sim, CLIENT_SECRET).await;
    sim.clock()
        .jump_to_ist(jiff::civil::date(2026, 2, 6).at(3, 30, 0, 0));
    let (status, _, _) = parts(
        sim.post_json(
            &format!("/sim/token-requests/{CLIENT_ID}/approve"),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 410);
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn auto_approve_delivers_without_a_control_call() {
    let (sim, mut rx, _) = sim_with_notifier(true).await;
    let (status, _, _) = request_token(&sim, CLIENT_SECRET).await;
    assert_eq!(status, 200);
    let payload = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("webhook within 10 s")
        .unwrap();
    assert_eq!(payload["user_id"], UCC);
}

#[tokio::test]
async fn token_request_checks_the_secret() {
    let (sim, _rx, _) = sim_with_notifier(false).await;
    let (status, _, body) = request_token(&sim, "nope").await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "UDAPI100016");
    let (status, _, body) = parts(
        sim.post_json(
            &format!("/v3/login/auth/token/request/{CLIENT_ID}"),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "UDAPI1024");
    assert!(sim.handle.state().pending_token_requests().is_empty());
}
