//! The API's OpenAPI document is a snapshot: a change to the API shows up as a diff of
//! `tests/snapshots/openapi.json` in review. To accept a change on purpose:
//! `UPKEEP_UPDATE_SNAPSHOTS=1 cargo test -p upkeep-server --test openapi`.

// Tests may unwrap; clippy's allow-unwrap-in-tests does not reach helper functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn the_openapi_document_matches_its_snapshot() {
    let doc = upkeep_server::api::openapi_document();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json");
    if std::env::var_os("UPKEEP_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, format!("{doc}\n")).unwrap();
    }
    let snapshot = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        snapshot.trim_end(),
        doc.trim_end(),
        "the API changed: review the diff and update the snapshot (see the module docs)"
    );
    // Every route the router serves is documented, with its scope.
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    for path in [
        "/api/token/status",
        "/api/token/force-refresh",
        "/api/upstox/token/refresh",
        "/api/v1/accounts",
        "/api/v1/accounts/{id}",
        "/api/v1/accounts/{id}/renew",
        "/api/v1/usage",
        "/api/v1/accounts/{id}/login-link",
        "/api/v1/accounts/{id}/token",
        "/api/v1/scheduler",
        "/api/v1/events",
        "/metrics",
    ] {
        assert!(v["paths"][path].is_object(), "{path} is not documented");
    }
    assert_eq!(
        v["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
}
