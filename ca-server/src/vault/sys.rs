//! `sys/…`: health and seal status (public, for probes and `vault status`), ACL policies, and
//! `sys/capabilities-self`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::routes::{Existence, Route, ops, public, token};
use super::values::{list_field, string_field};
use super::{Call, Operation, VaultError, VaultState, envelope, list_response, no_content};
use crate::auth::Authorized;

const POLICY: Option<Existence> = Some(Existence {
    kind: "policy",
    mount: Some(""),
});

/// The `sys` routes.
pub static ROUTES: &[Route] = &[
    public!("health", ops::READ, health),
    public!("seal-status", ops::READ, seal_status),
    token!("policy", ops::READ_LIST, list_policies),
    token!("policy/+", ops::CRUD, policy, POLICY),
    token!("policies/acl", ops::LIST, list_policies),
    token!("policies/acl/+", ops::CRUD, policy, POLICY),
    token!("capabilities-self", ops::WRITE, capabilities_self),
];

fn seal_status_body(state: &VaultState) -> Value {
    json!({
        "type": "shamir", "initialized": true, "sealed": false, "t": 1, "n": 1, "progress": 0,
        "nonce": "", "version": state.config.version, "build_date": "", "migration": false,
        "cluster_name": "ca-server", "cluster_id": state.issuance.ca().issuer_id(),
        "recovery_seal": false, "storage_type": "sql",
    })
}

async fn seal_status(state: &VaultState, _: &Call) -> Result<Response, VaultError> {
    Ok(axum::Json(seal_status_body(state)).into_response())
}

/// `sys/health`: 200 unless the caller's `activecode` asks otherwise (200–599; no informational
/// code, which would desynchronise an HTTP/1.1 connection); HEAD, 204 and 304 have no body.
async fn health(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    let code = match call.query.get("activecode").and_then(Value::as_str) {
        None => StatusCode::OK,
        Some(c) => c
            .parse::<u16>()
            .ok()
            .filter(|c| (200..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| VaultError::bad_request("activecode must be a status code 200-599"))?,
    };
    if call.head || code == StatusCode::NO_CONTENT || code == StatusCode::NOT_MODIFIED {
        return Ok(code.into_response());
    }
    let body = json!({
        "initialized": true, "sealed": false, "standby": false, "performance_standby": false,
        "replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
        "server_time_utc": time::OffsetDateTime::now_utc().unix_timestamp(),
        "version": state.config.version, "cluster_name": "ca-server",
        "cluster_id": state.issuance.ca().issuer_id(),
    });
    Ok((code, axum::Json(body)).into_response())
}

async fn list_policies(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let names = state.auth.policy_names().await?;
    if call.op == Operation::Read {
        // `GET sys/policy` (the old API) answers `policies` as well as `keys`.
        return Ok(envelope(
            Some(json!({ "keys": names, "policies": names })),
            vec![],
            None,
        ));
    }
    list_response(names)
}

async fn policy(state: &VaultState, call: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let name = call.param(0).to_ascii_lowercase();
    match call.op {
        Operation::Write => {
            // `policy` in the current API, `rules` in the old one.
            let text = match string_field(&call.data, "policy") {
                t if t.is_empty() => string_field(&call.data, "rules"),
                t => t,
            };
            state.auth.put_policy(&name, &text).await?;
            no_content()
        }
        Operation::Read => {
            if name == "root" {
                return Ok(envelope(
                    Some(json!({"name": "root", "rules": "", "policy": ""})),
                    vec![],
                    None,
                ));
            }
            let text = state
                .auth
                .policy_text(&name)
                .await?
                .ok_or_else(VaultError::not_found)?;
            Ok(envelope(
                Some(json!({"name": name, "rules": text, "policy": text})),
                vec![],
                None,
            ))
        }
        Operation::Delete => {
            state.auth.delete_policy(&name).await?;
            no_content()
        }
        Operation::List => Err(VaultError::unsupported()),
    }
}

/// `sys/capabilities-self`: the caller's capabilities on each of `paths` (or `path`).
async fn capabilities_self(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    let mut paths = list_field(&call.data, "paths");
    paths.extend(list_field(&call.data, "path"));
    if paths.is_empty() {
        return Err(VaultError::bad_request("paths must be given"));
    }
    let acl = state.auth.acl(who.caller()).await?;
    let mut data = serde_json::Map::new();
    let mut all = Vec::new();
    for path in paths {
        let normal = super::request::normalize_path(&path)?;
        let caps = acl.capabilities(&normal);
        all.extend(caps.iter().map(|c| (*c).to_owned()));
        data.insert(path, json!(caps));
    }
    all.sort();
    all.dedup();
    data.insert("capabilities".into(), json!(all));
    Ok(envelope(Some(Value::Object(data)), vec![], None))
}
