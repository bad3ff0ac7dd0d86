//! PKI mount paths that manage the CA itself, in Vault's shapes: issuers (list, read, rename,
//! leaf behaviour), the default issuer (`config/issuers`), subordinate CAs
//! (`root/sign-intermediate`, what SPIRE's Vault UpstreamAuthority calls), new issuing CAs whose
//! CSR an outside root signs (`intermediate/generate`, `intermediate/set-signed`), and the URLs
//! and CRL settings every replica shares (`config/urls`, `config/crl`).
//!
//! The issuers are [`crate::issuer::set`]'s; this module only reads and writes Vault's forms.

use std::net::IpAddr;

use axum::response::Response;
use ca_store::{Protocol, Requester};
use serde_json::{Value, json};

use super::values::{bool_field, duration_field, int_field, list_field, string_field};
use super::{Call, Operation, VaultError, VaultState, envelope, list_response};
use crate::auth::Authorized;
use crate::issuer::hierarchy::pem_block;
use crate::issuer::rotation;
use crate::issuer::set::{self, IssuerSet, Member, Urls};
use crate::issuer::{
    CertificateRequest, IssueError, LeafNotAfter, NameConstraints, Profile, Subject, csr,
};

fn trimmed_pem(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der).trim_end().to_owned()
}

fn unknown_issuer(reference: &str) -> VaultError {
    VaultError::bad_request(format!(
        "unable to find PKI issuer for reference: {}",
        crate::policy::shorten(reference)
    ))
}

/// The issuer a Vault reference names (`default`, an issuer id, an issuer name).
pub fn resolve<'a>(set: &'a IssuerSet, reference: &str) -> Result<&'a Member, VaultError> {
    if reference.is_empty() {
        return Err(VaultError::bad_request("missing issuer reference"));
    }
    set.resolve(reference)
        .ok_or_else(|| unknown_issuer(reference))
}

fn issuer_name(m: &Member) -> String {
    m.name.clone().unwrap_or_default()
}

/// Vault's issuer description.
pub fn issuer_body(m: &Member, urls: &Urls) -> Value {
    let chain: Vec<String> = m.ca.chain().iter().map(|c| trimmed_pem(c)).collect();
    json!({
        "issuer_id": m.ca.issuer_id(), "issuer_name": issuer_name(m),
        "key_id": m.ca.issuer_id(), "certificate": chain[0], "ca_chain": chain,
        "manual_chain": null, "leaf_not_after_behavior": m.ca.leaf_not_after().as_str(),
        "usage": "crl-signing,issuing-certificates,read-only",
        "revocation_signature_algorithm": "", "revoked": false,
        "issuing_certificates": urls.issuing_certificates,
        "crl_distribution_points": urls.crl_distribution_points,
        "delta_crl_distribution_points": [], "ocsp_servers": [],
        "state": m.standing.as_str(),
        "activate_at": m.activate_at,
    })
}

async fn stored_urls(state: &VaultState) -> Result<Urls, VaultError> {
    Ok(match state.store.setting(set::URLS_SETTING).await? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Urls {
            issuing_certificates: state
                .issuance
                .issuers()
                .settings()
                .issuing_certificate_urls
                .clone(),
            crl_distribution_points: state.issuance.issuers().settings().crl_urls.clone(),
        },
    })
}

/// `LIST issuers` (public in Vault): ids, with names and which is the default.
pub async fn list(state: &VaultState, _: &Call) -> Result<Response, VaultError> {
    let set = state.issuance.issuers().current();
    let mut keys = Vec::new();
    let mut info = serde_json::Map::new();
    for m in set.members() {
        let id = m.ca.issuer_id().to_owned();
        let serial = x509_parser::parse_x509_certificate(&m.ca.chain()[0])
            .map(|(_, c)| c.raw_serial_as_string())
            .unwrap_or_default();
        info.insert(
            id.clone(),
            json!({
                "issuer_name": issuer_name(m), "is_default": m.standing == set::Standing::Default,
                "serial_number": serial, "key_id": id,
            }),
        );
        keys.push(id);
    }
    Ok(envelope(
        Some(json!({"keys": keys, "key_info": info})),
        vec![],
        None,
    ))
}

/// `issuer/<ref>`: read, or update its name and leaf behaviour.
pub async fn issuer(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let issuers = state.issuance.issuers();
    let set = issuers.current();
    let m = resolve(&set, call.param(0))?.clone();
    match call.op {
        Operation::Read => Ok(envelope(
            Some(issuer_body(&m, &stored_urls(state).await?)),
            vec![],
            None,
        )),
        Operation::Write => {
            let mut name = m.name.clone();
            if call.data.contains_key("issuer_name") {
                let n = string_field(&call.data, "issuer_name");
                if n == "default"
                    || n.len() > 128
                    || n.contains(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_')
                {
                    return Err(VaultError::bad_request(
                        "issuer_name must be letters, digits, '-' or '_' (at most 128), and not \"default\"",
                    ));
                }
                name = (!n.is_empty()).then_some(n);
            }
            let mut leaf = m.ca.leaf_not_after();
            if call.data.contains_key("leaf_not_after_behavior") {
                let v = string_field(&call.data, "leaf_not_after_behavior");
                leaf = LeafNotAfter::parse(&v).ok_or_else(|| {
                    VaultError::bad_request(format!(
                        "leaf_not_after_behavior {:?}: use err or truncate (a certificate never outlives its issuer here)",
                        crate::policy::shorten(&v)
                    ))
                })?;
            }
            for refused in [
                "manual_chain",
                "usage",
                "revocation_signature_algorithm",
                "ocsp_servers",
            ] {
                if call
                    .data
                    .get(refused)
                    .is_some_and(|v| !v.is_null() && v != "" && v != &json!([]))
                {
                    return Err(VaultError::bad_request(format!(
                        "{refused} cannot be changed on this server"
                    )));
                }
            }
            let updated = state
                .store
                .update_issuer(
                    m.ca.issuer_id(),
                    name.as_deref(),
                    Some(leaf.as_str()),
                    m.activate_at,
                )
                .await
                .map_err(|e| match e {
                    ca_store::Error::AlreadyExists => {
                        VaultError::bad_request("issuer name already in use")
                    }
                    e => e.into(),
                })?;
            if !updated {
                // The data directory's issuer from before issuer rows carried material.
                return Err(unknown_issuer(call.param(0)));
            }
            issuers
                .refresh()
                .await
                .map_err(|e| VaultError::internal("reloading issuers", e))?;
            let set = issuers.current();
            let m = resolve(&set, m.ca.issuer_id())?;
            Ok(envelope(
                Some(issuer_body(m, &stored_urls(state).await?)),
                vec![],
                None,
            ))
        }
        Operation::Delete => Err(VaultError::bad_request(
            "issuers are not deleted here: an issuer keeps signing its CRL while its certificates live",
        )),
        Operation::List => Err(VaultError::unsupported()),
    }
}

/// `config/issuers`: the default issuer (making one the default takes effect on every replica
/// within seconds).
pub async fn config_issuers(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let issuers = state.issuance.issuers();
    if call.op == Operation::Write {
        if bool_field(&call.data, "default_follows_latest_issuer", false)? {
            return Err(VaultError::bad_request(
                "default_follows_latest_issuer is not supported: choose the default explicitly, or let rotation schedule it",
            ));
        }
        let reference = string_field(&call.data, "default");
        if !reference.is_empty() {
            if reference == "default" {
                return Err(VaultError::bad_request(
                    "Invalid issuer specification; must be non-empty and can't be 'default'.",
                ));
            }
            let set = issuers.current();
            let id = resolve(&set, &reference)?.ca.issuer_id().to_owned();
            rotation::activate_now(issuers, &id)
                .await
                .map_err(|e| VaultError::bad_request(format!("{e:#}")))?;
        }
    }
    let set = issuers.current();
    Ok(envelope(
        Some(
            json!({"default": set.default_ca().issuer_id(), "default_follows_latest_issuer": false}),
        ),
        vec![],
        None,
    ))
}

fn valid_url(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://"))
        && u.len() <= 2048
        && u.bytes().all(|b| b.is_ascii_graphic())
}

/// `config/urls`: the caIssuers and CRL URLs written into new certificates, stored in the
/// database so every replica uses the same (`{{issuer_id}}` becomes each issuer's id).
pub async fn config_urls(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let mut urls = stored_urls(state).await?;
    if call.op == Operation::Write {
        for (key, field) in [
            ("issuing_certificates", &mut urls.issuing_certificates),
            ("crl_distribution_points", &mut urls.crl_distribution_points),
        ] {
            if call.data.contains_key(key) {
                let list = list_field(&call.data, key);
                if let Some(bad) = list.iter().find(|u| !valid_url(u)) {
                    return Err(VaultError::bad_request(format!(
                        "invalid URL found in Authority Information Access (AIA) parameter {key}: {}",
                        crate::policy::shorten(bad)
                    )));
                }
                *field = list;
            }
        }
        if !list_field(&call.data, "ocsp_servers").is_empty()
            || !list_field(&call.data, "delta_crl_distribution_points").is_empty()
        {
            return Err(VaultError::bad_request(
                "OCSP and delta CRLs are not served by this CA; leave ocsp_servers and delta_crl_distribution_points empty",
            ));
        }
        let body = serde_json::to_vec(&urls).map_err(|e| VaultError::internal("urls", e))?;
        let old = state.store.setting(set::URLS_SETTING).await?;
        let written = state
            .store
            .replace_setting(set::URLS_SETTING, old.as_deref(), &body)
            .await?;
        if !written {
            return Err(VaultError::unavailable("the URLs changed meanwhile; retry"));
        }
        state
            .issuance
            .issuers()
            .refresh()
            .await
            .map_err(|e| VaultError::internal("reloading issuers", e))?;
    }
    Ok(envelope(
        Some(json!({
            "issuing_certificates": urls.issuing_certificates,
            "crl_distribution_points": urls.crl_distribution_points,
            "delta_crl_distribution_points": [], "ocsp_servers": [],
            "enable_templating": urls.crl_distribution_points.iter().chain(&urls.issuing_certificates).any(|u| u.contains("{{")),
        })),
        vec![],
        None,
    ))
}

/// `config/crl`: what this server does, which is fixed (a full CRL rebuilt at once after every
/// revocation and on `[ca] crl_refresh`, valid 24 h; no delta CRLs, no OCSP). Writes that ask
/// for the same are accepted; anything else is refused rather than ignored.
pub async fn config_crl(
    _: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let current = json!({
        "expiry": "24h", "disable": false, "ocsp_disable": true, "ocsp_expiry": "0s",
        "auto_rebuild": true, "auto_rebuild_grace_period": "12h", "enable_delta": false,
        "delta_rebuild_interval": "15m", "allow_expired_cert_revocation": false,
    });
    if call.op == Operation::Write {
        if bool_field(&call.data, "disable", false)? {
            return Err(VaultError::bad_request(
                "CRLs cannot be disabled on this server",
            ));
        }
        if bool_field(&call.data, "enable_delta", false)? {
            return Err(VaultError::bad_request("delta CRLs are not supported"));
        }
        if let Some(d) = duration_field(&call.data, "expiry")?
            && d.as_secs() != 24 * 3600
        {
            return Err(VaultError::bad_request(
                "the CRL's validity is fixed at 24h; [ca] crl_refresh sets how often it is rebuilt",
            ));
        }
    }
    Ok(envelope(Some(current), vec![], None))
}

// --- subordinate CAs ---------------------------------------------------------------------------

/// `root/sign-intermediate` and `issuer/<ref>/sign-intermediate`: a subordinate CA certificate
/// for a CSR (SPIRE's UpstreamAuthority, a mesh's intermediate). As Vault does, the subject and
/// names come from the request's fields unless `use_csr_values`; path length 0 (our issuing
/// CA's is 1); `permitted_dns_domains` become name constraints. Every such certificate is in
/// the ledger like any other.
pub async fn sign_intermediate(
    state: &VaultState,
    call: &Call,
    who: &Authorized,
) -> Result<Response, VaultError> {
    let reference = if call.params.is_empty() {
        "default"
    } else {
        call.param(0)
    };
    let set = state.issuance.issuers().current();
    let ca = resolve(&set, reference)?.ca.clone();
    let data = &call.data;
    let pem = string_field(data, "csr");
    if pem.trim().is_empty() {
        return Err(VaultError::bad_request("missing csr"));
    }
    let csr = csr::parse_pem(&pem)
        .map_err(|e| VaultError::bad_request(format!("error parsing CSR: {e}")))?;
    match int_field(data, "max_path_length", -1)? {
        -1 | 0 => {}
        n => {
            return Err(VaultError::bad_request(format!(
                "max_path_length {n}: subordinate CAs signed here have path length 0 (the issuing CA's is 1)"
            )));
        }
    }
    // What this server does not put into subordinate CAs is refused, not ignored.
    for unsupported in [
        "permitted_ip_ranges",
        "excluded_ip_ranges",
        "permitted_email_addresses",
        "excluded_email_addresses",
        "permitted_uri_domains",
        "excluded_uri_domains",
        "skid",
        "key_usage",
        "ext_key_usage",
        "other_sans",
    ] {
        if !list_field(data, unsupported).is_empty() {
            return Err(VaultError::bad_request(format!(
                "{unsupported} is not supported for subordinate CAs here (docs/vault-api.md)"
            )));
        }
    }
    if bool_field(data, "use_pss", false)? {
        return Err(VaultError::bad_request(
            "use_pss: PSS signatures are not made here",
        ));
    }
    let format = string_field(data, "format");
    if !["", "pem", "der", "pem_bundle"].contains(&format.as_str()) {
        return Err(VaultError::bad_request(
            "The \"format\" path parameter must be \"pem\", \"der\" or \"pem_bundle\"",
        ));
    }
    let mut req = CertificateRequest::new(csr.public_key.clone(), Profile::Ca);
    if bool_field(data, "use_csr_values", false)? {
        req.subject.common_name = csr.common_name.clone();
        req.dns_names = csr.dns_names.clone();
        req.ip_addresses = csr.ip_addresses.clone();
        req.uris = csr.uris.clone();
        req.emails = csr.emails.clone();
    } else {
        let cn = string_field(data, "common_name");
        req.subject = Subject {
            common_name: Some(cn)
                .filter(|c| !c.is_empty())
                .or(csr.common_name.clone()),
            organization: list_field(data, "organization"),
            organizational_unit: list_field(data, "ou"),
            country: list_field(data, "country"),
            province: list_field(data, "province"),
            locality: list_field(data, "locality"),
        };
        for name in list_field(data, "alt_names") {
            if name.contains('@') {
                req.emails.push(name);
            } else {
                req.dns_names.push(name);
            }
        }
        for ip in list_field(data, "ip_sans") {
            req.ip_addresses.push(ip.parse::<IpAddr>().map_err(|_| {
                VaultError::bad_request(format!(
                    "invalid IP address {}",
                    crate::policy::shorten(&ip)
                ))
            })?);
        }
        req.uris = list_field(data, "uri_sans");
        if !bool_field(data, "exclude_cn_from_sans", false)?
            && let Some(cn) = &req.subject.common_name
            && crate::names::normalize_dns_name(cn).is_some()
            && !req.dns_names.contains(cn)
        {
            req.dns_names.push(cn.clone());
        }
    }
    for name in &mut req.dns_names {
        *name = crate::names::normalize_dns_name(name).ok_or_else(|| {
            VaultError::bad_request(format!("invalid DNS name {}", crate::policy::shorten(name)))
        })?;
    }
    for uri in &req.uris {
        if !crate::names::is_valid_uri(uri) {
            return Err(VaultError::bad_request(format!(
                "invalid URI {}",
                crate::policy::shorten(uri)
            )));
        }
    }
    let permitted = list_field(data, "permitted_dns_domains");
    let excluded = list_field(data, "excluded_dns_domains");
    if !permitted.is_empty() || !excluded.is_empty() {
        req.name_constraints = Some(NameConstraints {
            permitted_dns: permitted,
            excluded_dns: excluded,
            ..NameConstraints::default()
        });
    }
    req.lifetime = duration_field(data, "ttl")?.filter(|d| !d.is_zero());
    if let Some(t) = Some(string_field(data, "not_after")).filter(|s| !s.is_empty()) {
        req.not_after = Some(
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| VaultError::bad_request("not_after must be an RFC 3339 timestamp"))?,
        );
    }
    if let Some(max) = super::sys::max_lease_ttl(state, &call.mount).await? {
        let max = std::time::Duration::from_secs(max);
        let wanted = req
            .lifetime
            .unwrap_or(ca.settings().lifetime(Profile::Ca).default);
        req.lifetime = Some(wanted.min(max));
    }
    let caller = who.caller();
    let mut requester = Requester::new(Protocol::Vault, caller.display_name.clone());
    requester.namespace = caller.meta("service_account_namespace").map(str::to_owned);
    requester.service_account = caller.meta("service_account_name").map(str::to_owned);
    requester.detail.insert("mount".into(), call.mount.clone());
    requester
        .detail
        .insert("path".into(), "sign-intermediate".into());
    requester
        .detail
        .insert("accessor".into(), caller.accessor.clone());
    let signed = state
        .issuance
        .issue_with(&ca, &req, &requester, &uuid::Uuid::new_v4().to_string())
        .await
        .map_err(|e| match e {
            IssueError::Rejected(v) => VaultError::bad_request(v.to_string()),
            IssueError::Csr(e) => VaultError::bad_request(e.to_string()),
            e if e.is_transient() => VaultError::unavailable(e.to_string()),
            e => VaultError::internal("signing an intermediate", e),
        })?;
    let cert = trimmed_pem(&signed.der);
    let parents: Vec<String> = signed.chain.iter().map(|c| trimmed_pem(c)).collect();
    // SPIRE drops the duplicate of `certificate` from `ca_chain` by exact comparison: the same
    // string, first.
    let mut ca_chain = vec![cert.clone()];
    ca_chain.extend(parents.iter().cloned());
    let certificate = match format.as_str() {
        "der" => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&signed.der)
        }
        "pem_bundle" => format!("{cert}\n{}", parents.join("\n")),
        _ => cert,
    };
    let mut warnings = signed.warnings.clone();
    if state
        .issuance
        .issuers()
        .settings()
        .issuing_certificate_urls
        .is_empty()
    {
        warnings.push("This mount hasn't configured any authority information access (AIA) fields; this may make it harder for systems to find missing certificates in the chain or to validate revocation status of certificates. Consider updating /config/urls or the newly generated issuer with this information.".into());
    }
    Ok(envelope(
        Some(json!({
            "certificate": certificate, "issuing_ca": parents[0], "ca_chain": ca_chain,
            "serial_number": crate::issuer::serial::to_colon_hex(&signed.serial),
            "expiration": signed.not_after.unix_timestamp(),
        })),
        warnings,
        None,
    ))
}

/// `intermediate/generate/internal|exported`: a new key and a CSR for an issuing CA whose
/// certificate an outside root signs; then `intermediate/set-signed`. The key stays sealed in
/// the database (`exported` also returns it, once).
pub async fn generate_intermediate(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let exported = match call.param(0) {
        "internal" => false,
        "exported" => true,
        _ => {
            return Err(VaultError::bad_request(
                "the \"exported\" path parameter must be \"internal\" or \"exported\"",
            ));
        }
    };
    let data = &call.data;
    match string_field(data, "key_type").as_str() {
        "" | "ec" => {}
        other => {
            return Err(VaultError::bad_request(format!(
                "key_type {:?}: issuing CA keys made here are ECDSA P-256 (key_type=ec)",
                crate::policy::shorten(other)
            )));
        }
    }
    if !matches!(int_field(data, "key_bits", 0)?, 0 | 256) {
        return Err(VaultError::bad_request(
            "key_bits: only 256 (P-256) is generated here",
        ));
    }
    let cn = string_field(data, "common_name");
    if cn.is_empty() || cn.len() > 64 || crate::names::has_control_character(&cn) {
        return Err(VaultError::bad_request(
            "common_name is required (at most 64 characters) for an issuing CA",
        ));
    }
    let name = Some(string_field(data, "key_name")).filter(|n| !n.is_empty());
    let row = rotation::create_pending(state.issuance.issuers(), &cn, name)
        .await
        .map_err(|e| VaultError::internal("making an issuing CA key", e))?;
    let mut body = json!({"csr": row.csr_pem.trim_end(), "key_id": row.key_id});
    if exported {
        let seal = state
            .issuance
            .issuers()
            .seal()
            .ok_or_else(|| VaultError::internal("exporting a key", "no seal key"))?;
        let pkcs8 = seal
            .open_sealed_bytes(&set::pending_key_purpose(&row.key_id), &row.key_sealed)
            .map_err(|e| VaultError::internal("exporting a key", e))?;
        body["private_key"] = json!(pem_block("PRIVATE KEY", &pkcs8).trim_end());
        body["private_key_type"] = json!("ec");
    }
    Ok(envelope(Some(body), vec![], None))
}

/// `intermediate/set-signed`: installs the certificate an outside root signed for a key from
/// `intermediate/generate`. It is not the default until made so (`config/issuers`).
pub async fn set_signed(
    state: &VaultState,
    call: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    let bundle = string_field(&call.data, "certificate");
    if bundle.trim().is_empty() {
        return Err(VaultError::bad_request(
            "'pem_bundle' and 'certificate' parameters were empty",
        ));
    }
    let installed = rotation::install(state.issuance.issuers(), &bundle, None, &[], None, None)
        .await
        .map_err(|e| VaultError::bad_request(format!("{e:#}")))?;
    // Issuers are their own key ids here (issuer/<ref> reports key_id = issuer_id).
    let mut mapping = serde_json::Map::new();
    mapping.insert(installed.issuer_id.clone(), json!(installed.issuer_id));
    Ok(envelope(
        Some(json!({
            "imported_issuers": [installed.issuer_id], "imported_keys": null,
            "existing_issuers": null, "existing_keys": null, "mapping": mapping,
        })),
        vec![
            "the new issuer is not the default yet: make it so with config/issuers (default=<issuer id>)"
                .into(),
        ],
        None,
    ))
}

/// `LIST certs/revoked`: serials of revoked certificates, colon form.
pub async fn revoked(state: &VaultState, _: &Call, _: &Authorized) -> Result<Response, VaultError> {
    let mut query = ca_store::ExpiryQuery {
        limit: 10_000,
        include_revoked: true,
        revoked_only: true,
        origin: Some(ca_store::Origin::Issued),
        ..Default::default()
    };
    let mut keys: Vec<String> = Vec::new();
    loop {
        let rows = state.store.expiring(&query).await?;
        let Some(last) = rows.last() else { break };
        query.after = Some((last.certificate.not_after, last.id));
        keys.extend(
            rows.iter()
                .map(|r| crate::issuer::serial::to_colon_hex(&r.certificate.serial)),
        );
    }
    keys.sort();
    list_response(keys)
}

/// `crl/rotate`: the CRLs are rebuilt now (they are anyway after every revocation).
pub async fn rotate_crl(
    state: &VaultState,
    _: &Call,
    _: &Authorized,
) -> Result<Response, VaultError> {
    state.crl.invalidate();
    Ok(envelope(Some(json!({"success": true})), vec![], None))
}
