//! PKI mounts: Vault's PKI secrets engine paths over our issuer. This module translates: it reads
//! Vault's request fields into a [`SignRequest`], lets [`crate::policy::role`] decide what the
//! role grants, has [`crate::issuer::Issuance`] sign and record it, and writes Vault's response.
//!
//! Public (Vault's unauthenticated PKI paths): the CA certificate and chain, CRLs, `cert/:serial`,
//! issuer certificates. Everything else needs a token whose policy allows it.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ca_store::{ExpiryQuery, Protocol, Requester};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::pki_issuers;
use super::routes::{Existence, Route, ops, public, token};
use super::values::{bool_field, duration_field, int_field, list_field, string_field};
use super::{Call, Operation, VaultError, VaultState, envelope, list_response, no_content};
use crate::auth::Authorized;
use crate::issuer::hierarchy::{pem_block, to_pem};
use crate::issuer::{IssueError, SubjectPublicKey, csr, keys};
use crate::policy::role::{Context, Mode, Role, SignRequest};

const ROLE_KIND: &str = "pki_role";
const ROLE: Option<Existence> = Some(Existence {
    kind: ROLE_KIND,
    mount: None,
});

/// The routes of every PKI mount, most specific first.
pub static ROUTES: &[Route] = &[
    public!("ca", ops::READ, ca_der),
    public!("ca/pem", ops::READ, ca_pem),
    public!("ca_chain", ops::READ, ca_chain),
    public!("cert/ca", ops::READ, cert_ca),
    public!("cert/ca_chain", ops::READ, cert_ca_chain),
    public!("cert/ca/raw", ops::READ, ca_der),
    public!("cert/ca/raw/pem", ops::READ, ca_pem),
    public!("cert/crl", ops::READ, cert_crl),
    public!("crl", ops::READ, crl_der),
    public!("crl/pem", ops::READ, crl_pem),
    public!("cert/+", ops::READ, cert),
    public!("cert/+/raw", ops::READ, cert_raw),
    public!("cert/+/raw/pem", ops::READ, cert_raw_pem),
    public!("issuers", ops::LIST, pki_issuers::list),
    public!("issuer/+/json", ops::READ, issuer_json),
    public!("issuer/+/pem", ops::READ, issuer_pem),
    public!("issuer/+/der", ops::READ, issuer_der),
    public!("issuer/+/crl", ops::READ, issuer_crl_der),
    public!("issuer/+/crl/der", ops::READ, issuer_crl_der),
    public!("issuer/+/crl/pem", ops::READ, issuer_crl_pem),
    token!("issuer/+", ops::CRUD, pki_issuers::issuer),
    token!("certs", ops::LIST, certs),
    token!("certs/revoked", ops::LIST, pki_issuers::revoked),
    token!("crl/rotate", ops::READ, pki_issuers::rotate_crl),
    token!(
        "config/issuers",
        ops::READ_WRITE,
        pki_issuers::config_issuers
    ),
    token!("config/urls", ops::READ_WRITE, pki_issuers::config_urls),
    token!("config/crl", ops::READ_WRITE, pki_issuers::config_crl),
    token!(
        "root/sign-intermediate",
        ops::WRITE,
        pki_issuers::sign_intermediate
    ),
    token!(
        "issuer/+/sign-intermediate",
        ops::WRITE,
        pki_issuers::sign_intermediate
    ),
    token!(
        "intermediate/generate/+",
        ops::WRITE,
        pki_issuers::generate_intermediate
    ),
    token!(
        "intermediate/set-signed",
        ops::WRITE,
        pki_issuers::set_signed
    ),
    token!("roles", ops::LIST, list_roles),
    token!("roles/+", ops::CRUD, role, ROLE),
    token!("sign/+", ops::WRITE, sign),
    token!("issue/+", ops::WRITE, issue),
    token!("sign-verbatim", ops::WRITE, sign_verbatim),
    token!("sign-verbatim/+", ops::WRITE, sign_verbatim),
    token!("issuer/+/sign/+", ops::WRITE, issuer_sign),
    token!("issuer/+/issue/+", ops::WRITE, issuer_issue),
    token!("issuer/+/sign-verbatim", ops::WRITE, issuer_sign_verbatim),
    token!("issuer/+/sign-verbatim/+", ops::WRITE, issuer_sign_verbatim),
    token!("revoke", ops::WRITE, revoke),
    token!("tidy", ops::WRITE, tidy),
];

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn colon_hex(serial: &[u8]) -> String {
    crate::issuer::serial::to_colon_hex(serial)
}

fn parse_serial(s: &str) -> Option<Vec<u8>> {
    crate::issuer::serial::from_hex(s)
}

fn raw(content_type: &'static str, body: Vec<u8>) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn chain_pems(state: &VaultState) -> Vec<String> {
    state
        .issuance
        .ca()
        .chain()
        .iter()
        .map(|c| pem_block("CERTIFICATE", c))
        .collect()
}

// --- public reads --------------------------------------------------------------------------------

async fn ca_der(state: &VaultState, _: &Call) -> Result<Response, VaultError> {
    Ok(raw(
        "application/pkix-cert",
        state.issuance.ca().chain()[0].to_vec(),
    ))
}

async fn ca_pem(state: &VaultState, _: &Call) -> Result<Response, VaultError> {
    Ok(raw(
        "application/pem-certificate-chain",
        chain_pems(state).swap_remove(0).into_bytes(),
    ))
}

async fn ca_chain(state: &VaultState, _: &Call) -> Result<Response, VaultError> {
    Ok(raw(
        "application/pkix-cert",
        to_pem(state.issuance.ca().chain()).into_bytes(),
    ))
}

async fn cert_ca(state: &VaultState, _: &Call) -> Result<Response, VaultError> {
    Ok(envelope(
        Some(json!({"certificate": chain_pems(state)[0], "revocation_time": 0})),
        vec![],
        None,
    ))
}

async fn cert_ca_chain(state: &VaultState, _: &Call) -> Result<Response, VaultError> {
    Ok(envelope(
        Some(
            json!({"certificate": to_pem(state.issuance.ca().chain()), "ca_chain": chain_pems(state)}),
        ),
        vec![],
        None,
    ))
}

async fn crl(state: &VaultState) -> Result<Vec<u8>, VaultError> {
    crl_of(state, &state.issuance.ca()).await
}

/// One issuer's complete CRL.
async fn crl_of(
    state: &VaultState,
    ca: &crate::issuer::CertificateAuthority,
) -> Result<Vec<u8>, VaultError> {
    state
        .crl
        .der(ca, &state.store, None)
        .await
        .map_err(|e| match e {
            crate::http::crl::CrlError::Store(e) => VaultError::from(e),
            e => VaultError::internal("building the CRL", e),
        })
}

async fn cert_crl(state: &VaultState, _: &Call) -> Result<Response, VaultError> {
    let pem = pem_block("X509 CRL", &crl(state).await?);
    Ok(envelope(
        Some(json!({"certificate": pem, "revocation_time": 0})),
        vec![],
        None,
    ))
}

async fn crl_der(state: &VaultState, _: &Call) -> Result<Response, VaultError> {
    Ok(raw("application/pkix-crl", crl(state).await?))
}

async fn crl_pem(state: &VaultState, _: &Call) -> Result<Response, VaultError> {
    Ok(raw(
        "application/x-pem-file",
        pem_block("X509 CRL", &crl(state).await?).into_bytes(),
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CertForm {
    Envelope,
    Der,
    Pem,
}

async fn cert(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    read_cert(state, call.param(0), CertForm::Envelope).await
}

async fn cert_raw(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    read_cert(state, call.param(0), CertForm::Der).await
}

async fn cert_raw_pem(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    read_cert(state, call.param(0), CertForm::Pem).await
}

async fn read_cert(
    state: &VaultState,
    serial: &str,
    form: CertForm,
) -> Result<Response, VaultError> {
    if serial == "ca_chain" {
        return Ok(envelope(
            Some(json!({"certificate": to_pem(state.issuance.ca().chain())})),
            vec![],
            None,
        ));
    }
    let bytes = parse_serial(serial).ok_or_else(|| {
        VaultError::bad_request(format!(
            "invalid serial number {:?}",
            crate::policy::shorten(serial)
        ))
    })?;
    let record = state
        .store
        .certificate_by_serial(&bytes)
        .await?
        .ok_or_else(VaultError::not_found)?;
    let der = record.certificate.der.clone();
    if der.is_empty() {
        // Trimmed by retention (tidy): the ledger row remains for reports, the certificate does not.
        return Err(VaultError::not_found());
    }
    match form {
        CertForm::Der => return Ok(raw("application/pkix-cert", der)),
        CertForm::Pem => {
            return Ok(raw(
                "application/pem-certificate-chain",
                pem_block("CERTIFICATE", &der).into_bytes(),
            ));
        }
        CertForm::Envelope => {}
    }
    let revoked = record.revoked_at.unwrap_or(0);
    let rfc = record
        .revoked_at
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    let mut body = json!({
        "certificate": pem_block("CERTIFICATE", &der), "revocation_time": revoked,
        "revocation_time_rfc3339": rfc.unwrap_or_default(),
    });
    // As Vault: the issuer is named for revoked certificates (whose CRL lists them).
    if record.revoked_at.is_some() {
        body["issuer_id"] = json!(record.certificate.issuer_id);
    }
    Ok(envelope(Some(body), vec![], None))
}

/// The issuer a path's `issuer/<ref>` names.
fn referenced(
    state: &VaultState,
    call: &Call,
) -> Result<std::sync::Arc<crate::issuer::CertificateAuthority>, VaultError> {
    let set = state.issuance.issuers().current();
    Ok(std::sync::Arc::clone(
        &pki_issuers::resolve(&set, call.param(0))?.ca,
    ))
}

async fn issuer_json(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    let set = state.issuance.issuers().current();
    let m = pki_issuers::resolve(&set, call.param(0))?;
    let chain: Vec<String> =
        m.ca.chain()
            .iter()
            .map(|c| pem_block("CERTIFICATE", c))
            .collect();
    Ok(envelope(
        Some(json!({
            "certificate": chain[0], "ca_chain": chain, "issuer_id": m.ca.issuer_id(),
            "issuer_name": m.name.clone().unwrap_or_default(),
        })),
        vec![],
        None,
    ))
}

async fn issuer_pem(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    let ca = referenced(state, call)?;
    Ok(raw(
        "application/pem-certificate-chain",
        pem_block("CERTIFICATE", &ca.chain()[0]).into_bytes(),
    ))
}

async fn issuer_der(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    let ca = referenced(state, call)?;
    Ok(raw("application/pkix-cert", ca.chain()[0].to_vec()))
}

async fn issuer_crl_der(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    let ca = referenced(state, call)?;
    Ok(raw("application/pkix-crl", crl_of(state, &ca).await?))
}

async fn issuer_crl_pem(state: &VaultState, call: &Call) -> Result<Response, VaultError> {
    let ca = referenced(state, call)?;
    let pem = pem_block("X509 CRL", &crl_of(state, &ca).await?);
    Ok(raw("application/x-pem-file", pem.into_bytes()))
}

// --- token routes ----------------------------------------------------------------------------------

async fn certs(state: &VaultState, _: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let mut query = ExpiryQuery {
        limit: 10_000,
        include_revoked: true,
        origin: Some(ca_store::Origin::Issued),
        ..Default::default()
    };
    let mut keys: Vec<String> = Vec::new();
    loop {
        let rows = state.store.expiring(&query).await?;
        let Some(last) = rows.last() else { break };
        query.after = Some((last.certificate.not_after, last.id));
        keys.extend(rows.iter().map(|r| colon_hex(&r.certificate.serial)));
    }
    keys.sort();
    list_response(keys)
}

async fn list_roles(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    list_response(state.store.object_names(ROLE_KIND, &call.mount).await?)
}

/// The role fields [`update_role`] reads.
const ROLE_FIELDS: &[&str] = &[
    "ttl",
    "max_ttl",
    "allow_localhost",
    "allowed_domains",
    "allow_bare_domains",
    "allow_subdomains",
    "allow_glob_domains",
    "allow_wildcard_certificates",
    "allow_any_name",
    "enforce_hostnames",
    "allow_ip_sans",
    "allowed_uri_sans",
    "allowed_other_sans",
    "server_flag",
    "client_flag",
    "ext_key_usage",
    "key_type",
    "key_bits",
    "require_cn",
    "use_csr_common_name",
    "use_csr_sans",
    "not_before_duration",
    "organization",
    "ou",
    "country",
    "locality",
    "province",
    "no_store",
    "profile",
    "spiffe_from_identity",
    "trust_domain",
];

/// Applies the fields present in `data` (Vault's loose forms) to a role.
fn update_role(role: &mut Role, data: &Map<String, Value>) -> Result<(), VaultError> {
    macro_rules! b {
        ($($f:ident),*) => { $( role.$f = bool_field(data, stringify!($f), role.$f)?; )* };
    }
    macro_rules! l {
        ($($f:ident),*) => { $( if data.contains_key(stringify!($f)) { role.$f = list_field(data, stringify!($f)); } )* };
    }
    macro_rules! d {
        ($($f:ident),*) => { $( if let Some(v) = duration_field(data, stringify!($f))? { role.$f = v.as_secs(); } )* };
    }
    macro_rules! s {
        ($($f:ident),*) => { $( if data.contains_key(stringify!($f)) { role.$f = string_field(data, stringify!($f)); } )* };
    }
    b!(
        allow_localhost,
        allow_bare_domains,
        allow_subdomains,
        allow_glob_domains,
        allow_wildcard_certificates,
        allow_any_name,
        enforce_hostnames,
        allow_ip_sans,
        server_flag,
        client_flag,
        require_cn,
        use_csr_common_name,
        use_csr_sans,
        no_store,
        spiffe_from_identity
    );
    l!(
        allowed_domains,
        allowed_uri_sans,
        allowed_other_sans,
        ext_key_usage,
        organization,
        ou,
        country,
        locality,
        province
    );
    d!(ttl, max_ttl, not_before_duration);
    s!(key_type, profile, trust_domain);
    role.key_bits = int_field(data, "key_bits", role.key_bits)?;
    role.validate()?;
    Ok(())
}

fn role_json(role: &Role) -> Value {
    let mut v = serde_json::to_value(role).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "key_usage".into(),
            json!(["DigitalSignature", "KeyAgreement", "KeyEncipherment"]),
        );
    }
    v
}

async fn load_role(
    state: &VaultState,
    mount: &str,
    name: &str,
) -> Result<Option<Role>, VaultError> {
    if let Some(body) = state.auth.cache.object(ROLE_KIND, mount, name) {
        return serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| VaultError::internal("stored role", e));
    }
    match state.store.object(ROLE_KIND, mount, name).await? {
        Some(body) => {
            state.auth.cache.put_object(ROLE_KIND, mount, name, &body);
            serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| VaultError::internal("stored role", e))
        }
        None => Ok(None),
    }
}

async fn role(state: &VaultState, call: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let (mount, name) = (call.mount.as_str(), call.param(0));
    match call.op {
        Operation::Write => {
            let mut role = match state.store.object(ROLE_KIND, mount, name).await? {
                Some(body) => {
                    serde_json::from_str(&body).map_err(|e| VaultError::internal("role", e))?
                }
                None => Role::default(),
            };
            update_role(&mut role, &call.data)?;
            // As Vault does, unknown parameters are named in a warning (a role copied from Vault
            // carries fields this server has no use for).
            let mut ignored: Vec<&str> = call
                .data
                .keys()
                .map(String::as_str)
                .filter(|k| !ROLE_FIELDS.contains(k))
                .collect();
            ignored.sort_unstable();
            let warnings = if ignored.is_empty() {
                vec![]
            } else {
                vec![format!(
                    "Endpoint ignored these unrecognized parameters: [{}]",
                    ignored.join(" ")
                )]
            };
            let body = serde_json::to_string(&role).map_err(|e| VaultError::internal("role", e))?;
            state
                .store
                .put_object(ROLE_KIND, mount, name, &body, now())
                .await?;
            state.auth.cache.put_object(ROLE_KIND, mount, name, &body);
            Ok(envelope(Some(role_json(&role)), warnings, None))
        }
        Operation::Read => {
            let role = load_role(state, mount, name)
                .await?
                .ok_or_else(VaultError::not_found)?;
            Ok(envelope(Some(role_json(&role)), vec![], None))
        }
        Operation::Delete => {
            state.store.delete_object(ROLE_KIND, mount, name).await?;
            state.auth.cache.forget_object(ROLE_KIND, mount, name);
            no_content()
        }
        Operation::List => Err(VaultError::unsupported()),
    }
}

async fn sign(state: &VaultState, call: &Call, who: &Authorized) -> Result<Response, VaultError> {
    counted(state, call, who, Mode::Sign, Some(call.param(0))).await
}

async fn issue(state: &VaultState, call: &Call, who: &Authorized) -> Result<Response, VaultError> {
    counted(state, call, who, Mode::Issue, Some(call.param(0))).await
}

async fn sign_verbatim(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    let role = (!call.params.is_empty()).then(|| call.param(0));
    counted(state, call, who, Mode::Verbatim, role).await
}

async fn issuer_sign(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    let ca = referenced(state, call)?;
    counted_with(state, call, who, Mode::Sign, Some(call.param(1)), ca).await
}

async fn issuer_issue(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    let ca = referenced(state, call)?;
    counted_with(state, call, who, Mode::Issue, Some(call.param(1)), ca).await
}

async fn issuer_sign_verbatim(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    let ca = referenced(state, call)?;
    let role = (call.params.len() > 1).then(|| call.param(1));
    counted_with(state, call, who, Mode::Verbatim, role, ca).await
}

/// Signs with the default issuer; client errors count as refused issuances
/// (`ca_issuance_total{result="refused"}`).
async fn counted(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
    mode: Mode,
    role_name: Option<&str>,
) -> Result<Response, VaultError> {
    counted_with(state, call, who, mode, role_name, state.issuance.ca()).await
}

/// As [`counted`], with the issuer `issuer/<ref>/…` names.
async fn counted_with(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
    mode: Mode,
    role_name: Option<&str>,
    ca: std::sync::Arc<crate::issuer::CertificateAuthority>,
) -> Result<Response, VaultError> {
    let result = sign_checked(state, call, who, mode, role_name, ca).await;
    if let Err(e) = &result
        && e.status.is_client_error()
    {
        state.issuance.refused(Protocol::Vault, "unknown");
    }
    result
}

/// The request's fields in typed form, and the private key when the CA generates it (`issue`).
fn sign_request(
    data: &Map<String, Value>,
    mode: Mode,
    role: &Role,
) -> Result<(SignRequest, Option<String>), VaultError> {
    let (public_key, private_key_pem, csr) = match mode {
        Mode::Sign | Mode::Verbatim => {
            let pem = string_field(data, "csr");
            if pem.trim().is_empty() {
                return Err(VaultError::bad_request("missing csr"));
            }
            let csr = csr::parse_pem(&pem)
                .map_err(|e| VaultError::bad_request(format!("error parsing CSR: {e}")))?;
            (csr.public_key.clone(), None, Some(csr))
        }
        Mode::Issue => {
            let key_type = match string_field(data, "key_type").as_str() {
                "" => role.key_type.clone(),
                k => k.to_owned(),
            };
            if key_type == "rsa" {
                return Err(VaultError::bad_request(
                    "RSA key generation is not supported; use key_type=ec, or sign a CSR",
                ));
            }
            let key = keys::generate_p256().map_err(|e| VaultError::internal("keygen", e))?;
            let spki = SubjectPublicKey::from_spki_der(
                &rcgen::PublicKeyData::subject_public_key_info(&key),
            )
            .map_err(|e| VaultError::internal("keygen", e))?;
            (spki, Some(keys::pkcs8_pem(&key)), None)
        }
    };
    let not_after = match string_field(data, "not_after") {
        s if s.is_empty() => None,
        s => Some(
            OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| VaultError::bad_request("not_after must be an RFC 3339 timestamp"))?,
        ),
    };
    Ok((
        SignRequest {
            mode,
            public_key,
            csr,
            common_name: Some(string_field(data, "common_name")).filter(|s| !s.is_empty()),
            alt_names: list_field(data, "alt_names"),
            ip_sans: list_field(data, "ip_sans"),
            uri_sans: list_field(data, "uri_sans"),
            other_sans: list_field(data, "other_sans"),
            exclude_cn_from_sans: bool_field(data, "exclude_cn_from_sans", false)?,
            ttl: duration_field(data, "ttl")?,
            not_after,
        },
        private_key_pem,
    ))
}

async fn sign_checked(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
    mode: Mode,
    role_name: Option<&str>,
    ca: std::sync::Arc<crate::issuer::CertificateAuthority>,
) -> Result<Response, VaultError> {
    let role = match role_name {
        None => Role::verbatim(),
        Some(name) => load_role(state, &call.mount, name).await?.ok_or_else(|| {
            VaultError::bad_request(format!("unknown role: {}", crate::policy::shorten(name)))
        })?,
    };
    let data = &call.data;
    let (request, private_key_pem) = sign_request(data, mode, &role)?;
    let caller = who.caller();
    let decision = crate::policy::role::decide(
        &role,
        &Context {
            trust_domain: &state.config.trust_domain,
            workload: caller.workload(),
            settings: ca.settings(),
        },
        request,
    )?;
    let mut warnings = decision.warnings;
    let mut request = decision.request;
    // A tuned mount maximum (`secrets tune -max-lease-ttl`) bounds every certificate it signs.
    if let Some(max) = super::sys::max_lease_ttl(state, &call.mount).await? {
        let max = Duration::from_secs(max);
        let wanted = request
            .lifetime
            .unwrap_or(ca.settings().lifetime(request.profile).default);
        if wanted > max
            || request
                .not_after
                .is_some_and(|t| t > OffsetDateTime::now_utc() + max)
        {
            warnings.push(format!(
                "TTL is greater than the mount's max_lease_ttl; truncated to {}",
                crate::duration::format_go(max)
            ));
            request.lifetime = Some(wanted.min(max));
            request.not_after = None;
        }
    }

    let mut requester = Requester::new(Protocol::Vault, caller.display_name.clone());
    requester.namespace = caller.meta("service_account_namespace").map(str::to_owned);
    requester.service_account = caller.meta("service_account_name").map(str::to_owned);
    requester.detail.insert("mount".into(), call.mount.clone());
    if let Some(name) = role_name {
        requester.detail.insert("role".into(), name.to_owned());
    }
    requester
        .detail
        .insert("accessor".into(), caller.accessor.clone());
    if let Some(m) = caller.meta("mount") {
        requester.detail.insert("auth_mount".into(), m.to_owned());
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let signed = state
        .issuance
        .issue_with(&ca, &request, &requester, &request_id)
        .await
        .map_err(|e| match e {
            IssueError::Rejected(v) => VaultError::bad_request(v.to_string()),
            IssueError::Csr(e) => VaultError::bad_request(e.to_string()),
            e if e.is_transient() => VaultError::unavailable(e.to_string()),
            e => VaultError::internal("issuance failed", e),
        })?;
    warnings.extend(signed.warnings.iter().cloned());

    let chain: Vec<String> = signed
        .chain
        .iter()
        .map(|c| pem_block("CERTIFICATE", c))
        .collect();
    let cert_pem = pem_block("CERTIFICATE", &signed.der);
    let certificate = match string_field(data, "format").as_str() {
        "der" => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&signed.der)
        }
        "pem_bundle" => format!("{cert_pem}{}", chain[0]),
        _ => cert_pem,
    };
    let mut body = json!({
        "certificate": certificate,
        "issuing_ca": chain[0],
        "ca_chain": chain,
        "serial_number": colon_hex(&signed.serial),
        "expiration": signed.not_after.unix_timestamp(),
        "not_before": signed.not_before.unix_timestamp(),
    });
    if let Some(key) = private_key_pem {
        body["private_key"] = json!(key);
        body["private_key_type"] = json!("ec");
    }
    Ok(envelope(Some(body), warnings, None))
}

async fn revoke(state: &VaultState, call: &Call, who: &Authorized) -> Result<Response, VaultError> {
    let serial = if let Some(s) = call
        .data
        .get("serial_number")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        parse_serial(s).ok_or_else(|| {
            VaultError::bad_request(format!(
                "invalid serial number {:?}",
                crate::policy::shorten(s)
            ))
        })?
    } else {
        let pem = string_field(&call.data, "certificate");
        let der = crate::issuer::hierarchy::parse_certs(&pem)
            .ok()
            .and_then(|c| c.into_iter().next())
            .ok_or_else(|| VaultError::bad_request("serial_number or certificate is required"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| VaultError::bad_request("certificate is not valid"))?;
        cert.raw_serial()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect()
    };
    let record = state
        .store
        .certificate_by_serial(&serial)
        .await?
        .ok_or_else(|| {
            VaultError::bad_request(format!(
                "certificate with serial {} not found",
                colon_hex(&serial)
            ))
        })?;
    let at = match record.revoked_at {
        Some(t) => t,
        None => {
            let t = now();
            state.store.revoke(&serial, t, 0).await?;
            state.crl.invalidate();
            tracing::info!(serial = %colon_hex(&serial), by = %who.caller().display_name, "certificate revoked via the Vault API");
            t
        }
    };
    let rfc = OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Ok(envelope(
        Some(json!({"revocation_time": at, "revocation_time_rfc3339": rfc, "state": "revoked"})),
        vec![],
        None,
    ))
}

/// `tidy`: applies ledger retention — certificates expired for longer than `safety_buffer`
/// (default 72h) lose their DER but keep their metadata row, so expiry reports still see them.
/// Runs in the background and answers 202, as Vault does.
async fn tidy(state: &VaultState, call: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let buffer =
        duration_field(&call.data, "safety_buffer")?.unwrap_or(Duration::from_secs(72 * 3600));
    let cutoff = now() - i64::try_from(buffer.as_secs()).unwrap_or(i64::MAX / 2);
    if bool_field(&call.data, "tidy_cert_store", true)? {
        let store = std::sync::Arc::clone(&state.store);
        tokio::spawn(async move {
            match store.forget_expired_der(cutoff).await {
                Ok(n) => tracing::info!(
                    trimmed = n,
                    "tidy: dropped the DER of certificates expired before the safety buffer"
                ),
                Err(e) => tracing::error!(error = %e, "tidy failed"),
            }
        });
    }
    let mut response = envelope(
        None,
        vec!["Tidy operation successfully started. Any information from the operation will be printed to the server's log.".into()],
        None,
    );
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_in_both_spellings() {
        assert_eq!(parse_serial("0a:ff:01"), Some(vec![0x0a, 0xff, 0x01]));
        assert_eq!(parse_serial("0a-ff-01"), Some(vec![0x0a, 0xff, 0x01]));
        assert_eq!(parse_serial("xyz"), None);
    }

    #[test]
    fn role_fields_in_vaults_loose_forms() {
        let mut role = Role::default();
        let data = json!({"allowed_domains": "a.test, b.test", "allow_subdomains": "true", "max_ttl": "72h", "key_bits": "384", "key_type": "ec"});
        update_role(&mut role, data.as_object().expect("object")).expect("valid");
        assert_eq!(role.allowed_domains, vec!["a.test", "b.test"]);
        assert!(role.allow_subdomains);
        assert_eq!(role.max_ttl, 72 * 3600);
        assert_eq!((role.key_type.as_str(), role.key_bits), ("ec", 384));
        let bad = json!({"key_type": "dsa"});
        assert!(update_role(&mut role, bad.as_object().expect("object")).is_err());
    }
}
