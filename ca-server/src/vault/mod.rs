//! The Vault-compatible HTTP surface (`/v1/…`): enough of Vault's PKI secrets engine and auth
//! methods that cert-manager's `vault` issuer, hvac and the vault CLI work by changing only the
//! server address.
//!
//! This module only translates. A request is read once ([`request`]: one normalised path), looked
//! up in the route table ([`routes`]: public or token), authorized by [`crate::auth`] before any
//! token route's handler runs, and decided by [`crate::policy`] (PKI roles) before the issuer
//! signs. Errors from every layer become Vault's `{"errors":[…]}` here, in one place
//! ([`VaultError`]'s `From` impls).

pub mod ledger;
pub mod logins;
pub mod pki;
pub mod pki_issuers;
pub mod request;
pub mod routes;
pub mod sys;
pub mod tokens;
pub mod values;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

pub use request::{Call, Operation};

use crate::auth::{AclOperation, Auth};
use crate::issuer::Issuance;

/// `[vault]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    /// Serve the Vault API.
    pub enabled: bool,
    /// PKI mount paths (may contain `/`), all served by the issuing CA.
    pub pki_mounts: Vec<String>,
    /// Auth mounts: path → method (`kubernetes`, `approle`, `cert`).
    pub auth_mounts: std::collections::BTreeMap<String, String>,
    /// SPIFFE trust domain for roles with `spiffe_from_identity`.
    pub trust_domain: String,
    /// Version reported by `sys/health` and `sys/seal-status`.
    pub version: String,
}

impl Default for VaultConfig {
    fn default() -> Self {
        let auth_mounts = [
            ("kubernetes", "kubernetes"),
            ("approle", "approle"),
            ("cert", "cert"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        Self {
            enabled: true,
            pki_mounts: vec!["pki".into(), "pki_int".into()],
            auth_mounts,
            trust_domain: "cluster.local".into(),
            version: "1.15.0+ca-server".into(),
        }
    }
}

/// Shared state of the Vault handlers.
#[derive(Clone)]
pub struct VaultState {
    pub(crate) config: Arc<VaultConfig>,
    pub(crate) auth: Auth,
    pub(crate) store: Arc<dyn ca_store::Store>,
    pub(crate) issuance: Issuance,
    pub(crate) crl: crate::http::crl::CrlCache,
    pub(crate) routes: Arc<routes::Table>,
}

impl VaultState {
    /// Builds the Vault API over the shared store, issuance, CRL cache and auth layer.
    pub fn new(
        config: VaultConfig,
        auth: Auth,
        issuance: Issuance,
        crl: crate::http::crl::CrlCache,
    ) -> anyhow::Result<Self> {
        routes::check_mounts(&config)?;
        let routes = Arc::new(routes::Table::new(&config));
        Ok(Self {
            config: Arc::new(config),
            store: Arc::clone(&auth.store),
            auth,
            issuance,
            crl,
            routes,
        })
    }

    /// The route table (for tests that walk every route).
    pub fn routes(&self) -> &routes::Table {
        &self.routes
    }

    /// The auth layer.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }
}

/// A Vault error: status plus messages, rendered as `{"errors":[…]}`.
#[derive(Debug, Clone)]
pub struct VaultError {
    /// HTTP status.
    pub status: StatusCode,
    /// Messages.
    pub errors: Vec<String>,
}

impl VaultError {
    /// 400 with one message.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            errors: vec![msg.into()],
        }
    }

    /// 403 `permission denied` (Vault says nothing more for any auth failure).
    pub fn permission_denied() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            errors: vec!["permission denied".into()],
        }
    }

    /// 404 for an unknown route.
    pub fn no_route(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            errors: vec![format!(
                "no handler for route \"{}\". route entry not found.",
                crate::policy::shorten(path)
            )],
        }
    }

    /// 404 with no message (empty LIST, missing object).
    pub fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            errors: vec![],
        }
    }

    /// 405.
    pub fn unsupported() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            errors: vec!["unsupported operation".into()],
        }
    }

    /// 503 + Retry-After: try again.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            errors: vec![msg.into()],
        }
    }

    /// 500, details logged only.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            errors: vec!["internal error".into()],
        }
    }
}

impl From<ca_store::Error> for VaultError {
    fn from(e: ca_store::Error) -> Self {
        if e.is_transient() {
            tracing::warn!(error = %e, "database unavailable");
            Self::unavailable("storage is temporarily unavailable")
        } else {
            Self::internal("database error", e)
        }
    }
}

impl From<crate::auth::Error> for VaultError {
    fn from(e: crate::auth::Error) -> Self {
        use crate::auth::Error;
        match e {
            Error::Denied => Self::permission_denied(),
            Error::Invalid(m) => Self::bad_request(m),
            Error::Unavailable(m) => Self::unavailable(m),
            Error::Store(e) => e.into(),
            e => Self::internal("auth", e),
        }
    }
}

impl From<crate::policy::Rejection> for VaultError {
    fn from(r: crate::policy::Rejection) -> Self {
        if r.is_identity() {
            tracing::info!(reason = %r, "refused a request for an identity that is not the caller's");
            Self::permission_denied()
        } else {
            Self::bad_request(r.to_string())
        }
    }
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(json!({ "errors": self.errors }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("2"),
            );
        }
        r
    }
}

/// Vault's response envelope around `data`.
pub fn envelope(data: Option<Value>, warnings: Vec<String>, auth: Option<Value>) -> Response {
    let body = json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
        "auth": auth,
    });
    axum::Json(body).into_response()
}

/// A LIST answer: `keys`, or 404 when empty.
pub fn list_response(keys: Vec<String>) -> Result<Response, VaultError> {
    if keys.is_empty() {
        return Err(VaultError::not_found());
    }
    Ok(envelope(Some(json!({ "keys": keys })), vec![], None))
}

/// 204.
pub fn no_content() -> Result<Response, VaultError> {
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn dispatch(State(state): State<VaultState>, request: Request) -> Response {
    match serve(&state, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// Read, route, authorize, handle.
async fn serve(state: &VaultState, request: Request) -> Result<Response, VaultError> {
    let mut call = request::parse(request).await?;
    let Some((route, mount, params)) = state.routes.resolve(&call.path) else {
        // Unknown paths: 403 to callers without a valid token (no path enumeration), 404 to
        // the others.
        state.auth.authenticate(call.token()).await?;
        return Err(VaultError::no_route(&call.path));
    };
    let route = *route;
    call.mount = mount.to_owned();
    call.params = params;
    match route.handler {
        routes::Handler::Public(handler) => {
            if !route.ops.contains(&call.op) {
                return Err(VaultError::unsupported());
            }
            handler(state.clone(), call).await
        }
        routes::Handler::Token(handler) => {
            let caller = state.auth.authenticate(call.token()).await?;
            let op = acl_operation(state, &route, &call).await?;
            let authorized = state
                .auth
                .authorize_caller(caller, &call.path, op, &call.data)
                .await?;
            if !route.ops.contains(&call.op) {
                return Err(VaultError::unsupported());
            }
            handler(state.clone(), call, authorized).await
        }
    }
}

/// Vault's create/update distinction: a write to a route with an existence check is a create
/// when its object does not exist yet.
async fn acl_operation(
    state: &VaultState,
    route: &routes::Route,
    call: &Call,
) -> Result<AclOperation, VaultError> {
    Ok(match call.op {
        Operation::Read => AclOperation::Read,
        Operation::List => AclOperation::List,
        Operation::Delete => AclOperation::Delete,
        Operation::Write => match route.existence {
            Some(e) => {
                let mount = e.mount.unwrap_or(call.mount.as_str());
                if state
                    .store
                    .object(e.kind, mount, call.param(0))
                    .await?
                    .is_some()
                {
                    AclOperation::Update
                } else {
                    AclOperation::Create
                }
            }
            None => AclOperation::Update,
        },
    })
}

/// The server is full: 503 + Retry-After.
fn busy() -> Response {
    VaultError::unavailable("the server is busy; retry shortly").into_response()
}

/// The `/v1/…` routes.
pub fn router(state: VaultState, in_flight: crate::http::limit::InFlight) -> Router {
    Router::new()
        .route("/v1", axum::routing::any(dispatch))
        .route("/v1/", axum::routing::any(dispatch))
        .route("/v1/{*path}", axum::routing::any(dispatch))
        .layer(axum::middleware::from_fn_with_state(
            (in_flight, busy as crate::http::limit::Busy),
            crate::http::limit::shed,
        ))
        .with_state(state)
}
