//! `auth/token/…`: create (child or orphan), look up and revoke tokens, by themselves, by value
//! or by accessor. The rules (root tokens, subsets, the token tree) are [`crate::auth::token`]'s.

use axum::response::Response;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::routes::{Route, ops, token};
use super::values::{bool_field, duration_field, list_field, string_field};
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
    token!("revoke-orphan", ops::WRITE, revoke),
    token!("revoke-accessor", ops::WRITE, revoke_accessor),
    token!("lookup", ops::READ_WRITE, lookup),
    token!("lookup-accessor", ops::WRITE, lookup_accessor),
    token!("renew-self", ops::WRITE, renew_self),
];

/// The `auth` object of a login or create response.
pub fn auth_object(token: &str, caller: &Caller) -> Value {
    json!({
        "client_token": token, "accessor": caller.accessor, "policies": caller.policies,
        "token_policies": caller.policies, "identity_policies": [], "metadata": caller.meta,
        "lease_duration": caller.ttl(), "renewable": false, "entity_id": "",
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
        "expire_time": caller.expires_at.and_then(rfc3339), "explicit_max_ttl": 0, "id": id,
        "issue_time": rfc3339(caller.created_at), "meta": caller.meta, "num_uses": 0,
        "orphan": caller.parent.is_none(), "path": "auth/token/create",
        "policies": caller.policies, "renewable": false, "ttl": caller.ttl(), "type": "service",
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

/// Tokens here are not renewable (their lifetime is fixed at creation), as Vault answers for
/// non-renewable tokens.
async fn renew_self(_: &VaultState, _: &Call, _: &Authorized) -> Result<Response, VaultError> {
    Err(VaultError::bad_request("lease is not renewable"))
}
