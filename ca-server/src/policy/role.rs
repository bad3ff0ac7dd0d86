//! Vault PKI roles: which names, keys and lifetimes a caller of `sign`, `issue` or
//! `sign-verbatim` may get, with Vault's semantics and defaults (so existing role definitions
//! behave the same), plus two extensions: a `profile` (e.g. `spiffe`, `ca`) and
//! `spiffe_from_identity`, which gives a workload logged in with its own service-account token
//! exactly `spiffe://<trust-domain>/ns/<namespace>/sa/<name>` and no other URI.
//!
//! Every requested name is checked, whatever its kind: the common name (a host name, or an e-mail
//! address when it contains `@`), DNS SANs and e-mail SANs against the domain rules, IP SANs
//! against `allow_ip_sans`, URI SANs against `allowed_uri_sans` (or the caller's own SPIFFE ID),
//! other SAN types are refused.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Authority, NameKind, Rejection, glob_matches, invalid, not_allowed, shorten};
use crate::issuer::{
    CertificateRequest, KeyAlgorithm, Profile, Subject, SubjectPublicKey, VerifiedCsr,
};
use crate::names::{normalize_dns_name, normalize_email};
use crate::spiffe::SpiffeId;

/// A PKI role with Vault's defaults. Stored as JSON; the Vault edge reads Vault's loose request
/// forms into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)] // Vault's own field names; see Vault's PKI role documentation.
pub struct Role {
    pub ttl: u64,
    pub max_ttl: u64,
    pub allow_localhost: bool,
    pub allowed_domains: Vec<String>,
    pub allow_bare_domains: bool,
    pub allow_subdomains: bool,
    pub allow_glob_domains: bool,
    pub allow_wildcard_certificates: bool,
    pub allow_any_name: bool,
    pub enforce_hostnames: bool,
    pub allow_ip_sans: bool,
    pub allowed_uri_sans: Vec<String>,
    pub allowed_other_sans: Vec<String>,
    pub server_flag: bool,
    pub client_flag: bool,
    pub ext_key_usage: Vec<String>,
    pub key_type: String,
    pub key_bits: i64,
    pub require_cn: bool,
    pub use_csr_common_name: bool,
    pub use_csr_sans: bool,
    pub not_before_duration: u64,
    pub organization: Vec<String>,
    pub ou: Vec<String>,
    pub country: Vec<String>,
    pub locality: Vec<String>,
    pub province: Vec<String>,
    pub no_store: bool,
    /// Our extension: the issuance profile (empty: from `server_flag`/`client_flag`).
    pub profile: String,
    /// Our extension: the caller's own SPIFFE ID, and no other.
    pub spiffe_from_identity: bool,
    /// Our extension: the trust domain for `spiffe_from_identity` (empty: the server's).
    pub trust_domain: String,
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

/// Which endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `sign/:role`: a CSR, names checked against the role.
    Sign,
    /// `issue/:role`: the CA generates the key.
    Issue,
    /// `sign-verbatim[/:role]`: the CSR's names as they are (a privileged endpoint).
    Verbatim,
}

/// A `sign`/`issue` request in typed form.
#[derive(Debug, Clone)]
pub struct SignRequest {
    /// Which endpoint.
    pub mode: Mode,
    /// The key to certify: the CSR's, or the one generated for `issue`.
    pub public_key: SubjectPublicKey,
    /// The CSR (`sign`, `sign-verbatim`).
    pub csr: Option<VerifiedCsr>,
    /// `common_name`.
    pub common_name: Option<String>,
    /// `alt_names` (DNS names and e-mail addresses).
    pub alt_names: Vec<String>,
    /// `ip_sans`.
    pub ip_sans: Vec<String>,
    /// `uri_sans`.
    pub uri_sans: Vec<String>,
    /// `other_sans`.
    pub other_sans: Vec<String>,
    /// `exclude_cn_from_sans`.
    pub exclude_cn_from_sans: bool,
    /// `ttl`.
    pub ttl: Option<Duration>,
    /// `not_after`.
    pub not_after: Option<OffsetDateTime>,
}

/// A workload identity established at login (kubernetes auth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload<'a> {
    /// Service account namespace.
    pub namespace: &'a str,
    /// Service account name.
    pub service_account: &'a str,
}

/// What the decision needs beyond the role and the request.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The server's SPIFFE trust domain (roles may override it).
    pub trust_domain: &'a str,
    /// The caller's workload identity, when it logged in with a service-account token.
    pub workload: Option<Workload<'a>>,
    /// The issuer's settings (each profile's default lifetime).
    pub settings: &'a crate::issuer::Settings,
}

/// What the role grants: the certificate to sign, and adjustments to tell the caller about.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The certificate request for the issuer.
    pub request: CertificateRequest,
    /// Vault-style warnings (TTL truncated, CSR fields preferred…).
    pub warnings: Vec<String>,
}

impl Role {
    /// The implicit role of `sign-verbatim` with no role: any name, any key.
    pub fn verbatim() -> Self {
        Self {
            allow_any_name: true,
            enforce_hostnames: false,
            key_type: "any".into(),
            ..Self::default()
        }
    }

    /// Checks the role's own fields after an update.
    pub fn validate(&self) -> Result<(), Rejection> {
        if !["rsa", "ec", "ed25519", "any"].contains(&self.key_type.as_str()) {
            return Err(Rejection::Malformed(format!(
                "invalid key_type {:?}",
                shorten(&self.key_type)
            )));
        }
        if !self.profile.is_empty() {
            self.profile
                .parse::<Profile>()
                .map_err(|e| Rejection::Profile(e.to_string()))?;
        }
        Ok(())
    }

    /// Vault's rules for one host name or e-mail address (the part after `@` is checked as the
    /// host): `enforce_hostnames`, wildcards, `allow_any_name`, localhost, and `allowed_domains`
    /// as bare domains, subdomains or globs.
    pub fn allows_name(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        let (is_email, host) = match lower.rsplit_once('@') {
            Some((_, domain)) => (true, domain.to_owned()),
            None => (false, lower.clone()),
        };
        if is_email && normalize_email(name).is_none() {
            return false;
        }
        let wildcard = host.starts_with("*.");
        if is_email && wildcard {
            return false;
        }
        if self.enforce_hostnames && normalize_dns_name(&host).is_none() {
            return false;
        }
        if wildcard && !self.allow_wildcard_certificates {
            return false;
        }
        if self.allow_any_name {
            return true;
        }
        let base = host.strip_prefix("*.").unwrap_or(&host);
        // localhost and localdomain; their subdomains (and wildcards) only with allow_subdomains.
        let local = |d: &str| base == d || base.ends_with(&format!(".{d}"));
        if self.allow_localhost
            && (local("localhost") || local("localdomain"))
            && (self.allow_subdomains
                || (!wildcard && (base == "localhost" || base == "localdomain")))
        {
            return true;
        }
        self.allowed_domains.iter().any(|d| {
            let d = d.trim().to_ascii_lowercase();
            !d.is_empty()
                && ((self.allow_bare_domains && !wildcard && host == d)
                    || (self.allow_subdomains
                        && (base.ends_with(&format!(".{d}")) || (wildcard && base == d)))
                    || (self.allow_glob_domains && d.contains('*') && glob_matches(&d, &host)))
        })
    }

    /// The role's key rules: `key_type` and a minimum of `key_bits` (2048 for RSA, 224 for EC).
    pub fn check_key(&self, alg: KeyAlgorithm) -> Result<(), Rejection> {
        let (kind, bits) = match alg {
            KeyAlgorithm::Rsa(bits) => ("rsa", i64::try_from(bits).unwrap_or(i64::MAX)),
            KeyAlgorithm::EcdsaP256 => ("ec", 256),
            KeyAlgorithm::EcdsaP384 => ("ec", 384),
            KeyAlgorithm::Ed25519 => ("ed25519", 0),
        };
        if self.key_type != "any" && self.key_type != kind {
            return Err(Rejection::KeyType {
                required: self.key_type.clone(),
            });
        }
        let min = match (self.key_type.as_str(), kind) {
            ("any", "rsa") | ("rsa", _) => self.key_bits.max(2048),
            ("ec", _) => self.key_bits.max(224),
            _ => 0,
        };
        if kind != "ed25519" && bits < min {
            return Err(Rejection::KeyTooSmall { min, bits });
        }
        Ok(())
    }

    fn check_name(&self, kind: NameKind, name: &str) -> Result<(), Rejection> {
        if self.allows_name(name) {
            Ok(())
        } else {
            Err(not_allowed(kind, name, Authority::Role))
        }
    }

    /// The profile a request gets: the role's, SPIFFE for identity roles and SPIFFE-only
    /// requests, otherwise from `server_flag`/`client_flag`.
    fn profile_for(
        &self,
        dns: &[String],
        ips: &[IpAddr],
        uris: &[String],
    ) -> Result<Profile, Rejection> {
        if !self.profile.is_empty() {
            return self
                .profile
                .parse()
                .map_err(|e: crate::issuer::profile::UnknownProfile| {
                    Rejection::Profile(e.to_string())
                });
        }
        if self.spiffe_from_identity
            || (dns.is_empty()
                && ips.is_empty()
                && uris.len() == 1
                && uris[0].starts_with("spiffe://"))
        {
            return Ok(Profile::Spiffe);
        }
        Ok(match (self.server_flag, self.client_flag) {
            (true, false) => Profile::TlsServer,
            (false, true) => Profile::TlsClient,
            _ => Profile::TlsServerClient,
        })
    }

    /// The SPIFFE ID a workload may have under this role: its own, in the role's trust domain.
    pub fn own_spiffe_id(&self, ctx: &Context<'_>) -> Result<String, Rejection> {
        let workload = ctx.workload.ok_or(Rejection::NoWorkloadIdentity)?;
        let td = if self.trust_domain.is_empty() {
            ctx.trust_domain
        } else {
            self.trust_domain.as_str()
        };
        SpiffeId::for_service_account(td, workload.namespace, workload.service_account)
            .map(|s| s.to_string())
            .map_err(|e| Rejection::Malformed(e.to_string()))
    }
}

/// Decides what a `sign`/`issue`/`sign-verbatim` request under `role` may have.
pub fn decide(role: &Role, ctx: &Context<'_>, req: SignRequest) -> Result<Decision, Rejection> {
    let verbatim = req.mode == Mode::Verbatim;
    let mut warnings = Vec::new();
    if req.ttl.is_some() && req.not_after.is_some() {
        return Err(Rejection::Malformed(
            "Either ttl or not_after should be provided. Both should not be provided in the same request."
                .into(),
        ));
    }
    if !verbatim {
        role.check_key(req.public_key.algorithm())?;
    }
    let csr = req.csr.as_ref();

    // Which names are asked for: the CSR's, or the request fields', as the role says.
    let common_name = if verbatim || (role.use_csr_common_name && csr.is_some()) {
        if !verbatim && req.common_name.is_some() {
            warnings.push("the common_name field was provided but the role is set with \"use_csr_common_name\" set to true".into());
        }
        csr.and_then(|c| c.common_name.clone())
    } else {
        req.common_name.clone()
    };
    let (mut dns, mut ips, mut uris, mut emails) = match csr {
        Some(c) if verbatim || role.use_csr_sans => {
            let asked_for_sans =
                !(req.alt_names.is_empty() && req.ip_sans.is_empty() && req.uri_sans.is_empty());
            if !verbatim && asked_for_sans {
                warnings.push("the alt_names field was provided but the role is set with \"use_csr_sans\" set to true".into());
            }
            (
                c.dns_names.clone(),
                c.ip_addresses.clone(),
                c.uris.clone(),
                c.emails.clone(),
            )
        }
        _ => {
            let (emails, dns): (Vec<String>, Vec<String>) =
                req.alt_names.iter().cloned().partition(|n| n.contains('@'));
            let mut ips = Vec::with_capacity(req.ip_sans.len());
            for s in &req.ip_sans {
                ips.push(s.parse::<IpAddr>().map_err(|_| invalid(NameKind::Ip, s))?);
            }
            (dns, ips, req.uri_sans.clone(), emails)
        }
    };
    let other_sans: Vec<String> = csr
        .map(|c| c.unsupported_sans.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(req.other_sans.iter().cloned())
        .collect();
    if let Some(other) = other_sans.first() {
        // Recorded for Vault compatibility; this CA issues no otherName SANs.
        return Err(Rejection::KindNotAllowed {
            kind: NameKind::Other,
            value: shorten(other),
            by: Authority::Role,
        });
    }

    if !verbatim {
        if role.require_cn && common_name.is_none() {
            return Err(Rejection::CommonNameRequired);
        }
        if let Some(cn) = &common_name {
            let kind = if cn.contains('@') {
                NameKind::Email
            } else {
                NameKind::CommonName
            };
            role.check_name(kind, cn)?;
            if !req.exclude_cn_from_sans {
                if cn.contains('@') {
                    if !emails.iter().any(|e| e.eq_ignore_ascii_case(cn)) {
                        emails.push(cn.clone());
                    }
                } else if let Ok(ip) = cn.parse::<IpAddr>() {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                } else if normalize_dns_name(cn).is_some()
                    && !dns.iter().any(|d| d.eq_ignore_ascii_case(cn))
                {
                    dns.push(cn.clone());
                }
            }
        }
        for name in &dns {
            role.check_name(NameKind::Dns, name)?;
        }
        for email in &emails {
            role.check_name(NameKind::Email, email)?;
        }
        if let Some(ip) = ips.first()
            && !role.allow_ip_sans
        {
            return Err(Rejection::KindNotAllowed {
                kind: NameKind::Ip,
                value: ip.to_string(),
                by: Authority::Role,
            });
        }
    }

    // SPIFFE from identity: the caller's own ID, and no other.
    if role.spiffe_from_identity {
        let expected = role.own_spiffe_id(ctx)?;
        if let Some(other) = uris.iter().find(|u| **u != expected) {
            return Err(Rejection::NotOwnIdentity {
                requested: shorten(other),
                expected,
            });
        }
        uris = vec![expected];
    } else if !verbatim {
        for uri in &uris {
            if role.allowed_uri_sans.is_empty() {
                return Err(Rejection::KindNotAllowed {
                    kind: NameKind::Uri,
                    value: shorten(uri),
                    by: Authority::Role,
                });
            }
            if !role.allowed_uri_sans.iter().any(|p| glob_matches(p, uri)) {
                return Err(not_allowed(NameKind::Uri, uri, Authority::Role));
            }
        }
    }

    let profile = role.profile_for(&dns, &ips, &uris)?;
    let mut request = CertificateRequest::new(req.public_key, profile);
    request.subject = Subject {
        common_name: if profile == Profile::Spiffe {
            None
        } else {
            common_name
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

    // Lifetime: the request's TTL up to the role's max_ttl (truncated with a warning, as Vault
    // does), else the role's TTL, else the profile's default shortened to max_ttl.
    let max = (role.max_ttl > 0).then(|| Duration::from_secs(role.max_ttl));
    let mut ttl = req
        .ttl
        .or((role.ttl > 0).then(|| Duration::from_secs(role.ttl)));
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
    request.lifetime = ttl.or(max.filter(|m| *m < ctx.settings.lifetime(profile).default));
    // An explicit notAfter is held to max_ttl too.
    request.not_after = match (req.not_after, max) {
        (Some(not_after), Some(m)) if not_after > OffsetDateTime::now_utc() + m => {
            warnings.push(format!(
                "not_after is beyond the role's max_ttl \"{}\", so was truncated",
                crate::duration::format_go(m)
            ));
            Some(OffsetDateTime::now_utc() + m)
        }
        (not_after, _) => not_after,
    };
    request.not_before =
        Some(OffsetDateTime::now_utc() - Duration::from_secs(role.not_before_duration));
    Ok(Decision { request, warnings })
}

#[cfg(test)]
mod tests;
