//! The HTTP edge: router assembly, health and readiness, trust-bundle downloads, TLS serving.
//!
//! Two routers: [`public_app`] holds only public material (health, readiness, trust bundle and
//! chain, CRLs, metrics) and is all the plain-HTTP listener serves; [`app`] adds the protocol
//! surfaces (ACME, the Vault API with the ledger reports) for HTTPS. Handlers turn internal errors
//! into each protocol's own error form; internal details are logged, never echoed.

pub mod crl;
pub mod limit;
pub mod listener;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ca_store::Store;
use serde_json::json;

use crate::issuer::Issuance;
use crate::issuer::hierarchy::to_pem;

/// Where the trust bundle (root certificates) is served, as PEM.
pub const TRUST_BUNDLE_PATH: &str = "/ca/bundle.pem";
/// Where the issuing chain (issuing CA, then parents) is served, as PEM.
pub const CHAIN_PATH: &str = "/ca/chain.pem";
/// Where the default issuer's CRL is served (DER); `/crl.pem` serves it as PEM. Each issuer's
/// own is at `/crl/issuer/<issuer id>[.pem]`: point `[ca] crl_urls` at
/// `http://<service>/crl/issuer/{{issuer_id}}` so certificates keep naming their issuer's CRL
/// after a rotation.
pub const CRL_PATH: &str = "/crl";
/// Where the SPIFFE trust bundle (a JWK set of the roots, `x509-svid` use) is served.
pub const SPIFFE_BUNDLE_PATH: &str = "/ca/spiffe-bundle.json";

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Signing and recording.
    pub issuance: Issuance,
    /// The ledger and protocol state.
    pub store: Arc<dyn Store>,
    /// The ACME server, when enabled.
    pub acme: Option<crate::acme::AcmeState>,
    /// The Vault-compatible API, when enabled.
    pub vault: Option<crate::vault::VaultState>,
    /// The current CRL.
    pub crl: crl::CrlCache,
    /// `/metrics` settings.
    pub metrics: crate::metrics::MetricsConfig,
    /// Protocol requests being handled, shared by ACME and the Vault API.
    pub in_flight: limit::InFlight,
}

/// Public material only: what the plain-HTTP listener serves. Every other path is 404 there.
pub fn public_app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(TRUST_BUNDLE_PATH, get(trust_bundle))
        .route(CHAIN_PATH, get(chain))
        .route(CRL_PATH, get(crl_der))
        .route("/crl.pem", get(crl_pem))
        .route("/crl/{shard}", get(crl_shard))
        .route("/crl/issuer/{issuer}", get(issuer_crl))
        .route("/crl/issuer/{issuer}/{shard}", get(issuer_crl_shard))
        .route(SPIFFE_BUNDLE_PATH, get(spiffe_bundle))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The complete router, for HTTPS. Tests drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    let mut router = public_app(state.clone());
    if let Some(acme) = state.acme {
        router = router.merge(crate::acme::router(acme, state.in_flight.clone()));
    }
    if let Some(vault) = state.vault {
        router = router.merge(crate::vault::router(vault, state.in_flight.clone()));
    }
    router
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// How long readiness waits for the database: well under kubelet's default 1 s probe timeout,
/// so an unreachable database reads as 503, not as a probe timeout.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Ready when the database answers within [`READY_TIMEOUT`]; the CA key is loaded before the
/// listener starts.
async fn readyz(State(state): State<AppState>) -> Response {
    let ca = state.issuance.ca();
    let ping = match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {READY_TIMEOUT:?}")),
    };
    match ping {
        Ok(()) => axum::Json(json!({
            "status": "ready",
            "database": "ok",
            "issuer_id": ca.issuer_id(),
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "not ready", "database": "unreachable"})),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}

fn pem_response(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/pem-certificate-chain"),
        )],
        body,
    )
        .into_response()
}

/// Prometheus scrape: event counters plus state read from the ledger now. OpenMetrics when the
/// scraper asks for it (`Accept: application/openmetrics-text`, as Prometheus does), else the
/// text format 0.0.4, as client_golang negotiates.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let rendered = state
        .issuance
        .metrics()
        .render(
            &state.metrics,
            &state.issuance.issuers().current(),
            state.store.as_ref(),
            current_crls(&state),
        )
        .await;
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    match rendered {
        Ok(body) if openmetrics => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            body,
        )
            .into_response(),
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            crate::metrics::openmetrics_to_text(&body),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics: reading the ledger failed");
            let mut r = (StatusCode::SERVICE_UNAVAILABLE, "ledger unavailable\n").into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

/// The CRLs this replica keeps current: live issuers' complete CRLs and configured shards (a
/// former issuer's, or a shard someone asked for by URL, would otherwise look stale forever).
fn current_crls(state: &AppState) -> Vec<crl::CrlStatus> {
    let set = state.issuance.issuers().current();
    let now = time::OffsetDateTime::now_utc();
    let live: Vec<&str> = set.live(now).map(|m| m.ca.issuer_id()).collect();
    let shards = state.issuance.issuers().settings().crl_shards;
    state
        .crl
        .status()
        .into_iter()
        .filter(|c| live.contains(&c.issuer_id.as_str()))
        .filter(|c| {
            c.shard == "all"
                || c.shard
                    .parse::<u32>()
                    .is_ok_and(|k| shards > 1 && k < shards)
        })
        .collect()
}

/// Every root trusted now: the default issuer's, and during a rotation the next issuer's and
/// the former issuers' while their certificates are valid.
async fn trust_bundle(State(state): State<AppState>) -> Response {
    let roots = state
        .issuance
        .issuers()
        .current()
        .roots(time::OffsetDateTime::now_utc());
    pem_response(to_pem(&roots))
}

async fn chain(State(state): State<AppState>) -> Response {
    pem_response(to_pem(state.issuance.ca().chain()))
}

/// The roots as a SPIFFE bundle (SPIFFE Trust Domain and Bundle, §4): a JWK set whose keys carry
/// `use: x509-svid` and the root in `x5c`, for SPIRE federation and Istio's `spiffe_bundle_url`.
async fn spiffe_bundle(State(state): State<AppState>) -> Response {
    let set = state.issuance.issuers().current();
    let now = time::OffsetDateTime::now_utc();
    let body = crate::trust::spiffe_bundle(&set.roots(now), set.sequence());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

async fn crl_der(State(state): State<AppState>) -> Response {
    crl_response(&state, None, None, false).await
}

async fn crl_pem(State(state): State<AppState>) -> Response {
    crl_response(&state, None, None, true).await
}

/// `/crl/issuer/<id>` (DER) or `/crl/issuer/<id>.pem`: one issuer's complete CRL.
async fn issuer_crl(
    State(state): State<AppState>,
    axum::extract::Path(issuer): axum::extract::Path<String>,
) -> Response {
    let (id, pem) = match issuer.strip_suffix(".pem") {
        Some(id) => (id, true),
        None => (issuer.as_str(), false),
    };
    crl_response(&state, Some(id), None, pem).await
}

/// `/crl/issuer/<id>/<k>[.pem]`: one shard of one issuer's CRL.
async fn issuer_crl_shard(
    State(state): State<AppState>,
    axum::extract::Path((issuer, shard)): axum::extract::Path<(String, String)>,
) -> Response {
    let (number, pem) = match shard.strip_suffix(".pem") {
        Some(n) => (n, true),
        None => (shard.as_str(), false),
    };
    match number.parse::<u32>() {
        Ok(k) if k < crl::MAX_SHARDS => crl_response(&state, Some(&issuer), Some(k), pem).await,
        _ => (StatusCode::NOT_FOUND, "no such CRL shard\n").into_response(),
    }
}

/// `/crl/<k>` (DER) or `/crl/<k>.pem`: one shard of a sharded CRL.
async fn crl_shard(
    State(state): State<AppState>,
    axum::extract::Path(shard): axum::extract::Path<String>,
) -> Response {
    let (number, pem) = match shard.strip_suffix(".pem") {
        Some(n) => (n, true),
        None => (shard.as_str(), false),
    };
    match number.parse::<u32>() {
        Ok(k) if k < crl::MAX_SHARDS => crl_response(&state, None, Some(k), pem).await,
        _ => (StatusCode::NOT_FOUND, "no such CRL shard\n").into_response(),
    }
}

/// The CRL of `issuer` (an issuer id; None: the default issuer), complete or one shard.
async fn crl_response(
    state: &AppState,
    issuer: Option<&str>,
    shard: Option<u32>,
    pem: bool,
) -> Response {
    let set = state.issuance.issuers().current();
    let ca = match issuer {
        None => Arc::clone(set.default_ca()),
        Some(id) => match set.by_id(id) {
            Some(member) => Arc::clone(&member.ca),
            None => return (StatusCode::NOT_FOUND, "no such issuer\n").into_response(),
        },
    };
    match state.crl.der(&ca, &state.store, shard).await {
        Ok(der) if !pem => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pkix-crl"),
            )],
            der,
        )
            .into_response(),
        Ok(der) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            )],
            crate::issuer::hierarchy::pem_block("X509 CRL", &der),
        )
            .into_response(),
        Err(e) => crl_unavailable(e),
    }
}

fn crl_unavailable(e: crl::CrlError) -> Response {
    tracing::error!(error = %e, "building the CRL failed");
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        "CRL temporarily unavailable\n",
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}
