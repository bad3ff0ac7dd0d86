//! `auth/token/…`: create (child, orphan, or through a token role), look up, renew and revoke
//! tokens — by themselves, by value or by accessor — and manage token roles. The rules (root
//! tokens, subsets, the token tree, renewal limits) are [`crate::auth::token`]'s.

use axum::response::Response;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::routes::{Existence, Route, ops, token};
use super::values::{bool_field, duration_field, int_field, list_field, string_field};
use super::{Call, VaultError, VaultState, envelope, no_content};
use crate::auth::token::{Caller, Origin, TokenSpec};
use crate::auth::{Authorized, Error};

/// The `auth/token` routes.
pub static ROUTES: &[Route] = &[
    token!("lookup-self", ops::READ, lookup_self),
    token!("create", ops::WRITE, create),
    token!("create-orphan", ops::WRITE, create_orphan),
    token!("revoke-self", ops::WRITE, revoke_self),
    token!("revoke", ops::WRITE, revoke),
    token!("revoke-orphan", ops::WRITE, revoke_orphan),
    token!("revoke-accessor", ops::WRITE, revoke_accessor),
    token!("lookup", ops::READ_WRITE, lookup),
    token!("lookup-accessor", ops::WRITE, lookup_accessor),
    token!("renew-self", ops::WRITE, renew_self),
    token!("renew", ops::WRITE, renew),
    token!("renew-accessor", ops::WRITE, renew_accessor),
    token!("roles", ops::READ_LIST, list_roles),
    token!("roles/+", ops::CRUD, role, ROLE),
    token!("create/+", ops::WRITE, create_with_role),
];

/// Stored token roles.
const ROLE_KIND: &str = "token_role";
const ROLE: Option<Existence> = Some(Existence {
    kind: ROLE_KIND,
    mount: Some(""),
});

/// The `auth` object of a login or create response.
pub fn auth_object(token: &str, caller: &Caller) -> Value {
    json!({
        "client_token": token, "accessor": caller.accessor, "policies": caller.policies,
        "token_policies": caller.policies, "identity_policies": [], "metadata": caller.meta,
        "lease_duration": caller.ttl(), "renewable": caller.renewable(), "entity_id": "",
        "token_type": "service", "orphan": caller.parent.is_none(), "mfa_requirement": null,
        "num_uses": 0,
    })
}

/// A token's description, as `lookup` answers (`id` only for the caller's own token).
fn lookup_data(caller: &Caller, id: &str) -> Value {
    let rfc3339 = |t: i64| {
        OffsetDateTime::from_unix_timestamp(t).ok().and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
    };
    json!({
        "accessor": caller.accessor, "creation_time": caller.created_at,
        "creation_ttl": caller.expires_at.map(|e| e - caller.created_at).unwrap_or(0),
        "display_name": caller.display_name, "entity_id": "",
        "expire_time": caller.expires_at.and_then(rfc3339),
        "explicit_max_ttl": caller.explicit_max_ttl(), "id": id,
        "issue_time": rfc3339(caller.created_at), "meta": caller.meta, "num_uses": 0,
        "orphan": caller.parent.is_none(), "path": "auth/token/create",
        "policies": caller.policies, "renewable": caller.renewable(), "ttl": caller.ttl(),
        "type": "service",
    })
}

async fn lookup_self(
    _: &VaultState,
    call: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    Ok(envelope(
        Some(lookup_data(who.caller(), call.token().unwrap_or_default())),
        vec![],
        None,
    ))
}

fn spec(call: &Call) -> Result<TokenSpec, VaultError> {
    let data = &call.data;
    // What this server does not make is refused, not ignored (the CLI sends the defaults).
    if duration_field(data, "period")?.is_some_and(|d| !d.is_zero()) {
        return Err(VaultError::bad_request(
            "periodic tokens are not supported; use explicit_max_ttl and renew",
        ));
    }
    if int_field(data, "num_uses", 0)? != 0 {
        return Err(VaultError::bad_request(
            "use-limited tokens (num_uses) are not supported",
        ));
    }
    match string_field(data, "type").as_str() {
        "" | "service" | "default" => {}
        other => {
            return Err(VaultError::bad_request(format!(
                "token type {:?}: only service tokens are made here",
                crate::policy::shorten(other)
            )));
        }
    }
    for refused in ["id", "entity_alias"] {
        if !string_field(data, refused).is_empty() {
            return Err(VaultError::bad_request(format!(
                "{refused} is not accepted: token values and entities are the server's to choose"
            )));
        }
    }
    if data
        .get("meta")
        .is_some_and(|m| m.as_object().is_some_and(|o| !o.is_empty()))
    {
        return Err(VaultError::bad_request(
            "meta is not accepted: a token's metadata carries the identity a login established",
        ));
    }
    Ok(TokenSpec {
        policies: list_field(&call.data, "policies"),
        display_name: match string_field(&call.data, "display_name") {
            n if n.is_empty() => "token".into(),
            n => format!("token-{}", crate::policy::shorten(&n)),
        },
        // Caller-supplied metadata is not accepted: metadata carries the identity a login
        // established, which a token must not be able to claim.
        meta: serde_json::Map::new(),
        ttl: duration_field(&call.data, "ttl")?,
        no_default_policy: bool_field(&call.data, "no_default_policy", false)?,
        explicit_max_ttl: duration_field(&call.data, "explicit_max_ttl")?,
        renewable: bool_field(&call.data, "renewable", true)?,
    })
}

async fn create(state: &VaultState, call: &Call, who: &Authorized) -> Result<Response, VaultError> {
    let origin = if bool_field(&call.data, "no_parent", false)? {
        Origin::Orphan(who)
    } else {
        Origin::Child(who)
    };
    let (token, child) = state.auth.mint(spec(call)?, origin).await?;
    Ok(envelope(None, vec![], Some(auth_object(&token, &child))))
}

async fn create_orphan(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    let (token, child) = state.auth.mint(spec(call)?, Origin::Orphan(who)).await?;
    Ok(envelope(None, vec![], Some(auth_object(&token, &child))))
}

async fn revoke_self(
    state: &VaultState,
    _: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    state.auth.revoke(&who.caller().accessor).await?;
    no_content()
}

/// The token named by `field` in the body (`token`): must exist.
async fn named_token(state: &VaultState, call: &Call) -> Result<Caller, VaultError> {
    let token = string_field(&call.data, "token");
    if token.is_empty() {
        return Err(VaultError::bad_request("missing token"));
    }
    state.auth.lookup(&token).await.map_err(|e| match e {
        Error::Denied => VaultError::bad_request("bad token"),
        e => e.into(),
    })
}

async fn by_accessor(state: &VaultState, call: &Call) -> Result<Caller, VaultError> {
    let accessor = string_field(&call.data, "accessor");
    if accessor.is_empty() {
        return Err(VaultError::bad_request("missing accessor"));
    }
    state
        .auth
        .lookup_accessor(&accessor)
        .await?
        .ok_or_else(|| VaultError::bad_request("invalid accessor"))
}

async fn revoke(state: &VaultState, call: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let target = named_token(state, call).await?;
    state.auth.revoke(&target.accessor).await?;
    no_content()
}

/// `revoke-orphan` (sudo): revokes the token alone; its children become orphans, as Vault does.
async fn revoke_orphan(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    if !who.sudo() {
        return Err(VaultError::permission_denied());
    }
    let target = named_token(state, call).await?;
    state.auth.revoke_orphaning(&target.accessor).await?;
    no_content()
}

async fn revoke_accessor(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let target = by_accessor(state, call).await?;
    state.auth.revoke(&target.accessor).await?;
    no_content()
}

async fn lookup(state: &VaultState, call: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let target = named_token(state, call).await?;
    let token = string_field(&call.data, "token");
    Ok(envelope(Some(lookup_data(&target, &token)), vec![], None))
}

async fn lookup_accessor(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let target = by_accessor(state, call).await?;
    Ok(envelope(Some(lookup_data(&target, "")), vec![], None))
}

/// `increment` (seconds or a duration), absent or 0 for the token's own TTL.
fn increment(call: &Call) -> Result<Option<std::time::Duration>, VaultError> {
    duration_field(&call.data, "increment")
}

/// Renews `target`; the answer's `auth` names the token when the caller sent it (never for a
/// renewal by accessor).
async fn renewed(
    state: &VaultState,
    call: &Call,
    target: &Caller,
    token: &str,
) -> Result<Response, VaultError> {
    let renewed = state.auth.renew(target, increment(call)?).await?;
    Ok(envelope(None, vec![], Some(auth_object(token, &renewed))))
}

/// Renews the caller's own token (SPIRE's and the CLI's `token renew`).
async fn renew_self(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    renewed(state, call, who.caller(), call.token().unwrap_or_default()).await
}

async fn renew(state: &VaultState, call: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let target = named_token(state, call).await?;
    renewed(state, call, &target, &string_field(&call.data, "token")).await
}

async fn renew_accessor(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let target = by_accessor(state, call).await?;
    renewed(state, call, &target, "").await
}

// --- token roles -----------------------------------------------------------------------------

/// A token role, as stored: what `auth/token/create/<role>` may make.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct TokenRole {
    allowed_policies: Vec<String>,
    disallowed_policies: Vec<String>,
    allowed_policies_glob: Vec<String>,
    disallowed_policies_glob: Vec<String>,
    orphan: bool,
    renewable: bool,
    path_suffix: String,
    token_explicit_max_ttl: u64,
    token_no_default_policy: bool,
}

fn role_from(
    data: &serde_json::Map<String, Value>,
    old: Option<TokenRole>,
) -> Result<TokenRole, VaultError> {
    let mut r = old.unwrap_or(TokenRole {
        renewable: true,
        ..TokenRole::default()
    });
    let has = |k: &str| data.contains_key(k);
    for unsupported in ["token_period", "period"] {
        if duration_field(data, unsupported)?.is_some_and(|d| !d.is_zero()) {
            return Err(VaultError::bad_request(format!(
                "{unsupported}: periodic tokens are not supported; use token_explicit_max_ttl"
            )));
        }
    }
    if int_field(data, "token_num_uses", 0)? != 0 {
        return Err(VaultError::bad_request(
            "token_num_uses: use-limited tokens are not supported",
        ));
    }
    match string_field(data, "token_type").as_str() {
        "" | "service" | "default-service" | "default" => {}
        other => {
            return Err(VaultError::bad_request(format!(
                "invalid 'token_type' value {:?}: only service tokens are supported",
                crate::policy::shorten(other)
            )));
        }
    }
    if has("allowed_policies") {
        r.allowed_policies = list_field(data, "allowed_policies");
    }
    if has("disallowed_policies") {
        r.disallowed_policies = list_field(data, "disallowed_policies");
    }
    if has("allowed_policies_glob") {
        r.allowed_policies_glob = list_field(data, "allowed_policies_glob");
    }
    if has("disallowed_policies_glob") {
        r.disallowed_policies_glob = list_field(data, "disallowed_policies_glob");
    }
    r.orphan = bool_field(data, "orphan", r.orphan)?;
    r.renewable = bool_field(data, "renewable", r.renewable)?;
    if has("path_suffix") {
        r.path_suffix = string_field(data, "path_suffix");
    }
    for key in ["token_explicit_max_ttl", "explicit_max_ttl"] {
        if let Some(d) = duration_field(data, key)? {
            r.token_explicit_max_ttl = d.as_secs();
        }
    }
    r.token_no_default_policy =
        bool_field(data, "token_no_default_policy", r.token_no_default_policy)?;
    let everything = r
        .allowed_policies
        .iter()
        .chain(&r.allowed_policies_glob)
        .any(|p| p.trim().eq_ignore_ascii_case("root") || p.trim() == "*");
    if everything {
        return Err(VaultError::bad_request(
            "token roles cannot create root tokens: remove \"root\" (or a glob matching it) from allowed_policies",
        ));
    }
    Ok(r)
}

fn role_body(name: &str, r: &TokenRole) -> Value {
    json!({
        "name": name, "allowed_policies": r.allowed_policies,
        "disallowed_policies": r.disallowed_policies,
        "allowed_policies_glob": r.allowed_policies_glob,
        "disallowed_policies_glob": r.disallowed_policies_glob,
        "allowed_entity_aliases": null, "orphan": r.orphan, "renewable": r.renewable,
        "path_suffix": r.path_suffix, "token_explicit_max_ttl": r.token_explicit_max_ttl,
        "explicit_max_ttl": r.token_explicit_max_ttl, "token_period": 0, "period": 0,
        "token_no_default_policy": r.token_no_default_policy, "token_type": "default-service",
    })
}

async fn load_role(state: &VaultState, name: &str) -> Result<Option<TokenRole>, VaultError> {
    match state.auth.store().object(ROLE_KIND, "", name).await? {
        Some(body) => serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| VaultError::internal("reading a token role", e)),
        None => Ok(None),
    }
}

async fn list_roles(state: &VaultState, _: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let keys = state.auth.store().object_names(ROLE_KIND, "").await?;
    if keys.is_empty() {
        return Err(VaultError::not_found());
    }
    Ok(envelope(Some(json!({ "keys": keys })), vec![], None))
}

async fn role(state: &VaultState, call: &Call, _: &Authorized) -> Result<Response, VaultError> {
    use super::request::Operation;
    let name = call.param(0);
    if name.is_empty() || name.len() > 128 || name.contains(|c: char| c.is_control()) {
        return Err(VaultError::bad_request("role name cannot be empty"));
    }
    match call.op {
        Operation::Read => {
            let r = load_role(state, name)
                .await?
                .ok_or_else(VaultError::not_found)?;
            Ok(envelope(Some(role_body(name, &r)), vec![], None))
        }
        Operation::Delete => {
            state
                .auth
                .store()
                .delete_object(ROLE_KIND, "", name)
                .await?;
            no_content()
        }
        _ => {
            let r = role_from(&call.data, load_role(state, name).await?)?;
            let body = serde_json::to_string(&r)
                .map_err(|e| VaultError::internal("storing a token role", e))?;
            state
                .auth
                .store
                .put_object(
                    ROLE_KIND,
                    "",
                    name,
                    &body,
                    OffsetDateTime::now_utc().unix_timestamp(),
                )
                .await?;
            no_content()
        }
    }
}

/// `auth/token/create/<role>`: the role decides the policies — a subset of its allowed ones
/// (all of them when none are asked for), never a disallowed one — and whether the token is an
/// orphan.
async fn create_with_role(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    let name = call.param(0);
    let r = load_role(state, name).await?.ok_or_else(|| {
        VaultError::bad_request(format!("unknown role {}", crate::policy::shorten(name)))
    })?;
    let glob = crate::policy::identifiers::glob_matches;
    let mut spec = spec(call)?;
    spec.renewable = spec.renewable && r.renewable;
    spec.no_default_policy = spec.no_default_policy || r.token_no_default_policy;
    if r.token_explicit_max_ttl > 0 {
        let role_max = std::time::Duration::from_secs(r.token_explicit_max_ttl);
        spec.explicit_max_ttl = Some(spec.explicit_max_ttl.map_or(role_max, |d| d.min(role_max)));
    }
    let restricted = !r.allowed_policies.is_empty() || !r.allowed_policies_glob.is_empty();
    if spec.policies.is_empty() {
        spec.policies = if restricted {
            r.allowed_policies.clone()
        } else {
            who.caller().policies.clone()
        };
    }
    for p in &spec.policies {
        let p = p.trim().to_ascii_lowercase();
        if p == "default" {
            continue;
        }
        let allowed = if restricted {
            r.allowed_policies.contains(&p) || r.allowed_policies_glob.iter().any(|g| glob(g, &p))
        } else {
            who.caller().is_root() || who.caller().policies.contains(&p)
        };
        let disallowed = r.disallowed_policies.contains(&p)
            || r.disallowed_policies_glob.iter().any(|g| glob(g, &p));
        if !allowed || disallowed || p == "root" {
            return Err(VaultError::bad_request(format!(
                "token policies ({}) must be subset of the role's allowed policies and not include disallowed ones",
                crate::policy::shorten(&p)
            )));
        }
    }
    if !r.path_suffix.is_empty() {
        spec.display_name = format!(
            "{}-{}",
            spec.display_name,
            crate::policy::shorten(&r.path_suffix)
        );
    }
    let (token, child) = state
        .auth
        .mint(
            spec,
            Origin::Role {
                by: who,
                orphan: r.orphan,
            },
        )
        .await?;
    let mut auth = auth_object(&token, &child);
    auth["metadata"] = json!({ "role": name });
    Ok(envelope(None, vec![], Some(auth)))
}
