//! Who is calling the Vault API, and may they: tokens (opaque, stored as SHA-256 hashes, with a
//! TTL and policies), ACL policies (capabilities on path globs), and the login methods that mint
//! tokens — kubernetes (service-account JWTs verified locally against the cluster's signing keys),
//! AppRole (role_id + secret_id with TTL and use limits) and cert (a client certificate presented
//! in the TLS handshake, verified against the role's trusted CA).

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ca_store::vault::TokenRow;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::values::{bool_field, duration_field, int_field, list_field, string_field};
use super::{Operation, VaultError, VaultRequest, VaultState, envelope, list_response, require};
use crate::acme::jws::{Jwk, b64url, b64url_decode};
use crate::policy::glob_matches;

/// Default token lifetime of logins (Vault's 768h).
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(768 * 3600);

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .unwrap_or_else(|_| panic!("the operating system's random number generator failed"));
    b64url(&bytes)
}

fn sha256_hex(s: &str) -> String {
    crate::issuer::hierarchy::hex(
        ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref(),
    )
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Token accessor.
    pub accessor: String,
    /// Policies.
    pub policies: Vec<String>,
    /// Display name.
    pub display_name: String,
    /// Metadata: `auth_method`, `role`, `service_account_namespace`, `service_account_name`…
    pub meta: Map<String, Value>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

impl Identity {
    /// A metadata string.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta.get(key).and_then(Value::as_str)
    }
}

/// Mints a token; returns the secret once (only its hash is stored).
pub async fn mint(
    state: &VaultState,
    policies: Vec<String>,
    display_name: &str,
    meta: Map<String, Value>,
    ttl: Option<Duration>,
) -> Result<(String, Identity), VaultError> {
    let token = format!("hvs.{}", random_b64(24));
    let created_at = now();
    let expires_at = ttl.map(|t| created_at + i64::try_from(t.as_secs()).unwrap_or(i64::MAX / 2));
    let row = TokenRow {
        accessor: random_b64(18),
        token_hash: sha256_hex(&token),
        policies: serde_json::to_string(&policies).unwrap_or_else(|_| "[]".into()),
        display_name: display_name.to_owned(),
        meta: Value::Object(meta.clone()).to_string(),
        created_at,
        expires_at,
    };
    state.store.insert_token(&row).await?;
    Ok((
        token,
        Identity {
            accessor: row.accessor,
            policies,
            display_name: display_name.to_owned(),
            meta,
            created_at,
            expires_at,
        },
    ))
}

/// A successful login: a token with `policies` and a TTL of `ttl_secs` (0: the default), in
/// Vault's `auth` envelope.
async fn login_response(
    state: &VaultState,
    policies: Vec<String>,
    display_name: &str,
    meta: Map<String, Value>,
    ttl_secs: u64,
) -> Result<Response, VaultError> {
    let ttl = if ttl_secs > 0 {
        Duration::from_secs(ttl_secs)
    } else {
        DEFAULT_TOKEN_TTL
    };
    let (token, id) = mint(state, policies, display_name, meta, Some(ttl)).await?;
    Ok(envelope(None, vec![], Some(auth_object(&token, &id))))
}

/// The `auth` object of a login response.
pub fn auth_object(token: &str, id: &Identity) -> Value {
    let lease = id.expires_at.map(|e| (e - now()).max(0)).unwrap_or(0);
    json!({
        "client_token": token, "accessor": id.accessor, "policies": id.policies,
        "token_policies": id.policies, "identity_policies": [], "metadata": id.meta,
        "lease_duration": lease, "renewable": false, "entity_id": "", "token_type": "service",
        "orphan": true, "mfa_requirement": null, "num_uses": 0,
    })
}

/// The caller's identity from its token; 403 when missing, unknown or expired.
pub async fn authenticate(state: &VaultState, req: &VaultRequest) -> Result<Identity, VaultError> {
    let token = req.token().ok_or_else(VaultError::permission_denied)?;
    let hash = sha256_hex(token);
    let row = match state.cache.token(&hash) {
        Some(row) => row,
        None => {
            let row = state
                .store
                .token_by_hash(&hash)
                .await?
                .ok_or_else(VaultError::permission_denied)?;
            state.cache.put_token(&hash, &row);
            row
        }
    };
    if row.expires_at.is_some_and(|e| e <= now()) {
        return Err(VaultError::permission_denied());
    }
    Ok(Identity {
        accessor: row.accessor,
        policies: serde_json::from_str(&row.policies).unwrap_or_default(),
        display_name: row.display_name,
        meta: serde_json::from_str(&row.meta).unwrap_or_default(),
        created_at: row.created_at,
        expires_at: row.expires_at,
    })
}

/// One ACL rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Path glob: trailing `*` matches any suffix, `+` one segment.
    pub path: String,
    /// `create`, `read`, `update`, `delete`, `list`, `sudo`, `deny`.
    pub capabilities: Vec<String>,
}

/// Parses a policy in Vault's HCL form (`path "…" { capabilities = [ … ] }`) or JSON form.
pub fn parse_policy(text: &str) -> Result<Vec<Rule>, String> {
    if let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(text) {
        let paths = doc
            .get("path")
            .and_then(Value::as_object)
            .ok_or("JSON policy lacks \"path\"")?;
        return Ok(paths
            .iter()
            .map(|(p, v)| Rule {
                path: p.clone(),
                capabilities: v["capabilities"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect());
    }
    let mut rules = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("path") {
        rest = &rest[i + 4..];
        let q1 = rest.find('"').ok_or("expected a quoted path")?;
        let after = &rest[q1 + 1..];
        let q2 = after.find('"').ok_or("unterminated path")?;
        let path = after[..q2].to_owned();
        let block_start = after.find('{').ok_or("expected {")?;
        let block_end = after.find('}').ok_or("expected }")?;
        let block = &after[block_start + 1..block_end];
        let caps = block
            .find('[')
            .and_then(|s| block[s..].find(']').map(|e| &block[s + 1..s + e]))
            .ok_or("expected capabilities = [ … ]")?;
        let capabilities = caps
            .split(',')
            .map(|c| c.trim().trim_matches('"').to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        rules.push(Rule { path, capabilities });
        rest = &after[block_end + 1..];
    }
    if rules.is_empty() && !text.trim().is_empty() {
        return Err("no path blocks found".into());
    }
    Ok(rules)
}

fn path_matches(pattern: &str, path: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*')
        && !prefix.contains('+')
    {
        return path.starts_with(prefix);
    }
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    let glob_tail = pattern.ends_with('*');
    if (!glob_tail && p.len() != s.len()) || (glob_tail && s.len() < p.len()) {
        return false;
    }
    p.iter().zip(s.iter()).enumerate().all(|(i, (a, b))| {
        *a == "+"
            || a == b
            || (glob_tail && i == p.len() - 1 && b.starts_with(a.trim_end_matches('*')))
    })
}

/// Checks `op` on `path` against the caller's policies (`root` allows everything).
pub async fn authorize(
    state: &VaultState,
    id: &Identity,
    path: &str,
    op: Operation,
) -> Result<(), VaultError> {
    if id.policies.iter().any(|p| p == "root") {
        return Ok(());
    }
    let wanted: &[&str] = match op {
        Operation::Read | Operation::Head => &["read"],
        Operation::Write => &["create", "update"],
        Operation::List => &["list"],
        Operation::Delete => &["delete"],
    };
    let mut best: Option<(usize, Vec<String>)> = None;
    for name in &id.policies {
        let Some(body) = state.cached_object("policy", "", name).await? else {
            continue;
        };
        let rules: Vec<Rule> = serde_json::from_str(&body).unwrap_or_default();
        for rule in rules.into_iter().filter(|r| path_matches(&r.path, path)) {
            // The most specific (longest) matching pattern wins, as in Vault.
            let len = rule.path.len();
            match &mut best {
                Some((l, caps)) if *l == len => caps.extend(rule.capabilities),
                Some((l, _)) if *l > len => {}
                _ => best = Some((len, rule.capabilities)),
            }
        }
    }
    match best {
        Some((_, caps))
            if !caps.iter().any(|c| c == "deny")
                && caps.iter().any(|c| wanted.contains(&c.as_str())) =>
        {
            Ok(())
        }
        _ => Err(VaultError::permission_denied()),
    }
}

/// Authenticates and authorizes in one step.
pub async fn require_token(state: &VaultState, req: &VaultRequest) -> Result<Identity, VaultError> {
    let id = authenticate(state, req).await?;
    authorize(state, &id, &req.path, req.op).await?;
    Ok(id)
}

/// `sys/policy/:name`, `sys/policies/acl/:name`.
pub async fn policies(state: &VaultState, req: &VaultRequest) -> Result<Response, VaultError> {
    require_token(state, req).await?;
    let name = req
        .path
        .strip_prefix("sys/policies/acl")
        .or_else(|| req.path.strip_prefix("sys/policy"))
        .unwrap_or("")
        .trim_start_matches('/')
        .to_owned();
    if name.is_empty() {
        require(req.op, &[Operation::List, Operation::Read])?;
        let mut keys = state.store.object_names("policy", "").await?;
        keys.insert(0, "root".into());
        return list_response(keys);
    }
    match req.op {
        Operation::Write => {
            let text = string_field(&req.data, "policy");
            let rules = parse_policy(&text)
                .map_err(|e| VaultError::bad_request(format!("failed to parse policy: {e}")))?;
            let body =
                serde_json::to_string(&rules).map_err(|e| VaultError::internal("policy", e))?;
            state
                .store
                .put_object("policy", "", &name, &body, now())
                .await?;
            state.cache.put_object("policy", "", &name, &body);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Operation::Read => {
            let body = state
                .store
                .object("policy", "", &name)
                .await?
                .ok_or_else(VaultError::not_found)?;
            let rules: Vec<Rule> = serde_json::from_str(&body).unwrap_or_default();
            let hcl: String = rules
                .iter()
                .map(|r| {
                    format!(
                        "path \"{}\" {{\n  capabilities = {:?}\n}}\n",
                        r.path, r.capabilities
                    )
                })
                .collect();
            Ok(envelope(
                Some(json!({"name": name, "rules": hcl, "policy": hcl})),
                vec![],
                None,
            ))
        }
        Operation::Delete => {
            state.store.delete_object("policy", "", &name).await?;
            state.cache.forget_object("policy", "", &name);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(VaultError::unsupported()),
    }
}

/// `auth/…` routes.
pub async fn route(
    state: &VaultState,
    req: &VaultRequest,
    rest: &str,
) -> Result<Response, VaultError> {
    match rest {
        "token/lookup-self" => return lookup_self(state, req).await,
        "token/create" | "token/create-orphan" => return create_token(state, req).await,
        _ => {}
    }
    let (mount, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let method = state.config.auth_mounts.get(mount).map(String::as_str);
    match (method, tail) {
        (Some("kubernetes"), "login") => kubernetes_login(state, req, mount).await,
        (Some("approle"), "login") => approle_login(state, req, mount).await,
        (Some("cert"), "login") => cert_login(state, req, mount).await,
        (Some("cert"), _) => manage_cert_roles(state, req, mount, tail).await,
        (Some(kind @ ("kubernetes" | "approle")), _) => manage(state, req, mount, kind, tail).await,
        _ => Err(VaultError::no_route(&req.path)),
    }
}

async fn lookup_self(state: &VaultState, req: &VaultRequest) -> Result<Response, VaultError> {
    let id = authenticate(state, req).await?;
    let ttl = id.expires_at.map(|e| (e - now()).max(0)).unwrap_or(0);
    let expire_time = id
        .expires_at
        .and_then(|e| OffsetDateTime::from_unix_timestamp(e).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    Ok(envelope(
        Some(json!({
            "accessor": id.accessor, "creation_time": id.created_at, "creation_ttl": ttl,
            "display_name": id.display_name, "entity_id": "", "expire_time": expire_time,
            "explicit_max_ttl": 0, "id": req.token().unwrap_or_default(), "meta": id.meta,
            "num_uses": 0, "orphan": true, "path": "auth/token/create", "policies": id.policies,
            "renewable": false, "ttl": ttl, "type": "service",
        })),
        vec![],
        None,
    ))
}

async fn create_token(state: &VaultState, req: &VaultRequest) -> Result<Response, VaultError> {
    require(req.op, &[Operation::Write])?;
    let id = require_token(state, req).await?;
    let mut policies = list_field(&req.data, "policies");
    let is_root = id.policies.iter().any(|p| p == "root");
    if policies.is_empty() {
        policies = id.policies.clone();
    } else if !is_root && policies.iter().any(|p| !id.policies.contains(p)) {
        return Err(VaultError::bad_request(
            "child policies must be a subset of the parent's",
        ));
    }
    let ttl = duration_field(&req.data, "ttl")?.or(Some(DEFAULT_TOKEN_TTL));
    let display = format!("token-{}", string_field(&req.data, "display_name"));
    let (token, child) = mint(
        state,
        policies,
        display.trim_end_matches('-'),
        Map::new(),
        ttl,
    )
    .await?;
    Ok(envelope(None, vec![], Some(auth_object(&token, &child))))
}

/// Vault accepts `policies` and `ttl` on auth roles as aliases of `token_policies` and
/// `token_ttl`.
fn with_token_aliases(data: &Map<String, Value>) -> Map<String, Value> {
    let mut data = data.clone();
    for (alias, field) in [("policies", "token_policies"), ("ttl", "token_ttl")] {
        if let Some(v) = data.get(alias).cloned() {
            data.entry(field).or_insert(v);
        }
    }
    data
}

// --- kubernetes ------------------------------------------------------------------------------

/// Kubernetes auth role.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KubernetesRole {
    bound_service_account_names: Vec<String>,
    bound_service_account_namespaces: Vec<String>,
    audience: String,
    token_policies: Vec<String>,
    token_ttl: u64,
}

/// Kubernetes auth configuration: the keys that sign service-account tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KubernetesConfig {
    kubernetes_host: String,
    pem_keys: Vec<String>,
    /// A JWK Set (the API server's `/openid/v1/jwks`), as JSON text.
    jwks: String,
    issuer: String,
    /// Without `pem_keys` or `jwks`: the API server's CA for TokenReview (PEM).
    #[serde(default)]
    kubernetes_ca_cert: String,
    /// Without `pem_keys` or `jwks`: the credential TokenReview calls use. Never returned.
    #[serde(default)]
    token_reviewer_jwt: String,
}

async fn manage(
    state: &VaultState,
    req: &VaultRequest,
    mount: &str,
    kind: &str,
    tail: &str,
) -> Result<Response, VaultError> {
    require_token(state, req).await?;
    let object_kind = format!("{kind}_role");
    if tail == "config" && kind == "kubernetes" {
        return match req.op {
            Operation::Write => {
                let config = KubernetesConfig {
                    kubernetes_host: string_field(&req.data, "kubernetes_host"),
                    pem_keys: list_field(&req.data, "pem_keys"),
                    jwks: string_field(&req.data, "jwks"),
                    issuer: string_field(&req.data, "issuer"),
                    kubernetes_ca_cert: string_field(&req.data, "kubernetes_ca_cert"),
                    token_reviewer_jwt: string_field(&req.data, "token_reviewer_jwt"),
                };
                if config.pem_keys.is_empty()
                    && config.jwks.is_empty()
                    && !config.kubernetes_host.starts_with("https://")
                {
                    return Err(VaultError::bad_request(
                        "pem_keys or jwks (local verification), or an https:// kubernetes_host \
                         (TokenReview), is required",
                    ));
                }
                keys_of(&config)?;
                state
                    .store
                    .put_object(
                        "kubernetes_config",
                        mount,
                        "config",
                        &serde_json::to_string(&config)
                            .map_err(|e| VaultError::internal("config", e))?,
                        now(),
                    )
                    .await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            Operation::Read => {
                let body = state
                    .store
                    .object("kubernetes_config", mount, "config")
                    .await?
                    .ok_or_else(VaultError::not_found)?;
                let mut config: Value = serde_json::from_str(&body).unwrap_or_default();
                if let Some(c) = config.as_object_mut() {
                    c.remove("token_reviewer_jwt");
                }
                Ok(envelope(Some(config), vec![], None))
            }
            _ => Err(VaultError::unsupported()),
        };
    }
    if tail == "role" {
        require(req.op, &[Operation::List])?;
        return list_response(state.store.object_names(&object_kind, mount).await?);
    }
    let Some(name_and_sub) = tail.strip_prefix("role/") else {
        return Err(VaultError::no_route(&req.path));
    };
    let (name, sub) = name_and_sub.split_once('/').unwrap_or((name_and_sub, ""));
    if kind == "approle" && !sub.is_empty() {
        return approle_sub(state, req, mount, name, sub).await;
    }
    match req.op {
        Operation::Write => {
            let data = with_token_aliases(&req.data);
            let existing: Map<String, Value> =
                match state.store.object(&object_kind, mount, name).await? {
                    Some(b) => serde_json::from_str(&b).unwrap_or_default(),
                    None => Map::new(),
                };
            let body = if kind == "kubernetes" {
                let role = KubernetesRole {
                    bound_service_account_names: list_field(&data, "bound_service_account_names"),
                    bound_service_account_namespaces: list_field(
                        &data,
                        "bound_service_account_namespaces",
                    ),
                    audience: string_field(&data, "audience"),
                    token_policies: list_field(&data, "token_policies"),
                    token_ttl: duration_field(&data, "token_ttl")?
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                };
                if role.bound_service_account_names.is_empty()
                    || role.bound_service_account_namespaces.is_empty()
                {
                    return Err(VaultError::bad_request(
                        "bound_service_account_names and bound_service_account_namespaces are required",
                    ));
                }
                serde_json::to_value(role).map_err(|e| VaultError::internal("role", e))?
            } else {
                let role_id = existing
                    .get("role_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                json!({
                    "role_id": role_id,
                    "token_policies": list_field(&data, "token_policies"),
                    "token_ttl": duration_field(&data, "token_ttl")?.map(|d| d.as_secs()).unwrap_or(0),
                    "secret_id_ttl": duration_field(&data, "secret_id_ttl")?.map(|d| d.as_secs()).unwrap_or(0),
                    "secret_id_num_uses": int_field(&data, "secret_id_num_uses", 0)?,
                    "bind_secret_id": bool_field(&data, "bind_secret_id", true)?,
                })
            };
            state
                .store
                .put_object(&object_kind, mount, name, &body.to_string(), now())
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Operation::Read => {
            let body = state
                .store
                .object(&object_kind, mount, name)
                .await?
                .ok_or_else(VaultError::not_found)?;
            let mut v: Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.remove("role_id");
                if let Some(p) = m.get("token_policies").cloned() {
                    m.insert("policies".into(), p);
                }
            }
            Ok(envelope(Some(v), vec![], None))
        }
        Operation::Delete => {
            state.store.delete_object(&object_kind, mount, name).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(VaultError::unsupported()),
    }
}

fn keys_of(
    config: &KubernetesConfig,
) -> Result<Vec<(Option<String>, crate::acme::jws::AccountKey)>, VaultError> {
    let mut keys = Vec::new();
    for pem in &config.pem_keys {
        let der = pem_body(pem).ok_or_else(|| {
            VaultError::bad_request("pem_keys: not a PEM public key or certificate")
        })?;
        // Vault accepts public keys and certificates (hvac insists on certificates).
        let spki_der = if pem.contains("BEGIN CERTIFICATE") {
            use x509_cert::der::{Decode, Encode};
            x509_cert::Certificate::from_der(&der)
                .and_then(|c| c.tbs_certificate().subject_public_key_info().to_der())
                .map_err(|_| VaultError::bad_request("pem_keys: invalid certificate"))?
        } else {
            der
        };
        let spki = crate::issuer::SubjectPublicKey::from_spki_der(&spki_der)
            .map_err(|e| VaultError::bad_request(format!("pem_keys: {e}")))?;
        let jwk = Jwk::from_spki(&spki)
            .ok_or_else(|| VaultError::bad_request("pem_keys: RSA or ECDSA keys only"))?;
        keys.push((
            None,
            jwk.key()
                .map_err(|e| VaultError::bad_request(format!("pem_keys: {}", e.detail)))?,
        ));
    }
    if !config.jwks.is_empty() {
        let set: Value = serde_json::from_str(&config.jwks)
            .map_err(|e| VaultError::bad_request(format!("jwks: {e}")))?;
        for k in set["keys"].as_array().into_iter().flatten() {
            let kid = k["kid"].as_str().map(str::to_owned);
            let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
                continue;
            };
            if let Ok(key) = jwk.key() {
                keys.push((kid, key));
            }
        }
    }
    Ok(keys)
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let start = pem.find("-----BEGIN")?;
    let body_start = pem[start..].find('\n')? + start + 1;
    let end = pem[body_start..].find("-----END")? + body_start;
    let b64: String = pem[body_start..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Verifies a service-account JWT against the configured keys and returns its claims.
fn verify_jwt(jwt: &str, keys: &[(Option<String>, crate::acme::jws::AccountKey)]) -> Option<Value> {
    let mut parts = jwt.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&b64url_decode(h)?).ok()?;
    let alg = header["alg"].as_str()?;
    let kid = header["kid"].as_str();
    let sig = b64url_decode(s)?;
    let message = format!("{h}.{p}");
    let verified = keys
        .iter()
        .filter(|(k, _)| kid.is_none() || k.is_none() || k.as_deref() == kid)
        .any(|(_, key)| key.verify(alg, message.as_bytes(), &sig).is_ok());
    if !verified {
        return None;
    }
    serde_json::from_slice(&b64url_decode(p)?).ok()
}

async fn kubernetes_login(
    state: &VaultState,
    req: &VaultRequest,
    mount: &str,
) -> Result<Response, VaultError> {
    require(req.op, &[Operation::Write])?;
    let role_name = string_field(&req.data, "role");
    let jwt = string_field(&req.data, "jwt");
    let role: KubernetesRole = match state
        .store
        .object("kubernetes_role", mount, &role_name)
        .await?
    {
        Some(b) => serde_json::from_str(&b).map_err(|e| VaultError::internal("role", e))?,
        None => {
            return Err(VaultError::bad_request(format!(
                "invalid role name \"{role_name}\""
            )));
        }
    };
    let config: KubernetesConfig = match state
        .store
        .object("kubernetes_config", mount, "config")
        .await?
    {
        Some(b) => serde_json::from_str(&b).map_err(|e| VaultError::internal("config", e))?,
        None => return Err(VaultError::bad_request("kubernetes auth is not configured")),
    };
    let denied = |why: &str| {
        tracing::info!(mount, role = %role_name, reason = why, "kubernetes login refused");
        VaultError::permission_denied()
    };
    if config.pem_keys.is_empty() && config.jwks.is_empty() {
        // No local keys: ask the API server (TokenReview).
        let reviewed = super::token_review::review(
            &config.kubernetes_host,
            &config.kubernetes_ca_cert,
            &config.token_reviewer_jwt,
            jwt.trim(),
            &role.audience,
        )
        .await?
        .ok_or_else(|| denied("TokenReview: not authenticated"))?;
        return kubernetes_identity(
            state,
            mount,
            &role_name,
            &role,
            &reviewed.namespace,
            &reviewed.name,
            Some(reviewed.uid.as_str()),
        )
        .await;
    }
    let keys = keys_of(&config)?;
    let claims = verify_jwt(jwt.trim(), &keys).ok_or_else(|| denied("signature"))?;
    let t = now();
    if claims["exp"].as_i64().is_some_and(|e| e <= t) {
        return Err(denied("expired"));
    }
    if claims["nbf"].as_i64().is_some_and(|n| n > t + 60) {
        return Err(denied("not yet valid"));
    }
    if !config.issuer.is_empty() && claims["iss"].as_str() != Some(config.issuer.as_str()) {
        return Err(denied("issuer"));
    }
    if !role.audience.is_empty() {
        let aud_ok = match &claims["aud"] {
            Value::String(a) => *a == role.audience,
            Value::Array(a) => a.iter().any(|x| x.as_str() == Some(role.audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(denied("audience"));
        }
    }
    let k8s = &claims["kubernetes.io"];
    let (namespace, name, uid) = if k8s.is_object() {
        (
            k8s["namespace"].as_str(),
            k8s["serviceaccount"]["name"].as_str(),
            k8s["serviceaccount"]["uid"].as_str(),
        )
    } else {
        (
            claims["kubernetes.io/serviceaccount/namespace"].as_str(),
            claims["kubernetes.io/serviceaccount/service-account.name"].as_str(),
            claims["kubernetes.io/serviceaccount/service-account.uid"].as_str(),
        )
    };
    let (Some(namespace), Some(name)) = (namespace, name) else {
        return Err(denied("no service account claims"));
    };
    if claims["sub"]
        .as_str()
        .is_some_and(|s| s != format!("system:serviceaccount:{namespace}:{name}"))
    {
        return Err(denied("subject does not match the service account"));
    }
    kubernetes_identity(state, mount, &role_name, &role, namespace, name, uid).await
}

/// The role's bindings, then a token for the verified service account.
async fn kubernetes_identity(
    state: &VaultState,
    mount: &str,
    role_name: &str,
    role: &KubernetesRole,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<Response, VaultError> {
    let bound = |patterns: &[String], value: &str| {
        patterns.iter().any(|p| p == "*" || glob_matches(p, value))
    };
    if !bound(&role.bound_service_account_names, name)
        || !bound(&role.bound_service_account_namespaces, namespace)
    {
        tracing::info!(mount, role = %role_name, reason = "service account not bound to the role", "kubernetes login refused");
        return Err(VaultError::permission_denied());
    }
    let mut meta = Map::new();
    meta.insert("auth_method".into(), json!("kubernetes"));
    meta.insert("mount".into(), json!(mount));
    meta.insert("role".into(), json!(role_name));
    meta.insert("service_account_name".into(), json!(name));
    meta.insert("service_account_namespace".into(), json!(namespace));
    meta.insert("service_account_uid".into(), json!(uid.unwrap_or_default()));
    let display = format!("{mount}-{namespace}-{name}");
    login_response(
        state,
        role.token_policies.clone(),
        &display,
        meta,
        role.token_ttl,
    )
    .await
}

// --- approle ----------------------------------------------------------------------------------

async fn approle_sub(
    state: &VaultState,
    req: &VaultRequest,
    mount: &str,
    name: &str,
    sub: &str,
) -> Result<Response, VaultError> {
    let body = state
        .store
        .object("approle_role", mount, name)
        .await?
        .ok_or_else(|| VaultError::bad_request(format!("role \"{name}\" does not exist")))?;
    let role: Value = serde_json::from_str(&body).map_err(|e| VaultError::internal("role", e))?;
    match (sub, req.op) {
        ("role-id", Operation::Read) => Ok(envelope(
            Some(json!({"role_id": role["role_id"]})),
            vec![],
            None,
        )),
        ("secret-id", Operation::Write) => {
            let secret_id = uuid::Uuid::new_v4().to_string();
            let ttl = role["secret_id_ttl"].as_i64().unwrap_or(0);
            let record = json!({
                "role": name,
                "expires_at": if ttl > 0 { json!(now() + ttl) } else { Value::Null },
                "uses_remaining": role["secret_id_num_uses"].as_i64().unwrap_or(0),
            });
            state
                .store
                .put_object(
                    "approle_secret",
                    mount,
                    &sha256_hex(&secret_id),
                    &record.to_string(),
                    now(),
                )
                .await?;
            Ok(envelope(
                Some(
                    json!({"secret_id": secret_id, "secret_id_accessor": random_b64(12), "secret_id_ttl": ttl, "secret_id_num_uses": record["uses_remaining"]}),
                ),
                vec![],
                None,
            ))
        }
        _ => Err(VaultError::unsupported()),
    }
}

async fn approle_login(
    state: &VaultState,
    req: &VaultRequest,
    mount: &str,
) -> Result<Response, VaultError> {
    require(req.op, &[Operation::Write])?;
    let role_id = string_field(&req.data, "role_id");
    let secret_id = string_field(&req.data, "secret_id");
    let mut found = None;
    for name in state.store.object_names("approle_role", mount).await? {
        if let Some(body) = state.store.object("approle_role", mount, &name).await?
            && let Ok(role) = serde_json::from_str::<Value>(&body)
            && role["role_id"].as_str() == Some(role_id.trim())
        {
            found = Some((name, role));
            break;
        }
    }
    let Some((name, role)) = found else {
        return Err(VaultError::bad_request("invalid role ID"));
    };
    if role["bind_secret_id"].as_bool().unwrap_or(true) {
        let key = sha256_hex(secret_id.trim());
        let record: Value = match state.store.object("approle_secret", mount, &key).await? {
            Some(b) => serde_json::from_str(&b).unwrap_or_default(),
            None => return Err(VaultError::bad_request("invalid secret id")),
        };
        if record["role"].as_str() != Some(name.as_str())
            || record["expires_at"].as_i64().is_some_and(|e| e <= now())
        {
            return Err(VaultError::bad_request("invalid secret id"));
        }
        match record["uses_remaining"].as_i64().unwrap_or(0) {
            0 => {}
            1 => {
                state
                    .store
                    .delete_object("approle_secret", mount, &key)
                    .await?;
            }
            n => {
                let mut updated = record.clone();
                updated["uses_remaining"] = json!(n - 1);
                state
                    .store
                    .put_object("approle_secret", mount, &key, &updated.to_string(), now())
                    .await?;
            }
        }
    }
    let mut meta = Map::new();
    meta.insert("auth_method".into(), json!("approle"));
    meta.insert("mount".into(), json!(mount));
    meta.insert("role_name".into(), json!(name));
    let policies: Vec<String> = role["token_policies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let ttl = role["token_ttl"].as_u64().unwrap_or(0);
    login_response(state, policies, &format!("approle-{name}"), meta, ttl).await
}

// --- cert --------------------------------------------------------------------------------------

/// A `cert` auth role: which CA (or pinned certificate) is trusted, for which common names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CertRole {
    certificate: String,
    allowed_common_names: Vec<String>,
    token_policies: Vec<String>,
    token_ttl: u64,
}

async fn manage_cert_roles(
    state: &VaultState,
    req: &VaultRequest,
    mount: &str,
    tail: &str,
) -> Result<Response, VaultError> {
    require_token(state, req).await?;
    if tail == "certs" {
        require(req.op, &[Operation::List])?;
        return list_response(state.store.object_names("cert_role", mount).await?);
    }
    let Some(name) = tail.strip_prefix("certs/") else {
        return Err(VaultError::no_route(&req.path));
    };
    match req.op {
        Operation::Write => {
            let data = with_token_aliases(&req.data);
            let role = CertRole {
                certificate: string_field(&data, "certificate"),
                allowed_common_names: list_field(&data, "allowed_common_names"),
                token_policies: list_field(&data, "token_policies"),
                token_ttl: duration_field(&data, "token_ttl")?
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            };
            let trusted =
                crate::issuer::hierarchy::parse_certs(&role.certificate).unwrap_or_default();
            if trusted.is_empty() {
                return Err(VaultError::bad_request(
                    "certificate: a PEM CA certificate is required",
                ));
            }
            let body = serde_json::to_string(&role).map_err(|e| VaultError::internal("role", e))?;
            state
                .store
                .put_object("cert_role", mount, name, &body, now())
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Operation::Read => {
            let body = state
                .store
                .object("cert_role", mount, name)
                .await?
                .ok_or_else(VaultError::not_found)?;
            Ok(envelope(
                Some(serde_json::from_str(&body).unwrap_or_default()),
                vec![],
                None,
            ))
        }
        Operation::Delete => {
            state.store.delete_object("cert_role", mount, name).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(VaultError::unsupported()),
    }
}

/// Whether `leaf` is trusted by `role`: pinned, or signed by one of its certificates, within its
/// validity, with an allowed common name. Returns the common name.
fn cert_matches(role: &CertRole, leaf_der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, leaf) = X509Certificate::from_der(leaf_der).ok()?;
    if !leaf.validity().is_valid() {
        return None;
    }
    let trusted = crate::issuer::hierarchy::parse_certs(&role.certificate).ok()?;
    let chained = trusted.iter().any(|t| {
        t.as_ref() == leaf_der
            || X509Certificate::from_der(t).ok().is_some_and(|(_, ca)| {
                leaf.issuer() == ca.subject()
                    && leaf.verify_signature(Some(ca.public_key())).is_ok()
            })
    });
    if !chained {
        return None;
    }
    let cn = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let cn_ok = role.allowed_common_names.is_empty()
        || role
            .allowed_common_names
            .iter()
            .any(|p| glob_matches(p, &cn));
    cn_ok.then_some(cn)
}

async fn cert_login(
    state: &VaultState,
    req: &VaultRequest,
    mount: &str,
) -> Result<Response, VaultError> {
    require(req.op, &[Operation::Write])?;
    let leaf = req
        .conn
        .as_ref()
        .and_then(|c| c.peer_certificates.first().cloned())
        .ok_or_else(|| VaultError::bad_request("client certificate must be supplied"))?;
    let requested = string_field(&req.data, "name");
    let names = if requested.is_empty() {
        state.store.object_names("cert_role", mount).await?
    } else {
        vec![requested]
    };
    for name in names {
        let Some(body) = state.store.object("cert_role", mount, &name).await? else {
            continue;
        };
        let Ok(role) = serde_json::from_str::<CertRole>(&body) else {
            continue;
        };
        if let Some(cn) = cert_matches(&role, &leaf) {
            let mut meta = Map::new();
            meta.insert("auth_method".into(), json!("cert"));
            meta.insert("mount".into(), json!(mount));
            meta.insert("cert_name".into(), json!(name));
            meta.insert("common_name".into(), json!(cn));
            let display = format!("cert-{name}");
            return login_response(
                state,
                role.token_policies.clone(),
                &display,
                meta,
                role.token_ttl,
            )
            .await;
        }
    }
    tracing::info!(
        mount,
        "cert login refused: no role trusts the presented certificate"
    );
    Err(VaultError::permission_denied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_and_json_policies() {
        let hcl = r#"
            path "pki_int/sign/*" {
              capabilities = ["create", "update"]
            }
            path "pki_int/roles/+" { capabilities = ["read"] }
        "#;
        let rules = parse_policy(hcl).expect("hcl");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].capabilities, vec!["create", "update"]);
        let json = r#"{"path": {"secret/*": {"capabilities": ["read"]}}}"#;
        assert_eq!(parse_policy(json).expect("json")[0].path, "secret/*");
        assert!(parse_policy("nonsense").is_err());
    }

    #[test]
    fn path_globs() {
        assert!(path_matches(
            "pki_int/sign/*",
            "pki_int/sign/internal-service"
        ));
        assert!(!path_matches("pki_int/sign/*", "pki/sign/x"));
        assert!(path_matches("pki_int/roles/+", "pki_int/roles/web"));
        assert!(!path_matches("pki_int/roles/+", "pki_int/roles/web/x"));
        assert!(path_matches(
            "auth/token/lookup-self",
            "auth/token/lookup-self"
        ));
    }
}
