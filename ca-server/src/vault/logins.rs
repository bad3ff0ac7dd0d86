//! `auth/<mount>/…` for the kubernetes, approle and cert methods: logins (public: they are how a
//! caller gets a token) and the roles and configuration behind them (token). Fields are read in
//! Vault's loose forms here; what a login may grant is decided in [`crate::auth`].

use axum::response::Response;
use serde_json::{Map, Value, json};

use super::routes::{Existence, Route, ops, public, token};
use super::tokens::auth_object;
use super::values::{bool_field, duration_field, int_field, list_field, string_field};
use super::{Call, Operation, VaultError, VaultState, envelope, list_response, no_content};
use crate::auth::approle::{self, AppRole};
use crate::auth::cert::{self, CertRole};
use crate::auth::kubernetes::{self, KubernetesConfig, KubernetesRole};
use crate::auth::token::{Origin, TokenSpec};
use crate::auth::{AuthRole, Authorized};

const fn existence(kind: &'static str) -> Option<Existence> {
    Some(Existence { kind, mount: None })
}

/// Kubernetes auth mounts.
pub static KUBERNETES: &[Route] = &[
    public!("login", ops::WRITE, kubernetes_login),
    token!("config", ops::READ_WRITE, kubernetes_config),
    token!("role", ops::LIST, list_kubernetes_roles),
    token!(
        "role/+",
        ops::CRUD,
        kubernetes_role,
        existence(kubernetes::ROLE_KIND)
    ),
];

/// AppRole auth mounts.
pub static APPROLE: &[Route] = &[
    public!("login", ops::WRITE, approle_login),
    token!("role", ops::LIST, list_approles),
    token!(
        "role/+",
        ops::CRUD,
        approle_role,
        existence(approle::ROLE_KIND)
    ),
    token!("role/+/role-id", ops::READ, approle_role_id),
    token!("role/+/secret-id", ops::WRITE, approle_secret_id),
];

/// Cert auth mounts.
pub static CERT: &[Route] = &[
    public!("login", ops::WRITE, cert_login),
    token!("certs", ops::LIST, list_cert_roles),
    token!("certs/+", ops::CRUD, cert_role, existence(cert::ROLE_KIND)),
];

/// A login's token, in Vault's `auth` envelope.
async fn login(state: &VaultState, spec: TokenSpec) -> Result<Response, VaultError> {
    let (token, caller) = state.auth.mint(spec, Origin::Login).await?;
    Ok(envelope(None, vec![], Some(auth_object(&token, &caller))))
}

/// Vault accepts `policies`, `ttl` and `max_ttl` on auth roles as aliases of `token_policies`,
/// `token_ttl` and `token_max_ttl`. Token settings this server does not apply are refused rather
/// than stored and ignored.
fn with_token_aliases(data: &Map<String, Value>) -> Result<Map<String, Value>, VaultError> {
    let mut data = data.clone();
    for (alias, field) in [
        ("policies", "token_policies"),
        ("ttl", "token_ttl"),
        ("max_ttl", "token_max_ttl"),
    ] {
        if let Some(v) = data.get(alias).cloned() {
            data.entry(field).or_insert(v);
        }
    }
    let set = |k: &str| match data.get(k) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty() && s != "0" && s != "0s",
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::Bool(b)) => *b,
        Some(_) => true,
    };
    for unsupported in [
        "token_bound_cidrs",
        "secret_id_bound_cidrs",
        "bound_cidrs",
        "token_period",
        "period",
        "token_num_uses",
        "token_explicit_max_ttl",
        "token_no_default_policy",
    ] {
        if set(unsupported) {
            return Err(VaultError::bad_request(format!(
                "{unsupported} is not supported by this server (docs/vault-api.md)"
            )));
        }
    }
    match string_field(&data, "token_type").as_str() {
        "" | "service" | "default-service" | "default" => {}
        other => {
            return Err(VaultError::bad_request(format!(
                "token_type {:?}: only service tokens are made here",
                crate::policy::shorten(other)
            )));
        }
    }
    Ok(data)
}

fn seconds(data: &Map<String, Value>, key: &str) -> Result<u64, VaultError> {
    Ok(duration_field(data, key)?.map(|d| d.as_secs()).unwrap_or(0))
}

async fn list_kind(state: &VaultState, call: &Call, kind: &str) -> Result<Response, VaultError> {
    list_response(state.store.object_names(kind, &call.mount).await?)
}

async fn list_kubernetes_roles(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    list_kind(state, call, kubernetes::ROLE_KIND).await
}

async fn list_approles(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    list_kind(state, call, approle::ROLE_KIND).await
}

async fn list_cert_roles(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    list_kind(state, call, cert::ROLE_KIND).await
}

/// Reads, writes or deletes a stored role; `build` reads one from the request's fields, `view`
/// shows one as Vault does.
async fn crud<T: AuthRole>(
    state: &VaultState,
    call: &Call,
    build: fn(&Map<String, Value>) -> Result<T, VaultError>,
    view: fn(T) -> Value,
) -> Result<Response, VaultError> {
    let name = call.param(0);
    match call.op {
        Operation::Write => {
            let role = build(&with_token_aliases(&call.data)?)?;
            state.auth.put_role(&call.mount, name, role).await?;
            no_content()
        }
        Operation::Read => {
            let role: T = state
                .auth
                .json(T::KIND, &call.mount, name)
                .await?
                .ok_or_else(VaultError::not_found)?;
            Ok(envelope(Some(view(role)), vec![], None))
        }
        Operation::Delete => {
            state
                .store
                .delete_object(T::KIND, &call.mount, name)
                .await?;
            no_content()
        }
        Operation::List => Err(VaultError::unsupported()),
    }
}

/// Role views add Vault's `policies` alias.
fn with_policies_alias(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut()
        && let Some(p) = m.get("token_policies").cloned()
    {
        m.insert("policies".into(), p);
    }
    v
}

// --- kubernetes ------------------------------------------------------------------------------

async fn kubernetes_login(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    let role = string_field(&call.data, "role");
    let jwt = string_field(&call.data, "jwt");
    let spec = state
        .auth
        .kubernetes_login(&call.mount, &role, &jwt)
        .await?;
    login(state, spec).await
}

async fn kubernetes_config(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    match call.op {
        Operation::Write => {
            let d = &call.data;
            let config = KubernetesConfig {
                kubernetes_host: string_field(d, "kubernetes_host"),
                pem_keys: list_field(d, "pem_keys"),
                jwks: string_field(d, "jwks"),
                issuer: string_field(d, "issuer"),
                kubernetes_ca_cert: string_field(d, "kubernetes_ca_cert"),
                token_reviewer_jwt: string_field(d, "token_reviewer_jwt"),
            };
            state
                .auth
                .put_kubernetes_config(&call.mount, config)
                .await?;
            no_content()
        }
        _ => {
            let config = state
                .auth
                .kubernetes_config(&call.mount)
                .await?
                .ok_or_else(VaultError::not_found)?;
            Ok(envelope(Some(config.public_view()), vec![], None))
        }
    }
}

async fn kubernetes_role(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    crud(
        state,
        call,
        |d| {
            Ok(KubernetesRole {
                bound_service_account_names: list_field(d, "bound_service_account_names"),
                bound_service_account_namespaces: list_field(d, "bound_service_account_namespaces"),
                audience: string_field(d, "audience"),
                token_policies: list_field(d, "token_policies"),
                token_ttl: seconds(d, "token_ttl")?,
                token_max_ttl: seconds(d, "token_max_ttl")?,
            })
        },
        |role| with_policies_alias(serde_json::to_value(role).unwrap_or_default()),
    )
    .await
}

// --- approle -----------------------------------------------------------------------------------

async fn approle_login(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    let spec = state
        .auth
        .approle_login(
            &call.mount,
            &string_field(&call.data, "role_id"),
            &string_field(&call.data, "secret_id"),
        )
        .await?;
    login(state, spec).await
}

async fn approle_role(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    if call.op == Operation::Delete {
        // Its secret IDs go with it.
        state
            .auth
            .delete_approle(&call.mount, call.param(0))
            .await?;
        return no_content();
    }
    crud(
        state,
        call,
        |d| {
            Ok(AppRole {
                role_id: uuid::Uuid::new_v4().to_string(),
                token_policies: list_field(d, "token_policies"),
                token_ttl: seconds(d, "token_ttl")?,
                token_max_ttl: seconds(d, "token_max_ttl")?,
                secret_id_ttl: seconds(d, "secret_id_ttl")?,
                secret_id_num_uses: int_field(d, "secret_id_num_uses", 0)?,
                bind_secret_id: bool_field(d, "bind_secret_id", true)?,
            })
        },
        |role: AppRole| {
            let mut v = with_policies_alias(serde_json::to_value(role).unwrap_or_default());
            if let Some(m) = v.as_object_mut() {
                m.remove("role_id");
            }
            v
        },
    )
    .await
}

async fn approle_role_id(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let role: AppRole = state
        .auth
        .json(approle::ROLE_KIND, &call.mount, call.param(0))
        .await?
        .ok_or_else(|| {
            VaultError::bad_request(format!(
                "role \"{}\" does not exist",
                crate::policy::shorten(call.param(0))
            ))
        })?;
    Ok(envelope(
        Some(json!({"role_id": role.role_id})),
        vec![],
        None,
    ))
}

async fn approle_secret_id(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let s = state
        .auth
        .approle_secret_id(&call.mount, call.param(0))
        .await?;
    Ok(envelope(
        Some(json!({
            "secret_id": s.secret_id, "secret_id_accessor": s.accessor,
            "secret_id_ttl": s.ttl, "secret_id_num_uses": s.num_uses,
        })),
        vec![],
        None,
    ))
}

// --- cert ----------------------------------------------------------------------------------------

async fn cert_login(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    let leaf = call
        .conn
        .as_ref()
        .and_then(|c| c.peer_certificates.first().cloned())
        .ok_or_else(|| VaultError::bad_request("client certificate must be supplied"))?;
    let name = string_field(&call.data, "name");
    let spec = state
        .auth
        .cert_login(
            &call.mount,
            Some(name.as_str()).filter(|n| !n.is_empty()),
            &leaf,
        )
        .await?;
    login(state, spec).await
}

async fn cert_role(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    crud(
        state,
        call,
        |d| {
            Ok(CertRole {
                certificate: string_field(d, "certificate"),
                allowed_common_names: list_field(d, "allowed_common_names"),
                token_policies: list_field(d, "token_policies"),
                token_ttl: seconds(d, "token_ttl")?,
                token_max_ttl: seconds(d, "token_max_ttl")?,
            })
        },
        |role| with_policies_alias(serde_json::to_value(role).unwrap_or_default()),
    )
    .await
}
