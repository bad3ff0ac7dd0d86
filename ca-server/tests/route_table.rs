//! Walks the Vault surface's route table and calls every route, through the real router over a
//! temporary SQLite ledger (axum's `oneshot`, no listener): with no token, with a token that has
//! no policy but `default`, and with the root token. Deny by default means:
//!
//! - a token route answers 403 `permission denied` without a token, and with a policy-less token
//!   unless the `default` policy grants it (a token looking itself up, renewing or revoking
//!   itself, asking its capabilities);
//! - a public route never answers 403 or 405 for the operations it declares, and never 500;
//! - the plain-HTTP router serves none of it;
//! - none of these calls writes a certificate.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ca_server::auth::Auth;
use ca_server::auth::token::{Origin, TokenSpec};
use ca_server::config::Config;
use ca_server::http::{AppState, app, crl::CrlCache, public_app};
use ca_server::server::{Runtime, create_root_token_once, initialize_if_new};
use ca_server::vault::{Operation, VaultState};
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    runtime: Runtime,
    state: AppState,
    vault: VaultState,
    root: String,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    initialize_if_new(&config).await.expect("new deployment");
    let runtime = Runtime::open(&config).await.expect("runtime");
    let auth = Auth::new(Arc::clone(&runtime.store), runtime.seal().expect("seal"));
    create_root_token_once(&config, &auth).await.expect("root");
    let root = std::fs::read_to_string(config.data_dir.join("root-token"))
        .expect("root token")
        .trim()
        .to_owned();
    let crl = CrlCache::default();
    let vault = VaultState::new(
        config.vault.clone(),
        auth,
        runtime.issuance.clone(),
        crl.clone(),
    )
    .expect("vault");
    let state = AppState {
        issuance: runtime.issuance.clone(),
        store: Arc::clone(&runtime.store),
        acme: None,
        vault: Some(vault.clone()),
        crl,
        metrics: config.metrics.clone(),
        in_flight: ca_server::http::limit::InFlight::new(64),
    };
    Fixture {
        _dir: dir,
        runtime,
        state,
        vault,
        root,
    }
}

fn method(op: Operation) -> &'static str {
    match op {
        Operation::Read => "GET",
        Operation::Write => "POST",
        Operation::List => "LIST",
        Operation::Delete => "DELETE",
    }
}

async fn call(
    router: axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        request = request.header("x-vault-token", t);
    }
    let body = if method == "POST" { "{}" } else { "" };
    let response = router
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("router answers");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Every (path, operation, public) the table declares, with `+` segments filled in.
fn every_route(vault: &VaultState) -> Vec<(String, Operation, bool)> {
    let mut out = Vec::new();
    for backend in vault.routes().backends() {
        for route in backend.routes {
            let tail = route.pattern.replace('+', "x").replace('*', "x/y");
            let path = format!("/v1/{}/{}", backend.prefix, tail);
            for op in route.ops {
                out.push((path.clone(), *op, route.is_public()));
            }
        }
    }
    assert!(out.len() > 60, "the table lists every route: {}", out.len());
    out
}

/// Public routes that check the caller's token themselves (Vault's `sys/internal/ui/mounts`:
/// unauthenticated in its routing, yet it says nothing to a caller without a capability).
const SELF_AUTHENTICATING: [&str; 1] = ["/v1/sys/internal/ui/mounts/"];

/// What the built-in `default` policy grants a token about itself.
const DEFAULT_GRANTS: [(&str, Operation); 4] = [
    ("/v1/auth/token/lookup-self", Operation::Read),
    ("/v1/auth/token/renew-self", Operation::Write),
    ("/v1/auth/token/revoke-self", Operation::Write),
    ("/v1/sys/capabilities-self", Operation::Write),
];

#[tokio::test]
async fn every_route_is_public_by_declaration_or_denied() {
    let f = fixture().await;
    let router = app(f.state.clone());
    let before = f.runtime.store.summary(0).await.expect("summary").total;
    let mut checked = 0;
    for (path, op, public) in every_route(&f.vault) {
        let (status, body) = call(router.clone(), method(op), &path, None).await;
        if public && SELF_AUTHENTICATING.iter().any(|p| path.contains(p)) {
            // Public in Vault, but it answers only a token with a capability under the mount.
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
            assert!(
                body.contains("preflight capability check"),
                "{path}: {body}"
            );
        } else if public {
            assert!(
                status != StatusCode::FORBIDDEN
                    && status != StatusCode::METHOD_NOT_ALLOWED
                    && !status.is_server_error(),
                "public {} {path}: {status} {body}",
                method(op)
            );
        } else {
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::FORBIDDEN, r#"{"errors":["permission denied"]}"#),
                "no token: {} {path}",
                method(op)
            );
            // A token with no policy but `default` (fresh for each call: revoke-self works).
            let (token, _) = f
                .vault
                .auth()
                .mint(TokenSpec::default(), Origin::Login)
                .await
                .expect("token");
            let (status, body) = call(router.clone(), method(op), &path, Some(&token)).await;
            let granted = DEFAULT_GRANTS.contains(&(path.as_str(), op));
            if granted {
                assert_ne!(
                    status,
                    StatusCode::FORBIDDEN,
                    "default policy: {path}: {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "policy-less token: {} {path}: {body}",
                    method(op)
                );
            }
        }
        checked += 1;
    }
    assert!(checked > 60);
    let after = f.runtime.store.summary(0).await.expect("summary").total;
    assert_eq!(before, after, "no call wrote a certificate");
}

#[tokio::test]
async fn unknown_paths_do_not_reveal_themselves() {
    let f = fixture().await;
    let router = app(f.state.clone());
    for path in [
        "/v1/secret/data/x",
        "/v1/pki_int/nonexistent",
        "/v1/sys/raw/core",
        "/v1",
    ] {
        let (status, _) = call(router.clone(), "GET", path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} without a token");
        let (status, body) = call(router.clone(), "GET", path, Some(&f.root)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} with root: {body}");
    }
}

#[tokio::test]
async fn plain_http_serves_only_public_material() {
    let f = fixture().await;
    let plain = public_app(f.state.clone());
    for (path, op, _) in every_route(&f.vault) {
        let (status, _) = call(plain.clone(), method(op), &path, Some(&f.root)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "plain HTTP {path}");
    }
    for path in ["/acme/directory", "/v1/sys/health"] {
        assert_eq!(
            call(plain.clone(), "GET", path, None).await.0,
            StatusCode::NOT_FOUND
        );
    }
    for path in [
        "/healthz",
        "/readyz",
        "/ca/bundle.pem",
        "/ca/chain.pem",
        "/crl",
        "/crl.pem",
        "/metrics",
    ] {
        assert_eq!(
            call(plain.clone(), "GET", path, None).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
}
