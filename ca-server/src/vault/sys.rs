//! `sys/…`: health, seal status and leader (public, for probes and `vault status`), the mount
//! tables (`secrets list`, `auth list`, tune, the CLI's `internal/ui/mounts` preflight), ACL
//! policies, and `sys/capabilities-self`.
//!
//! Mounts are fixed by the server's configuration (`[vault] pki_mounts`, `auth_mounts`): they are
//! listed and tuned here, never enabled or disabled through the API.

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
    public!("leader", ops::READ, leader),
    token!("mounts", ops::READ, list_mounts),
    token!("mounts/*", ops::CRUD, mount),
    token!("auth", ops::READ, list_auth),
    token!("auth/*", ops::CRUD, auth_mount),
    public!("internal/ui/mounts/*", ops::READ, ui_mount),
];

const TUNE_KIND: &str = "mount_tune";
/// Vault's system default and maximum lease TTL (768h), reported for untuned mounts.
const SYSTEM_TTL: u64 = 768 * 3600;

/// A stable cluster id: the first issuer's (rotation does not change it).
fn cluster_id(state: &VaultState) -> String {
    let set = state.issuance.issuers().current();
    set.members()
        .iter()
        .min_by_key(|m| m.registered_at)
        .map_or_else(
            || set.default_ca().issuer_id().to_owned(),
            |m| m.ca.issuer_id().to_owned(),
        )
}

fn seal_status_body(state: &VaultState) -> Value {
    json!({
        "type": "shamir", "initialized": true, "sealed": false, "t": 1, "n": 1, "progress": 0,
        "nonce": "", "version": state.config.version, "build_date": "", "migration": false,
        "cluster_name": "ca-server", "cluster_id": cluster_id(state),
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
        "cluster_id": cluster_id(state),
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

/// `sys/leader`: `vault status` reads it after `seal-status` and exits 1 without it. Replicas on
/// one database are all active (no standby), so HA is reported off.
async fn leader(_: &VaultState, _: &Call) -> Result<Response, VaultError> {
    Ok(axum::Json(json!({ "ha_enabled": false })).into_response())
}

/// A mount of the server's configuration.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Path without the trailing `/` (`pki_int`, `kubernetes`).
    pub path: String,
    /// Engine or method type (`pki`, `system`, `kubernetes`, `token`…).
    pub kind: &'static str,
    /// Shown by `secrets list`.
    pub description: &'static str,
}

fn secret_mounts(state: &VaultState) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = state
        .config
        .pki_mounts
        .iter()
        .map(|m| Mount {
            path: m.clone(),
            kind: "pki",
            description: "ca-server PKI",
        })
        .collect();
    mounts.push(Mount {
        path: "ledger".into(),
        kind: "ledger",
        description: "ca-server certificate ledger reports",
    });
    mounts.push(Mount {
        path: "sys".into(),
        kind: "system",
        description: "system endpoints used for control, policy and debugging",
    });
    mounts
}

fn auth_mounts(state: &VaultState) -> Vec<Mount> {
    let mut mounts = vec![Mount {
        path: "token".into(),
        kind: "token",
        description: "token based credentials",
    }];
    for (path, method) in &state.config.auth_mounts {
        mounts.push(Mount {
            path: path.clone(),
            kind: match method.as_str() {
                "kubernetes" => "kubernetes",
                "approle" => "approle",
                _ => "cert",
            },
            description: "",
        });
    }
    mounts
}

/// The mount serving `path` (longest prefix), and the rest of the path.
fn find_mount<'a>(mounts: &'a [Mount], path: &'a str) -> Option<(&'a Mount, &'a str)> {
    mounts
        .iter()
        .filter(|m| {
            path == m.path
                || path
                    .strip_prefix(m.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|m| m.path.len())
        .map(|m| (m, path[m.path.len()..].trim_start_matches('/')))
}

/// Stored tuning: (default_lease_ttl, max_lease_ttl, description), seconds; 0 = system default.
/// Read on every signing, so cached like roles (an empty body: nothing tuned).
async fn tuning(state: &VaultState, key: &str) -> Result<(u64, u64, Option<String>), VaultError> {
    let body = match state.auth.cache.object(TUNE_KIND, "", key) {
        Some(body) => Some(body).filter(|b| !b.is_empty()),
        None => {
            let stored = state.store.object(TUNE_KIND, "", key).await?;
            state
                .auth
                .cache
                .put_object(TUNE_KIND, "", key, stored.as_deref().unwrap_or_default());
            stored
        }
    };
    Ok(match body {
        Some(body) => {
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            (
                v["default_lease_ttl"].as_u64().unwrap_or(0),
                v["max_lease_ttl"].as_u64().unwrap_or(0),
                v["description"].as_str().map(str::to_owned),
            )
        }
        None => (0, 0, None),
    })
}

/// The PKI mount's tuned maximum lease TTL, if an operator set one (`secrets tune`).
pub async fn max_lease_ttl(state: &VaultState, mount: &str) -> Result<Option<u64>, VaultError> {
    let (_, max, _) = tuning(state, &format!("mounts/{mount}")).await?;
    Ok((max > 0).then_some(max))
}

/// Vault's `mountInfo`: stable accessor and UUID derived from the path.
async fn mount_info(state: &VaultState, m: &Mount, tune_key: &str) -> Result<Value, VaultError> {
    let (default_ttl, max_ttl, description) = tuning(state, tune_key).await?;
    let digest = crate::issuer::hierarchy::hex(
        ring::digest::digest(&ring::digest::SHA256, tune_key.as_bytes()).as_ref(),
    );
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &digest[0..8],
        &digest[8..12],
        &digest[12..16],
        &digest[16..20],
        &digest[20..32]
    );
    let mut config = json!({
        "default_lease_ttl": default_ttl, "force_no_cache": false, "max_lease_ttl": max_ttl,
    });
    if tune_key.starts_with("auth/") {
        config["token_type"] = json!("default-service");
    }
    Ok(json!({
        "accessor": format!("{}_{}", m.kind, &digest[..8]),
        "config": config,
        "description": description.as_deref().unwrap_or(m.description),
        "external_entropy_access": false, "local": false, "options": null,
        "plugin_version": "",
        "running_plugin_version": format!("v{}+builtin", state.config.version),
        "running_sha256": "", "seal_wrap": false, "type": m.kind, "uuid": uuid,
    }))
}

/// A mount table answer: the envelope, with each mount also at the top level as Vault sends.
fn table(entries: serde_json::Map<String, Value>) -> Response {
    let mut body = json!({
        "request_id": uuid::Uuid::new_v4().to_string(), "lease_id": "", "renewable": false,
        "lease_duration": 0, "wrap_info": null, "warnings": null, "auth": null,
        "data": Value::Object(entries.clone()),
    });
    if let Some(top) = body.as_object_mut() {
        for (k, v) in entries {
            top.entry(k).or_insert(v);
        }
    }
    axum::Json(body).into_response()
}

async fn list_mounts(state: &VaultState, _: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let mut entries = serde_json::Map::new();
    for m in secret_mounts(state) {
        let info = mount_info(state, &m, &format!("mounts/{}", m.path)).await?;
        entries.insert(format!("{}/", m.path), info);
    }
    Ok(table(entries))
}

async fn list_auth(state: &VaultState, _: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let mut entries = serde_json::Map::new();
    for m in auth_mounts(state) {
        let info = mount_info(state, &m, &format!("auth/{}", m.path)).await?;
        entries.insert(format!("{}/", m.path), info);
    }
    Ok(table(entries))
}

/// `sys/mounts/<path>` and `sys/mounts/<path>/tune`.
async fn mount(state: &VaultState, call: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let mounts = secret_mounts(state);
    one_mount(state, call, &mounts, "mounts", "secret engine").await
}

/// `sys/auth/<path>` and `sys/auth/<path>/tune`.
async fn auth_mount(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let mounts = auth_mounts(state);
    one_mount(state, call, &mounts, "auth", "auth engine").await
}

async fn one_mount(
    state: &VaultState,
    call: &Call,
    mounts: &[Mount],
    table: &str,
    what: &str,
) -> Result<Response, VaultError> {
    let path = call.param(0);
    let (target, tune) = match path.strip_suffix("/tune") {
        Some(p) => (p, true),
        None => (path, false),
    };
    let Some((m, rest)) = find_mount(mounts, target) else {
        return Err(match call.op {
            Operation::Write => VaultError::bad_request(format!(
                "mounts are fixed by the server's configuration ([vault] pki_mounts and \
                 auth_mounts); {} cannot be enabled here",
                crate::policy::shorten(target)
            )),
            _ => {
                VaultError::bad_request(format!("No {what} at {}/", crate::policy::shorten(target)))
            }
        });
    };
    let key = format!("{table}/{}", m.path);
    match (call.op, tune) {
        (Operation::Read, false) => Ok(envelope(
            Some(mount_info(state, m, &key).await?),
            vec![],
            None,
        )),
        (Operation::Read, true) => {
            let (default_ttl, max_ttl, description) = tuning(state, &key).await?;
            let or_system = |t: u64| if t == 0 { SYSTEM_TTL } else { t };
            Ok(envelope(
                Some(json!({
                    "description": description.as_deref().unwrap_or(m.description),
                    "default_lease_ttl": or_system(default_ttl), "max_lease_ttl": or_system(max_ttl),
                    "force_no_cache": false,
                })),
                vec![],
                None,
            ))
        }
        (Operation::Write, true) if rest.is_empty() => {
            let (mut default_ttl, mut max_ttl, mut description) = tuning(state, &key).await?;
            let ttl = |k: &str| -> Result<Option<u64>, VaultError> {
                Ok(super::values::duration_field(&call.data, k)?.map(|d| d.as_secs()))
            };
            if let Some(t) = ttl("default_lease_ttl")? {
                default_ttl = t;
            }
            if let Some(t) = ttl("max_lease_ttl")? {
                max_ttl = t;
            }
            if call.data.contains_key("description") {
                description = Some(string_field(&call.data, "description"));
            }
            if max_ttl > 0 && default_ttl > max_ttl {
                return Err(VaultError::bad_request(
                    "default_lease_ttl cannot be greater than max_lease_ttl",
                ));
            }
            let body = json!({"default_lease_ttl": default_ttl, "max_lease_ttl": max_ttl, "description": description});
            state
                .store
                .put_object(
                    TUNE_KIND,
                    "",
                    &key,
                    &body.to_string(),
                    time::OffsetDateTime::now_utc().unix_timestamp(),
                )
                .await?;
            state
                .auth
                .cache
                .put_object(TUNE_KIND, "", &key, &body.to_string());
            no_content()
        }
        (Operation::Write, false) if rest.is_empty() => Err(VaultError::bad_request(format!(
            "path is already in use at {}/",
            m.path
        ))),
        (Operation::Delete, false) if rest.is_empty() => Err(VaultError::bad_request(format!(
            "mounts are fixed by the server's configuration; {}/ cannot be disabled here",
            m.path
        ))),
        _ => Err(VaultError::unsupported()),
    }
}

/// `sys/internal/ui/mounts/<path>`: the mount serving a path, which the CLI asks before `kv`
/// commands. A caller with no capability under the mount, or no token, gets 403 (so the answer
/// enumerates nothing).
async fn ui_mount(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    let path = call.param(0);
    let denied = || VaultError {
        status: StatusCode::FORBIDDEN,
        errors: vec![
            format!(
                "preflight capability check returned 403, please ensure client's policies grant access to path \"{}/\"",
                crate::policy::shorten(path)
            ),
            "permission denied".into(),
        ],
    };
    let caller = match state.auth.authenticate(call.token()).await {
        Ok(caller) => caller,
        Err(crate::auth::Error::Denied) => return Err(denied()),
        Err(e) => return Err(e.into()),
    };
    let acl = state.auth.acl(&caller).await?;
    let (m, key, shown) = if let Some(auth_path) = path.strip_prefix("auth/") {
        let mounts = auth_mounts(state);
        let (m, _) = find_mount(&mounts, auth_path).ok_or_else(denied)?;
        (
            m.clone(),
            format!("auth/{}", m.path),
            format!("auth/{}/", m.path),
        )
    } else {
        let mounts = secret_mounts(state);
        let (m, _) = find_mount(&mounts, path).ok_or_else(denied)?;
        (
            m.clone(),
            format!("mounts/{}", m.path),
            format!("{}/", m.path),
        )
    };
    let caps = acl.capabilities(path);
    if caps.is_empty() || caps == ["deny"] {
        return Err(denied());
    }
    let mut info = mount_info(state, &m, &key).await?;
    info["path"] = json!(shown);
    Ok(envelope(Some(info), vec![], None))
}
