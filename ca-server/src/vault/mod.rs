//! The Vault-compatible HTTP surface (`/v1/…`): enough of Vault's PKI secrets engine and auth
//! methods that cert-manager's `vault` issuer, hvac and the vault CLI work by changing only the
//! server address.
//!
//! Vault conventions handled here, once: bodies are JSON whatever the Content-Type (cert-manager
//! sends none) or form-encoded; GET/DELETE query parameters are data; PUT = POST; LIST is the
//! `LIST` verb or `GET ?list=true`, 404 when empty; the token comes in `X-Vault-Token` or
//! `Authorization: Bearer`; responses use Vault's envelope and errors are `{"errors":[…]}`.
//! Policy decisions live in [`auth`] (who may call what) and [`pki`] (role rules); signing goes
//! through [`crate::issuer::Issuance`].

pub mod auth;
pub mod cache;
pub mod pki;
pub mod token_review;
pub mod values;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

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
    pub(crate) store: Arc<dyn ca_store::Store>,
    pub(crate) issuance: Issuance,
    pub(crate) crl: crate::http::crl::CrlCache,
    pub(crate) cache: Arc<cache::Cache>,
}

impl VaultState {
    /// A policy or PKI role body, from the cache when fresh (see [`cache`]).
    pub(crate) async fn cached_object(
        &self,
        kind: &'static str,
        mount: &str,
        name: &str,
    ) -> Result<Option<String>, ca_store::Error> {
        if let Some(body) = self.cache.object(kind, mount, name) {
            return Ok(Some(body));
        }
        let body = self.store.object(kind, mount, name).await?;
        if let Some(body) = &body {
            self.cache.put_object(kind, mount, name, body);
        }
        Ok(body)
    }

    /// Builds the Vault API over the shared store, issuance and CRL cache.
    pub fn new(
        config: VaultConfig,
        store: Arc<dyn ca_store::Store>,
        issuance: Issuance,
        crl: crate::http::crl::CrlCache,
    ) -> Self {
        Self {
            config: Arc::new(config),
            store,
            issuance,
            crl,
            cache: Arc::default(),
        }
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
                "no handler for route \"{path}\". route entry not found."
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
            Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                errors: vec!["storage is temporarily unavailable".into()],
            }
        } else {
            Self::internal("database error", e)
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

/// The operation a request performs, in Vault's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// GET.
    Read,
    /// POST or PUT.
    Write,
    /// LIST or GET ?list=true.
    List,
    /// DELETE.
    Delete,
    /// HEAD (sys/health).
    Head,
}

/// A parsed Vault request.
pub struct VaultRequest {
    /// Path after `/v1/`, without a trailing slash.
    pub path: String,
    /// Operation.
    pub op: Operation,
    /// Body fields, or query parameters for reads.
    pub data: Map<String, Value>,
    /// Headers (token, namespace).
    pub headers: HeaderMap,
    /// Query string pairs.
    pub query: Map<String, Value>,
    /// Connection facts.
    pub conn: Option<crate::http::listener::ConnectionInfo>,
}

impl VaultRequest {
    /// The client token from `X-Vault-Token` or `Authorization: Bearer`.
    pub fn token(&self) -> Option<&str> {
        self.headers
            .get("x-vault-token")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                self.headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

fn parse_form(body: &str) -> Map<String, Value> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode_pct(k, true), Value::String(decode_pct(v, true))))
        .collect()
}

/// Percent-decoding; `+` means a space only in form data, not in paths.
fn decode_pct(s: &str, plus_is_space: bool) -> String {
    let bytes = if plus_is_space {
        s.replace('+', " ")
    } else {
        s.to_owned()
    }
    .into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn parse(request: Request) -> Result<VaultRequest, VaultError> {
    let (parts, body) = request.into_parts();
    let query: Map<String, Value> = parts.uri.query().map(parse_form).unwrap_or_default();
    let list_param = query
        .get("list")
        .and_then(Value::as_str)
        .is_some_and(|v| v == "true");
    let op = match parts.method.as_str() {
        "GET" if list_param => Operation::List,
        "GET" => Operation::Read,
        "HEAD" => Operation::Head,
        "POST" | "PUT" | "PATCH" => Operation::Write,
        "DELETE" => Operation::Delete,
        "LIST" => Operation::List,
        _ => return Err(VaultError::unsupported()),
    };
    let body: Bytes = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .map_err(|_| VaultError::bad_request("request body too large"))?;
    let text = String::from_utf8_lossy(&body);
    let trimmed = text.trim();
    let mut data = if trimmed.is_empty() {
        Map::new()
    } else if trimmed.starts_with('{') {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(m)) => m,
            _ => return Err(VaultError::bad_request("failed to parse JSON input")),
        }
    } else {
        parse_form(trimmed)
    };
    if matches!(op, Operation::Read | Operation::Delete | Operation::List) {
        for (k, v) in &query {
            data.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let path = decode_pct(parts.uri.path(), false)
        .trim_start_matches("/v1/")
        .trim_end_matches('/')
        .to_owned();
    Ok(VaultRequest {
        path,
        op,
        data,
        headers: parts.headers,
        query,
        conn: parts
            .extensions
            .get::<crate::http::listener::ConnectionInfo>()
            .cloned(),
    })
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

async fn dispatch(State(state): State<VaultState>, request: Request) -> Response {
    let result = async {
        let req = parse(request).await?;
        route(&state, req).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn route(state: &VaultState, req: VaultRequest) -> Result<Response, VaultError> {
    let path = req.path.clone();
    match path.as_str() {
        "sys/health" => return health(state, &req),
        "sys/seal-status" => {
            return Ok(axum::Json(seal_status(state)).into_response());
        }
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("auth/") {
        return auth::route(state, &req, rest).await;
    }
    if path.starts_with("sys/policy/")
        || path.starts_with("sys/policies/acl")
        || path == "sys/policy"
    {
        return auth::policies(state, &req).await;
    }
    // PKI mounts: the longest configured mount that prefixes the path.
    let mount = state
        .config
        .pki_mounts
        .iter()
        .filter(|m| path == **m || path.starts_with(&format!("{m}/")))
        .max_by_key(|m| m.len())
        .cloned();
    if let Some(mount) = mount {
        let rest = path[mount.len()..].trim_start_matches('/').to_owned();
        return pki::route(state, &req, &mount, &rest).await;
    }
    if path.starts_with("ledger/") {
        return crate::report::http::route(state, &req).await;
    }
    Err(VaultError::no_route(&path))
}

fn seal_status(state: &VaultState) -> Value {
    json!({
        "type": "shamir", "initialized": true, "sealed": false, "t": 1, "n": 1, "progress": 0,
        "nonce": "", "version": state.config.version, "build_date": "", "migration": false,
        "cluster_name": "ca-server", "cluster_id": state.issuance.ca().issuer_id(),
        "recovery_seal": false, "storage_type": "sql",
    })
}

/// `sys/health`: 200 unless the caller's `*code` parameters ask otherwise; HEAD has no body.
fn health(state: &VaultState, req: &VaultRequest) -> Result<Response, VaultError> {
    let code = req
        .query
        .get("activecode")
        .and_then(Value::as_str)
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let body = json!({
        "initialized": true, "sealed": false, "standby": false, "performance_standby": false,
        "replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
        "server_time_utc": time::OffsetDateTime::now_utc().unix_timestamp(),
        "version": state.config.version, "cluster_name": "ca-server",
        "cluster_id": state.issuance.ca().issuer_id(),
    });
    if req.op == Operation::Head {
        return Ok(code.into_response());
    }
    Ok((code, axum::Json(body)).into_response())
}

/// The `/v1/…` routes.
pub fn router(state: VaultState) -> Router {
    Router::new()
        .route("/v1/{*path}", axum::routing::any(dispatch))
        .with_state(state)
}

/// Method helper for handlers that accept only some operations.
pub fn require(op: Operation, allowed: &[Operation]) -> Result<(), VaultError> {
    if allowed.contains(&op) {
        Ok(())
    } else {
        Err(VaultError::unsupported())
    }
}
