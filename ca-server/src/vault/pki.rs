//! PKI mounts: Vault's role semantics over our issuer. A role decides which names, keys and
//! lifetimes a caller may get (Vault's defaults, so existing role definitions behave the same),
//! plus two extensions: a `profile` (e.g. `spiffe`, `ca`) and `spiffe_from_identity`, which gives a
//! workload logged in with its own service-account token exactly
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<name>` and refuses any other URI (403).

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ca_store::{ExpiryQuery, Protocol, Requester};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::auth::{Identity, require_token};
use super::values::{bool_field, duration_field, int_field, list_field, string_field};
use super::{Operation, VaultError, VaultRequest, VaultState, envelope, list_response, require};
use crate::issuer::hierarchy::{pem_block, to_pem};
use crate::issuer::{
    CertificateRequest, IssueError, KeyAlgorithm, Profile, Subject, SubjectPublicKey, csr, keys,
};
use crate::names::normalize_dns_name;
use crate::policy::glob_matches;
use crate::spiffe::SpiffeId;

/// A PKI role with Vault's defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Role {
    ttl: u64,
    max_ttl: u64,
    allow_localhost: bool,
    allowed_domains: Vec<String>,
    allow_bare_domains: bool,
    allow_subdomains: bool,
    allow_glob_domains: bool,
    allow_wildcard_certificates: bool,
    allow_any_name: bool,
    enforce_hostnames: bool,
    allow_ip_sans: bool,
    allowed_uri_sans: Vec<String>,
    allowed_other_sans: Vec<String>,
    server_flag: bool,
    client_flag: bool,
    ext_key_usage: Vec<String>,
    key_type: String,
    key_bits: i64,
    require_cn: bool,
    use_csr_common_name: bool,
    use_csr_sans: bool,
    not_before_duration: u64,
    organization: Vec<String>,
    ou: Vec<String>,
    country: Vec<String>,
    locality: Vec<String>,
    province: Vec<String>,
    no_store: bool,
    profile: String,
    spiffe_from_identity: bool,
    trust_domain: String,
}

impl Default for Role {
    fn default() -> Self {
        Self {
            ttl: 0,
            max_ttl: 0,
            allow_localhost: true,
            allowed_domains: vec![],
            allow_bare_domains: false,
            allow_subdomains: false,
            allow_glob_domains: false,
            allow_wildcard_certificates: true,
            allow_any_name: false,
            enforce_hostnames: true,
            allow_ip_sans: true,
            allowed_uri_sans: vec![],
            allowed_other_sans: vec![],
            server_flag: true,
            client_flag: true,
            ext_key_usage: vec![],
            key_type: "rsa".into(),
            key_bits: 0,
            require_cn: true,
            use_csr_common_name: true,
            use_csr_sans: true,
            not_before_duration: 30,
            organization: vec![],
            ou: vec![],
            country: vec![],
            locality: vec![],
            province: vec![],
            no_store: false,
            profile: String::new(),
            spiffe_from_identity: false,
            trust_domain: String::new(),
        }
    }
}

impl Role {
    /// Applies the fields present in `data` (strings, lists and durations in Vault's loose forms).
    fn update(&mut self, data: &Map<String, Value>) -> Result<(), VaultError> {
        macro_rules! b {
            ($f:ident) => {
                self.$f = bool_field(data, stringify!($f), self.$f)?;
            };
        }
        macro_rules! l {
            ($f:ident) => {
                if data.contains_key(stringify!($f)) {
                    self.$f = list_field(data, stringify!($f));
                }
            };
        }
        macro_rules! d {
            ($f:ident) => {
                if let Some(v) = duration_field(data, stringify!($f))? {
                    self.$f = v.as_secs();
                }
            };
        }
        b!(allow_localhost);
        b!(allow_bare_domains);
        b!(allow_subdomains);
        b!(allow_glob_domains);
        b!(allow_wildcard_certificates);
        b!(allow_any_name);
        b!(enforce_hostnames);
        b!(allow_ip_sans);
        b!(server_flag);
        b!(client_flag);
        b!(require_cn);
        b!(use_csr_common_name);
        b!(use_csr_sans);
        b!(no_store);
        b!(spiffe_from_identity);
        l!(allowed_domains);
        l!(allowed_uri_sans);
        l!(allowed_other_sans);
        l!(ext_key_usage);
        l!(organization);
        l!(ou);
        l!(country);
        l!(locality);
        l!(province);
        d!(ttl);
        d!(max_ttl);
        d!(not_before_duration);
        if data.contains_key("key_type") {
            self.key_type = string_field(data, "key_type");
        }
        self.key_bits = int_field(data, "key_bits", self.key_bits)?;
        if data.contains_key("profile") {
            self.profile = string_field(data, "profile");
        }
        if data.contains_key("trust_domain") {
            self.trust_domain = string_field(data, "trust_domain");
        }
        if !["rsa", "ec", "ed25519", "any"].contains(&self.key_type.as_str()) {
            return Err(VaultError::bad_request(format!(
                "invalid key_type {:?}",
                self.key_type
            )));
        }
        if !self.profile.is_empty() {
            self.profile
                .parse::<Profile>()
                .map_err(|e| VaultError::bad_request(e.to_string()))?;
        }
        Ok(())
    }

    fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert(
                "key_usage".into(),
                json!(["DigitalSignature", "KeyAgreement", "KeyEncipherment"]),
            );
        }
        v
    }

    /// Vault's name rules for one DNS name (or a CN that should be a host name).
    fn allows_name(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        if self.enforce_hostnames && normalize_dns_name(&lower).is_none() {
            return false;
        }
        if lower.starts_with("*.") && !self.allow_wildcard_certificates {
            return false;
        }
        if self.allow_any_name {
            return true;
        }
        if self.allow_localhost
            && (lower == "localhost" || lower == "localdomain" || lower.ends_with(".localhost"))
        {
            return true;
        }
        let base = lower.strip_prefix("*.").unwrap_or(&lower);
        self.allowed_domains.iter().any(|d| {
            let d = d.to_ascii_lowercase();
            (self.allow_bare_domains && lower == d)
                || (self.allow_subdomains
                    && (base.ends_with(&format!(".{d}")) || (lower.starts_with("*.") && base == d)))
                || (self.allow_glob_domains && d.contains('*') && glob_matches(&d, &lower))
        })
    }

    fn check_key(&self, alg: KeyAlgorithm) -> Result<(), VaultError> {
        let (kind, bits) = match alg {
            KeyAlgorithm::Rsa(bits) => ("rsa", bits as i64),
            KeyAlgorithm::EcdsaP256 => ("ec", 256),
            KeyAlgorithm::EcdsaP384 => ("ec", 384),
            KeyAlgorithm::Ed25519 => ("ed25519", 0),
        };
        if self.key_type != "any" && self.key_type != kind {
            return Err(VaultError::bad_request(format!(
                "role requires keys of type {}",
                self.key_type
            )));
        }
        let min = match (self.key_type.as_str(), kind) {
            ("any", "rsa") | ("rsa", _) => self.key_bits.max(2048),
            ("ec", _) => self.key_bits.max(224),
            _ => 0,
        };
        if kind != "ed25519" && bits < min {
            return Err(VaultError::bad_request(format!(
                "role requires a minimum of a {min}-bit key, but {bits} was provided"
            )));
        }
        Ok(())
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

async fn load_role(state: &VaultState, mount: &str, name: &str) -> Result<Role, VaultError> {
    match state.cached_object("pki_role", mount, name).await? {
        Some(body) => {
            serde_json::from_str(&body).map_err(|e| VaultError::internal("stored role", e))
        }
        None => Err(VaultError::bad_request(format!("unknown role: {name}"))),
    }
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

/// Routes below a PKI mount.
pub async fn route(
    state: &VaultState,
    req: &VaultRequest,
    mount: &str,
    rest: &str,
) -> Result<Response, VaultError> {
    let ca = state.issuance.ca();
    let chain_pems: Vec<String> = ca
        .chain()
        .iter()
        .map(|c| pem_block("CERTIFICATE", c))
        .collect();
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["ca"] | ["cert", "ca", "raw"] => Ok(raw("application/pkix-cert", ca.chain()[0].to_vec())),
        ["ca", "pem"] | ["cert", "ca", "raw", "pem"] => Ok(raw(
            "application/pem-certificate-chain",
            chain_pems[0].clone().into_bytes(),
        )),
        ["ca_chain"] => Ok(raw(
            "application/pkix-cert",
            to_pem(ca.chain()).into_bytes(),
        )),
        ["cert", "ca"] => Ok(envelope(
            Some(json!({"certificate": chain_pems[0], "revocation_time": 0})),
            vec![],
            None,
        )),
        ["cert", "ca_chain"] => Ok(envelope(
            Some(json!({"certificate": to_pem(ca.chain()), "ca_chain": chain_pems})),
            vec![],
            None,
        )),
        ["issuers"] => {
            require(req.op, &[Operation::List])?;
            let id = ca.issuer_id().to_owned();
            Ok(envelope(
                Some(
                    json!({"keys": [id.clone()], "key_info": {id: {"issuer_name": "default", "is_default": true}}}),
                ),
                vec![],
                None,
            ))
        }
        ["issuer", reference] | ["issuer", reference, "json"] => {
            if *reference != "default" && *reference != ca.issuer_id() {
                return Err(VaultError::bad_request(format!(
                    "unable to find PKI issuer for reference: {reference}"
                )));
            }
            Ok(envelope(
                Some(json!({
                    "certificate": chain_pems[0], "ca_chain": chain_pems, "issuer_id": ca.issuer_id(),
                    "issuer_name": "default", "key_id": ca.issuer_id(), "leaf_not_after_behavior": "err",
                    "usage": "read-only,issuing-certificates,crl-signing",
                })),
                vec![],
                None,
            ))
        }
        ["cert", "crl"] => {
            let pem = pem_block("X509 CRL", &crl(state).await?);
            Ok(envelope(
                Some(json!({"certificate": pem, "revocation_time": 0})),
                vec![],
                None,
            ))
        }
        ["cert", serial] => read_cert(state, serial, false, false).await,
        ["cert", serial, "raw"] => read_cert(state, serial, true, false).await,
        ["cert", serial, "raw", "pem"] => read_cert(state, serial, true, true).await,
        ["certs"] => {
            require(req.op, &[Operation::List])?;
            require_token(state, req).await?;
            let mut query = ExpiryQuery {
                limit: 10_000,
                include_revoked: true,
                issuer_id: Some(ca.issuer_id().to_owned()),
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
        ["roles"] => {
            require(req.op, &[Operation::List])?;
            require_token(state, req).await?;
            list_response(state.store.object_names("pki_role", mount).await?)
        }
        ["roles", name] => roles(state, req, mount, name).await,
        ["sign", role] | ["issuer", _, "sign", role] => {
            sign(state, req, mount, role, Mode::Sign).await
        }
        ["issue", role] | ["issuer", _, "issue", role] => {
            sign(state, req, mount, role, Mode::Issue).await
        }
        ["sign-verbatim"] | ["issuer", _, "sign-verbatim"] => {
            sign(state, req, mount, "", Mode::Verbatim).await
        }
        ["sign-verbatim", role] | ["issuer", _, "sign-verbatim", role] => {
            sign(state, req, mount, role, Mode::Verbatim).await
        }
        ["revoke"] => revoke(state, req).await,
        ["tidy"] => tidy(state, req).await,
        ["crl"] | ["issuer", _, "crl"] | ["issuer", _, "crl", "der"] => {
            Ok(raw("application/pkix-crl", crl(state).await?))
        }
        ["crl", "pem"] | ["issuer", _, "crl", "pem"] => Ok(raw(
            "application/x-pem-file",
            pem_block("X509 CRL", &crl(state).await?).into_bytes(),
        )),
        _ => Err(VaultError::no_route(&req.path)),
    }
}

async fn roles(
    state: &VaultState,
    req: &VaultRequest,
    mount: &str,
    name: &str,
) -> Result<Response, VaultError> {
    require_token(state, req).await?;
    match req.op {
        Operation::Write => {
            let mut role = match state.store.object("pki_role", mount, name).await? {
                Some(body) => serde_json::from_str(&body).unwrap_or_default(),
                None => Role::default(),
            };
            role.update(&req.data)?;
            let body = serde_json::to_string(&role).map_err(|e| VaultError::internal("role", e))?;
            state
                .store
                .put_object("pki_role", mount, name, &body, now())
                .await?;
            state.cache.put_object("pki_role", mount, name, &body);
            Ok(envelope(Some(role.to_json()), vec![], None))
        }
        Operation::Read => {
            let role: Role = match state.store.object("pki_role", mount, name).await? {
                Some(body) => {
                    serde_json::from_str(&body).map_err(|e| VaultError::internal("role", e))?
                }
                None => return Err(VaultError::not_found()),
            };
            Ok(envelope(Some(role.to_json()), vec![], None))
        }
        Operation::Delete => {
            state.store.delete_object("pki_role", mount, name).await?;
            state.cache.forget_object("pki_role", mount, name);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(VaultError::unsupported()),
    }
}

/// `tidy`: applies ledger retention — certificates expired for longer than `safety_buffer`
/// (default 72h) lose their DER but keep their metadata row, so expiry reports still see them.
/// Runs in the background and answers 202, as Vault does.
async fn tidy(state: &VaultState, req: &VaultRequest) -> Result<Response, VaultError> {
    require(req.op, &[Operation::Write])?;
    require_token(state, req).await?;
    let buffer =
        duration_field(&req.data, "safety_buffer")?.unwrap_or(Duration::from_secs(72 * 3600));
    let cutoff = now() - i64::try_from(buffer.as_secs()).unwrap_or(i64::MAX / 2);
    if bool_field(&req.data, "tidy_cert_store", true)? {
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

async fn crl(state: &VaultState) -> Result<Vec<u8>, VaultError> {
    state
        .crl
        .der(state.issuance.ca(), &state.store, None)
        .await
        .map_err(|e| match e {
            crate::http::crl::CrlError::Store(e) => VaultError::from(e),
            e => VaultError::internal("building the CRL", e),
        })
}

async fn read_cert(
    state: &VaultState,
    serial: &str,
    raw_form: bool,
    pem: bool,
) -> Result<Response, VaultError> {
    let ca = state.issuance.ca();
    if *serial == *"ca" || *serial == *"ca_chain" {
        let pem_text = if serial == "ca" {
            pem_block("CERTIFICATE", &ca.chain()[0])
        } else {
            to_pem(ca.chain())
        };
        return Ok(envelope(
            Some(json!({"certificate": pem_text})),
            vec![],
            None,
        ));
    }
    let bytes = parse_serial(serial)
        .ok_or_else(|| VaultError::bad_request(format!("invalid serial number {serial:?}")))?;
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
    if raw_form {
        return Ok(if pem {
            raw(
                "application/pem-certificate-chain",
                pem_block("CERTIFICATE", &der).into_bytes(),
            )
        } else {
            raw("application/pkix-cert", der)
        });
    }
    let revoked = record.revoked_at.unwrap_or(0);
    let rfc = record
        .revoked_at
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    Ok(envelope(
        Some(json!({
            "certificate": pem_block("CERTIFICATE", &der), "revocation_time": revoked,
            "revocation_time_rfc3339": rfc.unwrap_or_default(), "issuer_id": record.certificate.issuer_id,
        })),
        vec![],
        None,
    ))
}

async fn revoke(state: &VaultState, req: &VaultRequest) -> Result<Response, VaultError> {
    require(req.op, &[Operation::Write])?;
    let id = require_token(state, req).await?;
    let serial = if let Some(s) = req
        .data
        .get("serial_number")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        parse_serial(s)
            .ok_or_else(|| VaultError::bad_request(format!("invalid serial number {s:?}")))?
    } else {
        let pem = string_field(&req.data, "certificate");
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
            tracing::info!(serial = %colon_hex(&serial), by = %id.display_name, "certificate revoked via the Vault API");
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sign,
    Issue,
    Verbatim,
}

/// `sign`, `issue` and `sign-verbatim`; client errors count as refused issuances.
async fn sign(
    state: &VaultState,
    req: &VaultRequest,
    mount: &str,
    role_name: &str,
    mode: Mode,
) -> Result<Response, VaultError> {
    let result = sign_checked(state, req, mount, role_name, mode).await;
    if let Err(e) = &result
        && e.status.is_client_error()
    {
        state.issuance.refused(Protocol::Vault, "unknown");
    }
    result
}

async fn sign_checked(
    state: &VaultState,
    req: &VaultRequest,
    mount: &str,
    role_name: &str,
    mode: Mode,
) -> Result<Response, VaultError> {
    require(req.op, &[Operation::Write])?;
    let id = require_token(state, req).await?;
    let role = if role_name.is_empty() {
        Role {
            allow_any_name: true,
            enforce_hostnames: false,
            key_type: "any".into(),
            ..Role::default()
        }
    } else {
        load_role(state, mount, role_name).await?
    };
    let data = &req.data;
    let mut warnings = Vec::new();

    // The key and what the request asks for.
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
    if mode != Mode::Verbatim {
        role.check_key(public_key.algorithm())?;
    }

    let verbatim = mode == Mode::Verbatim;
    let common_name = if verbatim || (role.use_csr_common_name && csr.is_some()) {
        if data.contains_key("common_name")
            && !verbatim
            && !string_field(data, "common_name").is_empty()
        {
            warnings.push("the common_name field was provided but the role is set with \"use_csr_common_name\" set to true".into());
        }
        csr.as_ref().and_then(|c| c.common_name.clone())
    } else {
        Some(string_field(data, "common_name")).filter(|s| !s.is_empty())
    };
    let (mut dns, mut ips, mut uris, mut emails) = if verbatim
        || (role.use_csr_sans && csr.is_some())
    {
        if !string_field(data, "alt_names").is_empty() && !verbatim {
            warnings.push("the alt_names field was provided but the role is set with \"use_csr_sans\" set to true".into());
        }
        let c = csr
            .as_ref()
            .ok_or_else(|| VaultError::bad_request("missing csr"))?;
        (
            c.dns_names.clone(),
            c.ip_addresses.clone(),
            c.uris.clone(),
            c.emails.clone(),
        )
    } else {
        let mut dns = Vec::new();
        let mut emails = Vec::new();
        for n in list_field(data, "alt_names") {
            if n.contains('@') {
                emails.push(n)
            } else {
                dns.push(n)
            }
        }
        let mut ips = Vec::new();
        for s in list_field(data, "ip_sans") {
            ips.push(s.parse::<IpAddr>().map_err(|_| {
                VaultError::bad_request(format!("the value {s:?} is not a valid IP address"))
            })?);
        }
        (dns, ips, list_field(data, "uri_sans"), emails)
    };
    if let Some(c) = &csr
        && !c.unsupported_sans.is_empty()
        && role.allowed_other_sans.is_empty()
    {
        return Err(VaultError::bad_request(format!(
            "requested other SANs are not allowed by this role: {:?}",
            c.unsupported_sans
        )));
    }

    if !verbatim {
        if role.require_cn && common_name.is_none() {
            return Err(VaultError::bad_request(
                "the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false",
            ));
        }
        if let Some(cn) = &common_name {
            if !(cn.contains('@') || role.allows_name(cn) || role.allow_any_name) {
                return Err(VaultError::bad_request(format!(
                    "common name {cn} not allowed by this role"
                )));
            }
            if !bool_field(data, "exclude_cn_from_sans", false)? {
                if cn.contains('@') {
                    if !emails.contains(cn) {
                        emails.push(cn.clone())
                    }
                } else if let Ok(ip) = cn.parse::<IpAddr>() {
                    if !ips.contains(&ip) {
                        ips.push(ip)
                    }
                } else if normalize_dns_name(cn).is_some()
                    && !dns.iter().any(|d| d.eq_ignore_ascii_case(cn))
                {
                    dns.push(cn.clone());
                }
            }
        }
        for name in &dns {
            if !role.allows_name(name) {
                return Err(VaultError::bad_request(format!(
                    "subject alternate name {name} not allowed by this role"
                )));
            }
        }
        if !ips.is_empty() && !role.allow_ip_sans {
            return Err(VaultError::bad_request(format!(
                "IP Subject Alternative Names are not allowed in this role, but was provided {}",
                ips[0]
            )));
        }
    }

    // SPIFFE from identity: the caller's own ID, and no other.
    if role.spiffe_from_identity {
        let expected = spiffe_identity(state, &role, &id)?;
        if uris.iter().any(|u| *u != expected) {
            tracing::info!(requested = ?uris, expected = %expected, "refused a SPIFFE ID that is not the caller's own");
            return Err(VaultError::permission_denied());
        }
        uris = vec![expected];
    } else if !verbatim {
        for uri in &uris {
            if !role.allowed_uri_sans.iter().any(|p| glob_matches(p, uri)) {
                return Err(VaultError::bad_request(
                    if role.allowed_uri_sans.is_empty() {
                        format!(
                            "URI Subject Alternative Names are not allowed in this role, but were provided {uri}"
                        )
                    } else {
                        format!("URI Subject Alternative Name {uri} not allowed by this role")
                    },
                ));
            }
        }
    }

    let profile = if !role.profile.is_empty() {
        role.profile
            .parse()
            .map_err(|e: crate::issuer::profile::UnknownProfile| {
                VaultError::bad_request(e.to_string())
            })?
    } else if role.spiffe_from_identity
        || (dns.is_empty() && ips.is_empty() && uris.len() == 1 && uris[0].starts_with("spiffe://"))
    {
        Profile::Spiffe
    } else {
        match (role.server_flag, role.client_flag) {
            (true, false) => Profile::TlsServer,
            (false, true) => Profile::TlsClient,
            _ => Profile::TlsServerClient,
        }
    };
    let mut request = CertificateRequest::new(public_key, profile);
    request.subject = Subject {
        common_name: if profile == Profile::Spiffe {
            None
        } else {
            common_name.clone()
        },
        organization: role.organization.clone(),
        organizational_unit: role.ou.clone(),
        country: role.country.clone(),
        province: role.province.clone(),
        locality: role.locality.clone(),
    };
    request.dns_names = dns;
    request.ip_addresses = ips;
    request.uris = uris;
    request.emails = emails;
    let max = (role.max_ttl > 0).then(|| Duration::from_secs(role.max_ttl));
    let mut ttl =
        duration_field(data, "ttl")?.or((role.ttl > 0).then(|| Duration::from_secs(role.ttl)));
    if let (Some(t), Some(m)) = (ttl, max)
        && t > m
    {
        warnings.push(format!(
            "TTL \"{}\" is longer than permitted maxTTL \"{}\", so was truncated",
            crate::duration::format_go(t),
            crate::duration::format_go(m)
        ));
        ttl = Some(m);
    }
    request.lifetime =
        ttl.or(max.filter(|m| *m < state.issuance.ca().settings().lifetime(profile).default));
    let not_after = string_field(data, "not_after");
    if !not_after.is_empty() {
        let t = OffsetDateTime::parse(&not_after, &time::format_description::well_known::Rfc3339)
            .map_err(|_| VaultError::bad_request("not_after must be an RFC 3339 timestamp"))?;
        request.not_after = Some(t);
    }
    request.not_before =
        Some(OffsetDateTime::now_utc() - Duration::from_secs(role.not_before_duration));

    let mut requester = Requester::new(Protocol::Vault, id.display_name.clone());
    requester.namespace = id.meta("service_account_namespace").map(str::to_owned);
    requester.service_account = id.meta("service_account_name").map(str::to_owned);
    requester.detail.insert("mount".into(), mount.to_owned());
    if !role_name.is_empty() {
        requester.detail.insert("role".into(), role_name.to_owned());
    }
    requester
        .detail
        .insert("accessor".into(), id.accessor.clone());
    if let Some(m) = id.meta("mount") {
        requester.detail.insert("auth_mount".into(), m.to_owned());
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let signed = state
        .issuance
        .issue(&request, &requester, &request_id)
        .await
        .map_err(|e| match e {
            IssueError::Rejected(m) => VaultError::bad_request(m.to_string()),
            IssueError::Csr(e) => VaultError::bad_request(e.to_string()),
            e if e.is_transient() => VaultError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                errors: vec![e.to_string()],
            },
            e => VaultError::internal("issuance failed", e),
        })?;
    warnings.extend(signed.warnings.iter().cloned());

    let ca = state.issuance.ca();
    let chain: Vec<String> = ca
        .chain()
        .iter()
        .map(|c| pem_block("CERTIFICATE", c))
        .collect();
    let format = string_field(data, "format");
    let cert_pem = pem_block("CERTIFICATE", &signed.der);
    let certificate = match format.as_str() {
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

fn spiffe_identity(state: &VaultState, role: &Role, id: &Identity) -> Result<String, VaultError> {
    let (Some(ns), Some(sa)) = (
        id.meta("service_account_namespace"),
        id.meta("service_account_name"),
    ) else {
        // Only a workload logged in with its own service-account token has an identity.
        return Err(VaultError::permission_denied());
    };
    let td = if role.trust_domain.is_empty() {
        state.config.trust_domain.as_str()
    } else {
        role.trust_domain.as_str()
    };
    SpiffeId::for_service_account(td, ns, sa)
        .map(|s| s.to_string())
        .map_err(|e| VaultError::bad_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(json: Value) -> Role {
        let mut r = Role::default();
        r.update(json.as_object().expect("object"))
            .expect("valid role");
        r
    }

    #[test]
    fn vault_name_rules() {
        let r = role(json!({"allowed_domains": "example.com", "allow_subdomains": "true"}));
        assert!(r.allows_name("a.example.com"));
        assert!(r.allows_name("*.example.com"));
        assert!(
            !r.allows_name("example.com"),
            "bare domain needs allow_bare_domains"
        );
        assert!(!r.allows_name("a.example.org"));
        assert!(r.allows_name("localhost"));
        let bare = role(json!({"allowed_domains": ["example.com"], "allow_bare_domains": true}));
        assert!(bare.allows_name("example.com") && !bare.allows_name("a.example.com"));
        let glob =
            role(json!({"allowed_domains": "*.svc.cluster.local", "allow_glob_domains": "true"}));
        assert!(glob.allows_name("web.default.svc.cluster.local"));
        let any = role(json!({"allow_any_name": true}));
        assert!(any.allows_name("anything.test"));
        assert!(
            !any.allows_name("not a host"),
            "enforce_hostnames still applies"
        );
    }

    #[test]
    fn key_types() {
        let default = Role::default();
        assert!(default.check_key(KeyAlgorithm::Rsa(2048)).is_ok());
        let err = default
            .check_key(KeyAlgorithm::EcdsaP256)
            .expect_err("rsa role");
        assert_eq!(err.errors[0], "role requires keys of type rsa");
        let any = role(json!({"key_type": "any"}));
        assert!(
            any.check_key(KeyAlgorithm::EcdsaP256).is_ok()
                && any.check_key(KeyAlgorithm::Rsa(4096)).is_ok()
        );
        assert!(
            role(json!({"key_type": "ec", "key_bits": 384}))
                .check_key(KeyAlgorithm::EcdsaP256)
                .is_err()
        );
    }

    #[test]
    fn serials_in_both_spellings() {
        assert_eq!(parse_serial("0a:ff:01"), Some(vec![0x0a, 0xff, 0x01]));
        assert_eq!(parse_serial("0a-ff-01"), Some(vec![0x0a, 0xff, 0x01]));
        assert_eq!(parse_serial("xyz"), None);
    }
}
