//! ACME endpoint handlers. Each authenticates, checks ownership, applies policy, changes state
//! with compare-and-set updates, and answers with the resource's JSON.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ca_store::acme::{AccountRow, AuthorizationRow, OrderRow};
use ca_store::{Protocol, Requester};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::jws::{self, Jwk, b64url, b64url_decode};
use super::model::*;
use super::problem::{AcmeError, ProblemType, Stage, Subproblem};
use super::{AcmePost, AcmeState, Authenticated, Signer};
use crate::issuer::{CertificateRequest, IssueError, Profile, csr};
use crate::policy::{self, EabBinding, acme::OrderIdentifier};
use crate::validation::{ChallengeType, Target};

type Result<T> = std::result::Result<T, AcmeError>;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .unwrap_or_else(|_| panic!("the operating system's random number generator failed"));
    b64url(&bytes)
}

fn rfc3339(ts: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn header_value(s: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(s).map_err(|e| AcmeError::internal("header value", e))
}

fn respond(status: StatusCode, location: Option<&str>, body: Value) -> Result<Response> {
    let mut response = (status, Json(body)).into_response();
    if let Some(url) = location {
        response
            .headers_mut()
            .insert(header::LOCATION, header_value(url)?);
    }
    Ok(response)
}

fn with_retry_after(mut response: Response, secs: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

fn account_url(base: &str, id: &str) -> String {
    format!("{base}/acme/acct/{id}")
}

fn order_url(base: &str, id: &str) -> String {
    format!("{base}/acme/order/{id}")
}

fn account_json(base: &str, a: &AccountRow) -> Value {
    let contact: Value = serde_json::from_str(&a.contact).unwrap_or(json!([]));
    let mut v = json!({
        "status": a.status,
        "contact": contact,
        "orders": format!("{}/orders", account_url(base, &a.id)),
        "createdAt": rfc3339(a.created_at),
    });
    if let Some(kid) = &a.eab_kid {
        v["externalAccountBinding"] = json!({ "kid": kid });
    }
    v
}

fn identifiers_of(order: &OrderRow) -> Vec<Identifier> {
    serde_json::from_str(&order.identifiers).unwrap_or_default()
}

fn order_json(base: &str, o: &OrderRow, authz_ids: &[String]) -> Value {
    let mut v = json!({
        "status": o.status,
        "expires": rfc3339(o.expires),
        "identifiers": identifiers_of(o),
        "authorizations": authz_ids.iter().map(|id| format!("{base}/acme/authz/{id}")).collect::<Vec<_>>(),
        "finalize": format!("{}/finalize", order_url(base, &o.id)),
        "profile": o.profile,
    });
    if let Some(nb) = o.not_before {
        v["notBefore"] = json!(rfc3339(nb));
    }
    if let Some(na) = o.not_after {
        v["notAfter"] = json!(rfc3339(na));
    }
    if let Some(r) = &o.replaces {
        v["replaces"] = json!(r);
    }
    if let Some(e) = &o.error {
        v["error"] = serde_json::from_str(e).unwrap_or(Value::Null);
    }
    if let Some(serial) = &o.certificate_serial {
        v["certificate"] = json!(format!(
            "{base}/acme/cert/{}",
            crate::issuer::hierarchy::hex(serial)
        ));
    }
    v
}

fn challenges_of(a: &AuthorizationRow) -> Result<Vec<StoredChallenge>> {
    serde_json::from_str(&a.challenges).map_err(|e| AcmeError::internal("stored challenges", e))
}

fn challenge_json(base: &str, authz_id: &str, index: usize, c: &StoredChallenge) -> Value {
    let mut v = json!({
        "type": c.kind,
        "url": format!("{base}/acme/chall/{authz_id}/{index}"),
        "status": c.status,
        "token": c.token,
    });
    if let Some(t) = c.validated {
        v["validated"] = json!(rfc3339(t));
    }
    if let Some(e) = &c.error {
        v["error"] = e.clone();
    }
    v
}

fn authz_json(base: &str, a: &AuthorizationRow) -> Result<Value> {
    let challenges = challenges_of(a)?;
    let mut v = json!({
        "identifier": {"type": a.identifier_type, "value": a.identifier_value},
        "status": a.status,
        "expires": rfc3339(a.expires),
        "challenges": challenges.iter().enumerate().map(|(i, c)| challenge_json(base, &a.id, i, c)).collect::<Vec<_>>(),
    });
    if a.wildcard != 0 {
        v["wildcard"] = json!(true);
    }
    Ok(v)
}

async fn binding_of(state: &AcmeState, account: &AccountRow) -> Result<EabBinding> {
    let Some(kid) = &account.eab_kid else {
        return Ok(EabBinding::default());
    };
    let Some(key) = state.inner.store.eab_key(kid).await? else {
        return Ok(EabBinding::default());
    };
    serde_json::from_str(&key.policy).map_err(|e| AcmeError::internal("stored EAB policy", e))
}

// ---------------------------------------------------------------------------------------------
// Directory and nonces

pub(super) async fn directory(
    State(state): State<AcmeState>,
    uri: axum::http::Uri,
    conn: Option<axum::Extension<crate::http::listener::ConnectionInfo>>,
    headers: HeaderMap,
) -> Response {
    let base = state.base_url(&uri, &headers, conn.as_ref().map(|c| &c.0));
    let config = state.config();
    let ca = state.inner.issuance.ca();
    let lifetimes = ca.settings();
    let profiles: serde_json::Map<String, Value> = config
        .profiles
        .iter()
        .map(|p| {
            let l = lifetimes.lifetime(*p);
            let text = format!(
                "{} certificate, {} by default, at most {}",
                p,
                crate::duration::format_go(l.default),
                crate::duration::format_go(l.max)
            );
            (p.name().to_owned(), Value::String(text))
        })
        .collect();
    let mut meta = json!({
        "externalAccountRequired": config.require_eab,
        "profiles": profiles,
    });
    if let Some(tos) = &config.terms_of_service {
        meta["termsOfService"] = json!(tos);
    }
    if let Some(site) = &config.website {
        meta["website"] = json!(site);
    }
    Json(json!({
        "newNonce": format!("{base}/acme/new-nonce"),
        "newAccount": format!("{base}/acme/new-account"),
        "newOrder": format!("{base}/acme/new-order"),
        "revokeCert": format!("{base}/acme/revoke-cert"),
        "keyChange": format!("{base}/acme/key-change"),
        "renewalInfo": format!("{base}/acme/renewal-info"),
        "meta": meta,
    }))
    .into_response()
}

pub(super) async fn new_nonce_head() -> StatusCode {
    StatusCode::OK
}

pub(super) async fn new_nonce_get() -> StatusCode {
    StatusCode::NO_CONTENT
}

// ---------------------------------------------------------------------------------------------
// Accounts

fn check_contacts(contacts: &[String]) -> Result<()> {
    for c in contacts {
        let Some(addr) = c.strip_prefix("mailto:") else {
            return Err(AcmeError::new(
                ProblemType::UnsupportedContact,
                format!("only mailto: contacts are supported, not {c:?}"),
            ));
        };
        if !addr.contains('@') || addr.contains('?') || addr.contains(',') || addr.len() > 254 {
            return Err(AcmeError::new(
                ProblemType::InvalidContact,
                format!("invalid contact {c:?}"),
            ));
        }
    }
    Ok(())
}

pub(super) async fn new_account(State(state): State<AcmeState>, req: AcmePost) -> Result<Response> {
    let auth = state.verify(&req, Signer::Jwk).await?;
    let jwk = auth
        .jwk
        .clone()
        .ok_or_else(|| AcmeError::malformed("jwk required"))?;
    let thumbprint = jwk.thumbprint()?;
    let payload: NewAccount = if auth.is_post_as_get() {
        NewAccount::default()
    } else {
        auth.json()?
    };
    let store = &state.inner.store;
    if let Some(existing) = store.account_by_thumbprint(&thumbprint).await? {
        let url = account_url(&auth.base, &existing.id);
        return respond(
            StatusCode::OK,
            Some(&url),
            account_json(&auth.base, &existing),
        );
    }
    if payload.only_return_existing == Some(true) {
        return Err(AcmeError::new(
            ProblemType::AccountDoesNotExist,
            "no account exists for this key",
        ));
    }
    let contact = payload.contact.clone().unwrap_or_default();
    check_contacts(&contact)?;
    if state.config().terms_of_service.is_some() && payload.terms_of_service_agreed != Some(true) {
        return Err(AcmeError::malformed(
            "you must agree to the terms of service (termsOfServiceAgreed)",
        ));
    }
    let id = random_id();
    let eab_kid = match &payload.external_account_binding {
        Some(eab) => Some(verify_eab(&state, &auth, eab, &thumbprint, &id).await?),
        None if state.config().require_eab => {
            return Err(AcmeError::new(
                ProblemType::ExternalAccountRequired,
                "this CA requires an external account binding",
            ));
        }
        None => None,
    };
    let account = AccountRow {
        id: id.clone(),
        key_thumbprint: thumbprint,
        jwk: serde_json::to_string(&jwk).map_err(|e| AcmeError::internal("jwk", e))?,
        status: "valid".into(),
        contact: serde_json::to_string(&contact).unwrap_or_else(|_| "[]".into()),
        eab_kid,
        created_at: now(),
    };
    match store.insert_account(&account).await {
        Ok(()) => {}
        Err(ca_store::Error::AlreadyExists) => {
            // A concurrent request registered the same key first: return that account.
            if let Some(existing) = store.account_by_thumbprint(&account.key_thumbprint).await? {
                let url = account_url(&auth.base, &existing.id);
                return respond(
                    StatusCode::OK,
                    Some(&url),
                    account_json(&auth.base, &existing),
                );
            }
            return Err(AcmeError::unavailable("account creation raced; retry"));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(account = %id, eab_kid = ?account.eab_kid, "ACME account created");
    let url = account_url(&auth.base, &id);
    respond(
        StatusCode::CREATED,
        Some(&url),
        account_json(&auth.base, &account),
    )
}

/// Checks an External Account Binding and binds its key to the new account.
async fn verify_eab(
    state: &AcmeState,
    auth: &Authenticated,
    eab: &jws::FlattenedJws,
    thumbprint: &str,
    account_id: &str,
) -> Result<String> {
    let inner = jws::decode_parts(eab)?;
    let kid = inner
        .header
        .kid
        .clone()
        .ok_or_else(|| AcmeError::malformed("externalAccountBinding lacks kid"))?;
    if inner.header.url.as_deref() != auth.header.url.as_deref() {
        return Err(AcmeError::malformed(
            "externalAccountBinding url must equal the newAccount URL",
        ));
    }
    if inner.header.nonce.is_some() {
        return Err(AcmeError::malformed(
            "externalAccountBinding must not carry a nonce",
        ));
    }
    let bound: Jwk = serde_json::from_slice(&inner.payload).map_err(|_| {
        AcmeError::malformed("externalAccountBinding payload must be the account JWK")
    })?;
    if bound.thumbprint()? != thumbprint {
        return Err(AcmeError::unauthorized(
            "externalAccountBinding is for a different account key",
        ));
    }
    let unknown = || AcmeError::unauthorized(format!("unknown or unusable EAB key {kid:?}"));
    let key = state.inner.store.eab_key(&kid).await?.ok_or_else(unknown)?;
    if key.revoked_at.is_some() {
        return Err(unknown());
    }
    let mac_key = state
        .inner
        .seal
        .open_bytes(&super::eab_purpose(&kid), &key.hmac_key)
        .map_err(|e| AcmeError::internal("opening the EAB key", e))?;
    jws::verify_mac(
        &inner.header.alg,
        &mac_key,
        &inner.signing_input,
        &inner.signature,
    )?;
    if !state.inner.store.bind_eab_key(&kid, account_id).await? {
        return Err(AcmeError::unauthorized(format!(
            "EAB key {kid:?} is already bound to an account"
        )));
    }
    Ok(kid)
}

fn owned_account<'a>(auth: &'a Authenticated, id: &str) -> Result<&'a AccountRow> {
    let account = auth.account()?;
    if account.id != id {
        return Err(AcmeError::unauthorized(
            "the request is not signed by this account",
        ));
    }
    Ok(account)
}

pub(super) async fn account(
    State(state): State<AcmeState>,
    Path(id): Path<String>,
    req: AcmePost,
) -> Result<Response> {
    let auth = state.verify(&req, Signer::Kid).await?;
    let mut account = owned_account(&auth, &id)?.clone();
    if !auth.is_post_as_get() {
        let update: AccountUpdate = auth.json()?;
        if let Some(contact) = update.contact {
            check_contacts(&contact)?;
            account.contact = serde_json::to_string(&contact).unwrap_or_else(|_| "[]".into());
        }
        match update.status.as_deref() {
            None => {}
            Some("deactivated") => account.status = "deactivated".into(),
            Some(other) => {
                return Err(AcmeError::malformed(format!(
                    "cannot set account status to {other:?}"
                )));
            }
        }
        state.update_account(&account).await?;
    }
    let url = account_url(&auth.base, &account.id);
    respond(
        StatusCode::OK,
        Some(&url),
        account_json(&auth.base, &account),
    )
}

pub(super) async fn account_orders(
    State(state): State<AcmeState>,
    Path(id): Path<String>,
    req: AcmePost,
) -> Result<Response> {
    let auth = state.verify(&req, Signer::Kid).await?;
    let account = owned_account(&auth, &id)?;
    let ids = state
        .inner
        .store
        .order_ids_for_account(&account.id, 1000)
        .await?;
    let urls: Vec<String> = ids.iter().map(|o| order_url(&auth.base, o)).collect();
    respond(StatusCode::OK, None, json!({ "orders": urls }))
}

pub(super) async fn key_change(State(state): State<AcmeState>, req: AcmePost) -> Result<Response> {
    let auth = state.verify(&req, Signer::Kid).await?;
    let mut account = auth.account()?.clone();
    let outer: jws::FlattenedJws = auth.json()?;
    let inner = jws::decode_parts(&outer)?;
    jws::check_account_alg(&inner.header.alg)?;
    let new_jwk = inner.header.jwk.clone().ok_or_else(|| {
        AcmeError::malformed("the inner keyChange JWS must carry the new key as jwk")
    })?;
    if inner.header.kid.is_some() || inner.header.url != auth.header.url {
        return Err(AcmeError::malformed(
            "inner keyChange JWS: no kid, and url equal to the outer url",
        ));
    }
    new_jwk
        .key()?
        .verify(&inner.header.alg, &inner.signing_input, &inner.signature)?;
    let change: KeyChange = serde_json::from_slice(&inner.payload)
        .map_err(|e| AcmeError::malformed(format!("invalid keyChange payload: {e}")))?;
    let url = account_url(&auth.base, &account.id);
    if change.account != url {
        return Err(AcmeError::unauthorized("keyChange names another account"));
    }
    if change.old_key.thumbprint()? != account.key_thumbprint {
        return Err(AcmeError::unauthorized(
            "oldKey is not the account's current key",
        ));
    }
    let new_tp = new_jwk.thumbprint()?;
    if let Some(other) = state.inner.store.account_by_thumbprint(&new_tp).await? {
        let mut e = AcmeError::malformed("the new key is already in use by another account")
            .with_status(StatusCode::CONFLICT);
        e.detail = format!("{} ({})", e.detail, account_url(&auth.base, &other.id));
        return Err(e);
    }
    account.key_thumbprint = new_tp;
    account.jwk = serde_json::to_string(&new_jwk).map_err(|e| AcmeError::internal("jwk", e))?;
    match state.update_account(&account).await {
        Ok(()) => respond(
            StatusCode::OK,
            Some(&url),
            account_json(&auth.base, &account),
        ),
        Err(ca_store::Error::AlreadyExists) => {
            Err(AcmeError::malformed("the new key is already in use")
                .with_status(StatusCode::CONFLICT))
        }
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Orders

/// The server policy and the account's binding decide ([`policy::acme::order_identifiers`]);
/// every refused identifier becomes a subproblem.
fn check_identifiers(
    state: &AcmeState,
    binding: &EabBinding,
    ids: &[Identifier],
) -> Result<Vec<OrderIdentifier>> {
    let requested: Vec<(&str, &str)> = ids
        .iter()
        .map(|i| (i.kind.as_str(), i.value.as_str()))
        .collect();
    policy::acme::order_identifiers(&state.config().policy, binding, &requested).map_err(
        |refused| {
            let subproblems: Vec<Subproblem> = refused
                .iter()
                .map(|(index, rejection)| {
                    let problem = AcmeError::rejected(rejection, Stage::NewOrder);
                    let identifier = ids
                        .get(*index)
                        .map(|id| json!({"type": id.kind, "value": id.value}))
                        .unwrap_or(Value::Null);
                    Subproblem {
                        kind: problem.kind.urn(),
                        detail: problem.detail,
                        identifier,
                    }
                })
                .collect();
            let kind = if subproblems
                .iter()
                .all(|s| s.kind == ProblemType::UnsupportedIdentifier.urn())
            {
                ProblemType::UnsupportedIdentifier
            } else if subproblems
                .iter()
                .all(|s| s.kind == ProblemType::Malformed.urn())
            {
                ProblemType::Malformed
            } else {
                ProblemType::RejectedIdentifier
            };
            let mut e = AcmeError::new(kind, "one or more identifiers cannot be ordered");
            e.subproblems = subproblems;
            e
        },
    )
}

fn parse_time(field: &str, value: &Option<String>) -> Result<Option<i64>> {
    value
        .as_deref()
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339)
                .map(|t| t.unix_timestamp())
                .map_err(|_| AcmeError::malformed(format!("{field} must be an RFC 3339 timestamp")))
        })
        .transpose()
}

/// `base64url(AKI keyIdentifier) "." base64url(serial)` (RFC 9773 §4.1).
fn parse_cert_id(id: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let (aki, serial) = id.split_once('.')?;
    Some((b64url_decode(aki)?, b64url_decode(serial)?))
}

fn serial_bytes(serial: &[u8]) -> Vec<u8> {
    // RFC 9773 encodes the DER INTEGER contents, which may carry a leading zero; the ledger does not.
    let skip = serial.iter().take_while(|b| **b == 0).count();
    serial[skip..].to_vec()
}

pub(super) async fn new_order(State(state): State<AcmeState>, req: AcmePost) -> Result<Response> {
    let auth = state.verify(&req, Signer::Kid).await?;
    let account = auth.account()?.clone();
    let payload: NewOrder = auth.json()?;
    let binding = binding_of(&state, &account).await?;
    let requested = payload.identifiers.clone().unwrap_or_default();
    if requested.is_empty() {
        policy::acme::allows_empty_order(&binding)
            .map_err(|r| AcmeError::rejected(&r, Stage::NewOrder))?;
    }
    let identifiers = check_identifiers(&state, &binding, &requested)?;
    let profile = policy::acme::order_profile(
        &state.config().profiles,
        state.config().default_profile,
        &binding,
        payload.profile.as_deref(),
    )
    .map_err(|r| AcmeError::rejected(&r, Stage::NewOrder))?;
    let not_before = parse_time("notBefore", &payload.not_before)?;
    let not_after = parse_time("notAfter", &payload.not_after)?;
    if let (Some(nb), Some(na)) = (not_before, not_after)
        && na <= nb
    {
        return Err(AcmeError::malformed("notAfter must be after notBefore"));
    }
    if let Some(na) = not_after
        && na <= now()
    {
        return Err(AcmeError::malformed("notAfter must be in the future"));
    }
    if let Some(replaces) = &payload.replaces {
        check_replaces(&state, &auth, &account, replaces, &identifiers).await?;
    }

    let created = now();
    let expires =
        created + i64::try_from(state.config().order_lifetime.as_secs()).unwrap_or(86_400);
    let order_id = random_id();
    let status = if binding.preauthorized {
        "valid"
    } else {
        "pending"
    };
    let authzs: Vec<AuthorizationRow> = identifiers
        .iter()
        .map(|id| {
            let kinds: &[&str] = match (id.kind, id.wildcard) {
                ("ip", _) => &["http-01", "tls-alpn-01"],
                (_, true) => &["dns-01"],
                _ => &["http-01", "dns-01", "tls-alpn-01"],
            };
            let challenges: Vec<StoredChallenge> = kinds
                .iter()
                .map(|k| StoredChallenge {
                    kind: (*k).into(),
                    token: random_id(),
                    status: status.into(),
                    validated: None,
                    error: None,
                })
                .collect();
            AuthorizationRow {
                id: random_id(),
                order_id: order_id.clone(),
                account_id: account.id.clone(),
                identifier_type: id.kind.to_owned(),
                identifier_value: id.authorization_value.clone(),
                wildcard: i64::from(id.wildcard),
                status: status.into(),
                expires,
                challenges: serde_json::to_string(&challenges).unwrap_or_else(|_| "[]".into()),
            }
        })
        .collect();
    let order = OrderRow {
        id: order_id.clone(),
        account_id: account.id.clone(),
        status: if binding.preauthorized {
            "ready".into()
        } else {
            "pending".into()
        },
        expires,
        identifiers: serde_json::to_string(
            &identifiers
                .iter()
                .map(|i| Identifier {
                    kind: i.kind.to_owned(),
                    value: i.value.clone(),
                })
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into()),
        profile: profile.name().to_owned(),
        not_before,
        not_after,
        error: None,
        certificate_serial: None,
        replaces: payload.replaces.clone(),
        created_at: created,
    };
    state.inner.store.insert_order(&order, &authzs).await?;
    let ids: Vec<String> = authzs.iter().map(|a| a.id.clone()).collect();
    let url = order_url(&auth.base, &order_id);
    respond(
        StatusCode::CREATED,
        Some(&url),
        order_json(&auth.base, &order, &ids),
    )
}

/// ARI `replaces`: the certificate must be ours, the account's, share an identifier, and not
/// already be replaced by another live order.
async fn check_replaces(
    state: &AcmeState,
    auth: &Authenticated,
    account: &AccountRow,
    replaces: &str,
    identifiers: &[OrderIdentifier],
) -> Result<()> {
    let bad = |m: &str| AcmeError::malformed(format!("replaces: {m}"));
    let (_, serial) =
        parse_cert_id(replaces).ok_or_else(|| bad("not an ARI certificate identifier"))?;
    let record = state
        .inner
        .store
        .certificate_by_serial(&serial_bytes(&serial))
        .await?
        .ok_or_else(|| bad("unknown certificate"))?;
    if record.certificate.requester.identity != account_url(&auth.base, &account.id) {
        return Err(AcmeError::unauthorized(
            "replaces: the certificate belongs to another account",
        ));
    }
    let names: Vec<&String> = record
        .certificate
        .dns_names
        .iter()
        .chain(record.certificate.ip_addresses.iter())
        .collect();
    if !identifiers.is_empty() && !identifiers.iter().any(|i| names.contains(&&i.value)) {
        return Err(bad(
            "the order shares no identifier with the replaced certificate",
        ));
    }
    let earlier = state.inner.store.orders_replacing(replaces).await?;
    // A failed or expired order does not count; a finalized one does.
    if earlier
        .iter()
        .any(|o| effective_status(o, &[], now()) != "invalid")
    {
        return Err(AcmeError::new(
            ProblemType::AlreadyReplaced,
            "this certificate has already been replaced",
        ));
    }
    Ok(())
}

/// An order as its client sees it, with the status it is stored under.
///
/// Readiness is derived, not written (as Boulder does): an order stays stored as `pending` until
/// finalize claims it, and reads as `ready` once every authorization is valid. A validation then
/// costs one write, not three round trips; finalize claims the order from its stored status.
struct LoadedOrder {
    order: OrderRow,
    authzs: Vec<AuthorizationRow>,
    stored_status: String,
}

async fn load_order(state: &AcmeState, auth: &Authenticated, id: &str) -> Result<LoadedOrder> {
    let (mut order, authzs) = state
        .inner
        .store
        .order_with_authorizations(id)
        .await?
        .ok_or_else(|| AcmeError::not_found("order"))?;
    if order.account_id != auth.account()?.id {
        return Err(AcmeError::unauthorized(
            "the order belongs to another account",
        ));
    }
    let stored_status = order.status.clone();
    order.status = effective_status(&order, &authzs, now()).into();
    Ok(LoadedOrder {
        order,
        authzs,
        stored_status,
    })
}

/// The status RFC 8555 §7.1.6 gives an order: a pending order becomes `ready` when all its
/// authorizations are valid and `invalid` when one of them failed or was deactivated; a pending
/// or ready order past its expiry is `invalid`.
fn effective_status<'a>(order: &'a OrderRow, authzs: &[AuthorizationRow], now: i64) -> &'a str {
    let stored = order.status.as_str();
    if stored != "pending" && stored != "ready" {
        return stored;
    }
    if order.expires <= now {
        return "invalid";
    }
    if stored == "ready" {
        return stored;
    }
    if authzs
        .iter()
        .any(|a| matches!(a.status.as_str(), "invalid" | "deactivated" | "revoked"))
    {
        "invalid"
    } else if !authzs.is_empty() && authzs.iter().all(|a| a.status == "valid") {
        "ready"
    } else {
        stored
    }
}

fn order_response(
    base: &str,
    order: &OrderRow,
    authzs: &[AuthorizationRow],
    status: StatusCode,
) -> Result<Response> {
    let ids: Vec<String> = authzs.iter().map(|a| a.id.clone()).collect();
    let url = order_url(base, &order.id);
    let response = respond(status, Some(&url), order_json(base, order, &ids))?;
    Ok(match order.status.as_str() {
        "processing" => with_retry_after(response, 1),
        _ => response,
    })
}

pub(super) async fn order(
    State(state): State<AcmeState>,
    Path(id): Path<String>,
    req: AcmePost,
) -> Result<Response> {
    let auth = state.verify(&req, Signer::Kid).await?;
    let loaded = load_order(&state, &auth, &id).await?;
    order_response(&auth.base, &loaded.order, &loaded.authzs, StatusCode::OK)
}

pub(super) async fn finalize(
    State(state): State<AcmeState>,
    Path(id): Path<String>,
    req: AcmePost,
) -> Result<Response> {
    let auth = state.verify(&req, Signer::Kid).await?;
    let account = auth.account()?.clone();
    let LoadedOrder {
        mut order,
        authzs,
        stored_status,
    } = load_order(&state, &auth, &id).await?;
    // RFC 8555 §7.4: only a ready order may be finalized; a finalized (or finalizing) one
    // answers orderNotReady, so a second CSR never receives the first one's certificate.
    let not_ready = |status: &str| {
        AcmeError::new(
            ProblemType::OrderNotReady,
            format!("the order is {status}, not ready"),
        )
    };
    if order.status != "ready" {
        return Err(not_ready(&order.status));
    }
    let payload: Finalize = auth.json()?;
    let binding = binding_of(&state, &account).await?;
    let request = b64url_decode(&payload.csr)
        .ok_or_else(|| AcmeError::new(ProblemType::BadCsr, "csr is not base64url"))
        .and_then(|der| {
            csr::parse_der(&der).map_err(|e| AcmeError::new(ProblemType::BadCsr, e.to_string()))
        })
        .and_then(|csr| certificate_request(&account, &order, &binding, csr))
        .inspect_err(|_| state.inner.issuance.refused(Protocol::Acme, &order.profile))?;

    // Claim the order; a concurrent finalize loses and is told the order is no longer ready.
    order.status = "processing".into();
    if !state
        .inner
        .store
        .update_order(&order, &stored_status)
        .await?
    {
        let loaded = load_order(&state, &auth, &id).await?;
        return Err(not_ready(&loaded.order.status));
    }
    let mut requester = Requester::new(Protocol::Acme, account_url(&auth.base, &account.id));
    requester.detail.insert("order".into(), order.id.clone());
    if let Some(kid) = &account.eab_kid {
        requester.detail.insert("eab_kid".into(), kid.clone());
    }
    if let Some(r) = &order.replaces {
        requester.detail.insert("replaces".into(), r.clone());
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    match state
        .inner
        .issuance
        .issue(&request, &requester, &request_id)
        .await
    {
        Ok(signed) => {
            order.status = "valid".into();
            order.certificate_serial = Some(signed.serial.clone());
            state.inner.store.update_order(&order, "processing").await?;
            tracing::info!(order = %order.id, serial = %crate::issuer::hierarchy::hex(&signed.serial), profile = %order.profile, "ACME certificate issued");
            order_response(&auth.base, &order, &authzs, StatusCode::OK)
        }
        Err(e) if e.is_transient() => {
            order.status = "ready".into();
            let _ = state.inner.store.update_order(&order, "processing").await;
            Err(AcmeError::unavailable(format!(
                "issuance is temporarily unavailable: {e}"
            )))
        }
        Err(e @ (IssueError::Rejected(_) | IssueError::Csr(_))) => {
            let detail = e.to_string();
            state.inner.issuance.refused(Protocol::Acme, &order.profile);
            let problem = AcmeError::new(ProblemType::BadCsr, detail);
            order.status = "invalid".into();
            order.error = Some(problem.document().to_string());
            state.inner.store.update_order(&order, "processing").await?;
            Err(problem)
        }
        Err(e) => {
            order.status = "ready".into();
            let _ = state.inner.store.update_order(&order, "processing").await;
            Err(AcmeError::internal("issuance failed", e))
        }
    }
}

/// Finalize policy ([`policy::acme::finalize`]) over the order as stored.
fn certificate_request(
    account: &AccountRow,
    order: &OrderRow,
    binding: &EabBinding,
    csr: crate::issuer::VerifiedCsr,
) -> Result<CertificateRequest> {
    let account_jwk: Jwk =
        serde_json::from_str(&account.jwk).map_err(|e| AcmeError::internal("account jwk", e))?;
    let csr_uses_account_key = Jwk::from_spki(&csr.public_key)
        .is_some_and(|k| k.thumbprint().ok() == account_jwk.thumbprint().ok());
    let ordered: Vec<(String, String)> = identifiers_of(order)
        .into_iter()
        .map(|i| (i.kind, i.value))
        .collect();
    let profile: Profile = order
        .profile
        .parse()
        .map_err(|e| AcmeError::internal("stored profile", e))?;
    policy::acme::finalize(policy::acme::Finalize {
        ordered: &ordered,
        profile,
        binding,
        csr,
        csr_uses_account_key,
        not_before: order
            .not_before
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
        not_after: order
            .not_after
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
    })
    .map_err(|r| AcmeError::rejected(&r, Stage::Finalize))
}

// ---------------------------------------------------------------------------------------------
// Authorizations and challenges

async fn load_authz(state: &AcmeState, auth: &Authenticated, id: &str) -> Result<AuthorizationRow> {
    let authz = state
        .inner
        .store
        .authorization(id)
        .await?
        .ok_or_else(|| AcmeError::not_found("authorization"))?;
    if authz.account_id != auth.account()?.id {
        return Err(AcmeError::unauthorized(
            "the authorization belongs to another account",
        ));
    }
    Ok(authz)
}

pub(super) async fn authorization(
    State(state): State<AcmeState>,
    Path(id): Path<String>,
    req: AcmePost,
) -> Result<Response> {
    let auth = state.verify(&req, Signer::Kid).await?;
    let mut authz = load_authz(&state, &auth, &id).await?;
    if !auth.is_post_as_get() {
        let update: AccountUpdate = auth.json()?;
        if update.status.as_deref() != Some("deactivated") {
            return Err(AcmeError::malformed(
                "only {\"status\":\"deactivated\"} may be posted to an authorization",
            ));
        }
        let previous = authz.status.clone();
        if previous != "pending" && previous != "valid" {
            return Err(AcmeError::malformed(format!(
                "a {previous} authorization cannot be deactivated"
            )));
        }
        authz.status = "deactivated".into();
        state
            .inner
            .store
            .update_authorization(&authz, &previous)
            .await?;
    }
    let response = respond(StatusCode::OK, None, authz_json(&auth.base, &authz)?)?;
    Ok(if authz.status == "pending" {
        with_retry_after(response, 1)
    } else {
        response
    })
}

pub(super) async fn challenge(
    State(state): State<AcmeState>,
    Path((authz_id, index)): Path<(String, usize)>,
    req: AcmePost,
) -> Result<Response> {
    let auth = state.verify(&req, Signer::Kid).await?;
    let account = auth.account()?.clone();
    let mut authz = load_authz(&state, &auth, &authz_id).await?;
    let mut challenges = challenges_of(&authz)?;
    let Some(challenge) = challenges.get(index).cloned() else {
        return Err(AcmeError::not_found("challenge"));
    };
    if !auth.is_post_as_get() && authz.status == "pending" && challenge.status == "pending" {
        let _: Value = auth.json()?;
        let key_authorization = format!("{}.{}", challenge.token, account.key_thumbprint);
        let mut task = tokio::spawn(run_validation(
            state.clone(),
            authz.clone(),
            index,
            key_authorization,
        ));
        // Answer with the result when validation is quick (the usual in-cluster case): one write,
        // the result. Otherwise record the challenge as `processing`, answer that, and let the
        // validation finish in the background; its result replaces `processing` either way.
        authz = match tokio::time::timeout(state.config().challenge_wait, &mut task).await {
            Ok(Ok(Some(done))) => done,
            Ok(_) => load_authz(&state, &auth, &authz_id).await?,
            Err(_) => {
                challenges[index].status = "processing".into();
                authz.challenges = serde_json::to_string(&challenges)
                    .map_err(|e| AcmeError::internal("challenges", e))?;
                state
                    .inner
                    .store
                    .update_authorization(&authz, "pending")
                    .await?;
                load_authz(&state, &auth, &authz_id).await?
            }
        };
        challenges = challenges_of(&authz)?;
    }
    let current = challenges
        .get(index)
        .ok_or_else(|| AcmeError::not_found("challenge"))?;
    let mut response = respond(
        StatusCode::OK,
        None,
        challenge_json(&auth.base, &authz.id, index, current),
    )?;
    response.headers_mut().append(
        header::LINK,
        header_value(&format!(
            "<{}/acme/authz/{}>;rel=\"up\"",
            auth.base, authz.id
        ))?,
    );
    Ok(if current.status == "processing" {
        with_retry_after(response, 1)
    } else {
        response
    })
}

/// Validates one challenge and records the result on its authorization, if that is still
/// pending; returns the authorization as recorded. A failure makes the authorization and its
/// order invalid; nothing is left pending. Success writes only the authorization: the order
/// reads as ready from it ([`effective_status`]).
async fn run_validation(
    state: AcmeState,
    mut authz: AuthorizationRow,
    index: usize,
    key_authorization: String,
) -> Option<AuthorizationRow> {
    let mut challenges = challenges_of(&authz).ok()?;
    let challenge = challenges.get(index).cloned()?;
    let target = match authz.identifier_type.as_str() {
        "ip" => authz
            .identifier_value
            .parse()
            .map(Target::Ip)
            .unwrap_or(Target::Dns(authz.identifier_value.clone())),
        _ => Target::Dns(authz.identifier_value.clone()),
    };
    let outcome = match ChallengeType::parse(&challenge.kind) {
        Some(kind) => {
            state
                .inner
                .validator
                .validate(kind, &target, &challenge.token, &key_authorization)
                .await
        }
        None => Err(AcmeError::malformed("unknown challenge type")),
    };
    let problem = outcome.as_ref().err().map(|e| e.document());
    let result = match &outcome {
        Ok(()) => "valid",
        Err(e) => e.kind.urn().rsplit(':').next().unwrap_or("unknown"),
    };
    state
        .inner
        .issuance
        .metrics()
        .validation(&challenge.kind, result);
    match &outcome {
        Ok(()) => {
            challenges[index].status = "valid".into();
            challenges[index].validated = Some(now());
            authz.status = "valid".into();
        }
        Err(e) => {
            tracing::info!(authz = %authz.id, challenge = %challenge.kind, identifier = %authz.identifier_value, problem = %e.detail, "validation failed");
            challenges[index].status = "invalid".into();
            challenges[index].error = problem.clone();
            authz.status = "invalid".into();
        }
    }
    authz.challenges = serde_json::to_string(&challenges).unwrap_or_else(|_| "[]".into());
    let store = &state.inner.store;
    match store.update_authorization(&authz, "pending").await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            tracing::error!(error = %e, authz = %authz.id, "recording a validation result failed");
            return None;
        }
    }
    if let Some(doc) = problem
        && let Ok(Some(mut order)) = store.order(&authz.order_id).await
        && order.status == "pending"
    {
        // The order would read as invalid from its authorization anyway; storing it keeps the
        // error document and lets ARI `replaces` see the order as failed.
        order.status = "invalid".into();
        order.error = Some(doc.to_string());
        let _ = store.update_order(&order, "pending").await;
    }
    Some(authz)
}

// ---------------------------------------------------------------------------------------------
// Certificates

pub(super) async fn certificate(
    State(state): State<AcmeState>,
    Path(serial): Path<String>,
    req: AcmePost,
) -> Result<Response> {
    certificate_chain(state, &serial, 0, req).await
}

/// `/acme/cert/<serial>/<n>`: the certificate with the n-th alternate chain (n ≥ 1).
pub(super) async fn alternate_certificate(
    State(state): State<AcmeState>,
    Path((serial, n)): Path<(String, usize)>,
    req: AcmePost,
) -> Result<Response> {
    if n == 0 {
        return Err(AcmeError::not_found("certificate"));
    }
    certificate_chain(state, &serial, n, req).await
}

/// The certificate followed by chain `index` (0: the default, n: the n-th alternate), with a
/// `Link: rel="alternate"` to every other chain (RFC 8555 §7.4.2).
async fn certificate_chain(
    state: AcmeState,
    serial_hex: &str,
    index: usize,
    req: AcmePost,
) -> Result<Response> {
    let auth = state.verify(&req, Signer::Kid).await?;
    let account = auth.account()?;
    let serial = hex_decode(serial_hex).ok_or_else(|| AcmeError::not_found("certificate"))?;
    let record = state
        .inner
        .store
        .certificate_by_serial(&serial)
        .await?
        .ok_or_else(|| AcmeError::not_found("certificate"))?;
    if record.certificate.requester.identity != account_url(&auth.base, &account.id) {
        return Err(AcmeError::unauthorized(
            "the certificate belongs to another account",
        ));
    }
    // The chains of the issuer that signed it, which after a rotation is not the default.
    let issuers = state.inner.issuance.issuers().current();
    let issuer = issuers
        .by_id(&record.certificate.issuer_id)
        .ok_or_else(|| AcmeError::not_found("certificate chain"))?;
    let chains: Vec<&[CertificateDer<'static>]> = issuer.ca.chains().collect();
    let chain = chains
        .get(index)
        .ok_or_else(|| AcmeError::not_found("certificate chain"))?;
    // Intermediates only: the trust anchor at the top of each chain is distributed separately.
    let intermediates = &chain[..chain.len().saturating_sub(1)];
    let mut pem = crate::issuer::hierarchy::pem_block("CERTIFICATE", &record.certificate.der);
    // Leaf, then intermediates: at most 5 certificates.
    for cert in intermediates.iter().take(4) {
        pem.push_str(&crate::issuer::hierarchy::pem_block("CERTIFICATE", cert));
    }
    let mut response = pem.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pem-certificate-chain"),
    );
    let url = format!("{}/acme/cert/{serial_hex}", auth.base);
    for other in (0..chains.len()).filter(|i| *i != index) {
        let link = match other {
            0 => format!("<{url}>;rel=\"alternate\""),
            n => format!("<{url}/{n}>;rel=\"alternate\""),
        };
        response
            .headers_mut()
            .append(header::LINK, header_value(&link)?);
    }
    Ok(response)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(super) async fn revoke_certificate(
    State(state): State<AcmeState>,
    req: AcmePost,
) -> Result<Response> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let auth = state.verify(&req, Signer::Either).await?;
    let payload: Revoke = auth.json()?;
    let der = b64url_decode(&payload.certificate)
        .ok_or_else(|| AcmeError::malformed("certificate is not base64url"))?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|_| AcmeError::malformed("certificate is not valid DER"))?;
    let reason = payload.reason.unwrap_or(0);
    if ![0, 1, 3, 4, 5, 9].contains(&reason) {
        return Err(AcmeError::new(
            ProblemType::BadRevocationReason,
            format!("revocation reason {reason} is not accepted (0, 1, 3, 4, 5, 9)"),
        ));
    }
    let serial = serial_bytes(cert.raw_serial());
    let record = state.inner.store.certificate_by_serial(&serial).await?;
    let Some(record) = record.filter(|r| r.certificate.der == der) else {
        return Err(AcmeError::not_found("certificate issued by this CA"));
    };
    match (&auth.account, &auth.jwk) {
        (Some(account), _) => {
            if record.certificate.requester.identity != account_url(&auth.base, &account.id) {
                return Err(AcmeError::unauthorized(
                    "the certificate was not issued to this account",
                ));
            }
        }
        (None, Some(jwk)) => {
            let spki = crate::issuer::SubjectPublicKey::from_spki_der(cert.public_key().raw)
                .map_err(|e| AcmeError::malformed(e.to_string()))?;
            let cert_tp = Jwk::from_spki(&spki).and_then(|j| j.thumbprint().ok());
            if cert_tp.as_deref() != Some(jwk.thumbprint()?.as_str()) {
                return Err(AcmeError::unauthorized(
                    "the JWS key is not the certificate's key",
                ));
            }
        }
        (None, None) => return Err(AcmeError::malformed("revocation must be signed")),
    }
    if record.revoked_at.is_some() || !state.inner.store.revoke(&serial, now(), reason).await? {
        return Err(AcmeError::new(
            ProblemType::AlreadyRevoked,
            "the certificate is already revoked",
        ));
    }
    state.inner.crl.invalidate();
    tracing::info!(serial = %crate::issuer::hierarchy::hex(&serial), reason, "certificate revoked via ACME");
    Ok(StatusCode::OK.into_response())
}

/// RFC 9773 renewal information: a window at 2/3 of the lifetime (1/2 for certificates of
/// under 10 days), now for revoked certificates, and a `Retry-After` scaled to the lifetime.
pub(super) async fn renewal_info(
    State(state): State<AcmeState>,
    Path(id): Path<String>,
) -> Result<Response> {
    let (aki, serial) = parse_cert_id(&id)
        .ok_or_else(|| AcmeError::malformed("not an ARI certificate identifier"))?;
    let record = state
        .inner
        .store
        .certificate_by_serial(&serial_bytes(&serial))
        .await?
        .ok_or_else(|| AcmeError::not_found("certificate"))?;
    if crate::issuer::hierarchy::hex(&aki) != record.certificate.issuer_id {
        return Err(AcmeError::not_found("certificate"));
    }
    let c = &record.certificate;
    let lifetime = (c.not_after - c.not_before).max(1);
    let (start, end) = if record.revoked_at.is_some() {
        let t = now();
        (t - 3600, t)
    } else {
        let center = if lifetime < 10 * 86_400 {
            c.not_before + lifetime / 2
        } else {
            c.not_before + lifetime * 2 / 3
        };
        let half_width = (lifetime / 100).max(30);
        (center - half_width, center + half_width)
    };
    let retry_after = u64::try_from((lifetime / 100).clamp(60, 6 * 3600)).unwrap_or(3600);
    let response = respond(
        StatusCode::OK,
        None,
        json!({"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}),
    )?;
    Ok(with_retry_after(response, retry_after))
}
