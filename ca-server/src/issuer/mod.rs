//! The CA (Boulder's "CA" role): the only code that touches private keys.
//!
//! Callers (ACME, the Vault API, the CLI) hand over a [`CertificateRequest`] that policy has
//! already approved: a verified public key, a profile, and the exact names to certify. This module
//! builds the certificate from the profile (never from CSR extensions), picks a random serial,
//! backdates notBefore for clock skew, clamps notAfter to the profile maximum and to the issuer's
//! own notAfter, signs, and — through [`Issuance`] — records the certificate in the ledger before
//! anyone sees it. Every to-be-signed certificate passes [`lint`] before the key touches it,
//! whoever asked for it.
//!
//! It never parses HTTP and never speaks SQL.

pub mod asn1;
pub mod csr;
pub mod hierarchy;
pub mod keys;
pub mod lint;
pub mod profile;
pub mod rotation;
pub mod serial;
pub mod set;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use ca_store::writer::LedgerWriter;
use ca_store::{NewCertificate, Requester};
use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use time::OffsetDateTime;

pub use csr::{CsrError, KeyAlgorithm, SubjectPublicKey, VerifiedCsr};
pub use lint::{Limits, Violation};
pub use profile::Profile;

use crate::metrics::{IssuanceResult, Metrics};
use crate::names::normalize_dns_name;
use crate::spiffe::SpiffeId;

/// Default and maximum lifetime of one profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Lifetime {
    /// Used when the request names no lifetime.
    #[serde(with = "crate::duration::serde_duration")]
    pub default: std::time::Duration,
    /// Longer requests are truncated to this, with a warning.
    #[serde(with = "crate::duration::serde_duration")]
    pub max: std::time::Duration,
}

impl Lifetime {
    const fn hours(default: u64, max: u64) -> Self {
        Self {
            default: std::time::Duration::from_secs(default * 3600),
            max: std::time::Duration::from_secs(max * 3600),
        }
    }

    /// Built-in lifetimes: 30 days for TLS (up to a year, kubeadm's leaf validity), 24 hours for
    /// SPIFFE (up to 7 days), a year for subordinate CAs (up to 5).
    pub fn builtin(profile: Profile) -> Self {
        match profile {
            Profile::TlsServer | Profile::TlsClient | Profile::TlsServerClient => {
                Self::hours(30 * 24, 365 * 24)
            }
            Profile::Spiffe => Self::hours(24, 7 * 24),
            Profile::Ca => Self::hours(365 * 24, 5 * 365 * 24),
        }
    }
}

/// How the CA issues: lifetimes, clock-skew backdating and URLs baked into certificates.
#[derive(Debug, Clone)]
pub struct Settings {
    /// notBefore = now − backdate, unless the request sets notBefore.
    pub backdate: std::time::Duration,
    /// Per-profile lifetimes; profiles missing here use [`Lifetime::builtin`].
    pub lifetimes: BTreeMap<Profile, Lifetime>,
    /// CRL distribution point URLs for issued certificates.
    pub crl_urls: Vec<String>,
    /// More than 1: each certificate is assigned a CRL shard from its serial, and its
    /// distribution points are `<crl_url>/<shard>`.
    pub crl_shards: u32,
    /// authorityInfoAccess caIssuers URLs for issued certificates.
    pub issuing_certificate_urls: Vec<String>,
    /// Size limits every certificate is checked against before signing.
    pub limits: Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            backdate: std::time::Duration::from_secs(60),
            lifetimes: BTreeMap::new(),
            crl_urls: Vec::new(),
            crl_shards: 1,
            issuing_certificate_urls: Vec::new(),
            limits: Limits::default(),
        }
    }
}

impl Settings {
    /// The lifetime rules for `profile`.
    pub fn lifetime(&self, profile: Profile) -> Lifetime {
        self.lifetimes
            .get(&profile)
            .copied()
            .unwrap_or_else(|| Lifetime::builtin(profile))
    }
}

/// Subject distinguished name fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// CN.
    pub common_name: Option<String>,
    /// O.
    pub organization: Vec<String>,
    /// OU.
    pub organizational_unit: Vec<String>,
    /// C.
    pub country: Vec<String>,
    /// ST.
    pub province: Vec<String>,
    /// L.
    pub locality: Vec<String>,
}

impl Subject {
    /// A subject with only a common name.
    pub fn common_name(cn: impl Into<String>) -> Self {
        Self {
            common_name: Some(cn.into()),
            ..Self::default()
        }
    }

    fn entries(&self) -> Vec<(DnType, &str, &'static str)> {
        let mut out = Vec::new();
        let groups: [(&Vec<String>, DnType, &'static str); 5] = [
            (&self.country, DnType::CountryName, "C"),
            (&self.province, DnType::StateOrProvinceName, "ST"),
            (&self.locality, DnType::LocalityName, "L"),
            (&self.organization, DnType::OrganizationName, "O"),
            (
                &self.organizational_unit,
                DnType::OrganizationalUnitName,
                "OU",
            ),
        ];
        for (values, ty, short) in groups {
            for v in values {
                out.push((ty.clone(), v.as_str(), short));
            }
        }
        if let Some(cn) = &self.common_name {
            out.push((DnType::CommonName, cn.as_str(), "CN"));
        }
        out
    }

    /// RFC 4514 text, most specific attribute first.
    pub fn to_rfc4514(&self) -> String {
        self.entries()
            .iter()
            .rev()
            .map(|(_, v, short)| format!("{short}={}", escape_rfc4514(v)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn escape_rfc4514(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Name constraints for the `ca` profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameConstraints {
    /// Permitted DNS subtrees (`example.com`, `.svc.cluster.local`).
    pub permitted_dns: Vec<String>,
    /// Excluded DNS subtrees.
    pub excluded_dns: Vec<String>,
    /// Permitted IP ranges.
    pub permitted_ip: Vec<(IpAddr, u8)>,
    /// Excluded IP ranges.
    pub excluded_ip: Vec<(IpAddr, u8)>,
    /// Permitted URI hosts (for SPIFFE: the trust domain).
    pub permitted_uri: Vec<String>,
}

impl NameConstraints {
    fn is_empty(&self) -> bool {
        self.permitted_dns.is_empty()
            && self.excluded_dns.is_empty()
            && self.permitted_ip.is_empty()
            && self.excluded_ip.is_empty()
            && self.permitted_uri.is_empty()
    }

    /// The critical nameConstraints extension (RFC 5280 4.2.1.10), including URI subtrees that
    /// rcgen cannot express.
    fn to_extension(&self) -> CustomExtension {
        fn subtree(tag: u8, value: &[u8]) -> Vec<u8> {
            asn1::sequence(&[asn1::tlv(tag, value)])
        }
        fn ip_subtree((addr, prefix): &(IpAddr, u8)) -> Vec<u8> {
            let (mut bytes, bits) = match addr {
                IpAddr::V4(a) => (a.octets().to_vec(), 32u8),
                IpAddr::V6(a) => (a.octets().to_vec(), 128u8),
            };
            let prefix = (*prefix).min(bits);
            let mut mask = vec![0u8; bytes.len()];
            for i in 0..usize::from(prefix) {
                mask[i / 8] |= 0x80 >> (i % 8);
            }
            for (b, m) in bytes.iter_mut().zip(&mask) {
                *b &= m;
            }
            bytes.extend(mask);
            subtree(0x87, &bytes)
        }
        let permitted: Vec<Vec<u8>> = self
            .permitted_dns
            .iter()
            .map(|d| subtree(0x82, d.as_bytes()))
            .chain(self.permitted_ip.iter().map(ip_subtree))
            .chain(
                self.permitted_uri
                    .iter()
                    .map(|u| subtree(0x86, u.as_bytes())),
            )
            .collect();
        let excluded: Vec<Vec<u8>> = self
            .excluded_dns
            .iter()
            .map(|d| subtree(0x82, d.as_bytes()))
            .chain(self.excluded_ip.iter().map(ip_subtree))
            .collect();
        let mut body = Vec::new();
        if !permitted.is_empty() {
            body.push(asn1::tlv(0xa0, &permitted.concat()));
        }
        if !excluded.is_empty() {
            body.push(asn1::tlv(0xa1, &excluded.concat()));
        }
        let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 30], asn1::sequence(&body));
        ext.set_criticality(true);
        ext
    }
}

/// What policy approved: everything the certificate will say, nothing taken from the CSR blindly.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    /// The key to certify (from a verified CSR, or generated for `issue`).
    pub public_key: SubjectPublicKey,
    /// The issuance profile.
    pub profile: Profile,
    /// Subject DN.
    pub subject: Subject,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs (for `spiffe`, exactly the SPIFFE ID).
    pub uris: Vec<String>,
    /// E-mail SANs.
    pub emails: Vec<String>,
    /// Requested lifetime; the profile default when absent.
    pub lifetime: Option<std::time::Duration>,
    /// Explicit notBefore (ACME `notBefore`).
    pub not_before: Option<OffsetDateTime>,
    /// Explicit notAfter (ACME `notAfter`, Vault `not_after`); overrides `lifetime`.
    pub not_after: Option<OffsetDateTime>,
    /// Name constraints (`ca` profile only).
    pub name_constraints: Option<NameConstraints>,
}

impl CertificateRequest {
    /// A request for `public_key` under `profile` with no names yet.
    pub fn new(public_key: SubjectPublicKey, profile: Profile) -> Self {
        Self {
            public_key,
            profile,
            subject: Subject::default(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            uris: Vec::new(),
            emails: Vec::new(),
            lifetime: None,
            not_before: None,
            not_after: None,
            name_constraints: None,
        }
    }
}

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The certificate would break RFC 5280 or the profile; the client must change its request.
    #[error("{0}")]
    Rejected(#[from] Violation),
    /// The CSR is unusable.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The ledger could not record the certificate, so it was not issued. Often transient.
    #[error("the ledger could not record the certificate: {0}")]
    Ledger(ca_store::Error),
    /// Signing failed (a bug or a broken key); internal.
    #[error("signing failed: {0}")]
    Signing(String),
}

impl IssueError {
    /// True when the client should retry later rather than change its request.
    pub fn is_transient(&self) -> bool {
        match self {
            IssueError::Ledger(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// A signed certificate and what was decided while building it.
#[derive(Debug, Clone)]
pub struct SignedCertificate {
    /// DER.
    pub der: CertificateDer<'static>,
    /// The issuer that signed it.
    pub issuer_id: String,
    /// That issuer's chain: its certificate, then its parents up to the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// Serial number octets.
    pub serial: Vec<u8>,
    /// Effective notBefore.
    pub not_before: OffsetDateTime,
    /// Effective notAfter.
    pub not_after: OffsetDateTime,
    /// Subject, RFC 4514.
    pub subject: String,
    /// The SPIFFE ID, for SVIDs and SPIFFE-identified CAs.
    pub spiffe_id: Option<String>,
    /// Adjustments the caller should pass on (lifetime truncated, …).
    pub warnings: Vec<String>,
    /// The CRL shard named in its distribution point, when CRLs are sharded.
    pub crl_shard: Option<u32>,
}

/// What happens to a certificate asked to outlive its issuer (Vault's `leaf_not_after_behavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeafNotAfter {
    /// notAfter is cut to the issuer's, with a warning.
    #[default]
    Truncate,
    /// The request is refused.
    Err,
}

impl LeafNotAfter {
    /// Vault's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Truncate => "truncate",
            Self::Err => "err",
        }
    }

    /// Parses Vault's spelling; `permit` is refused (no certificate outlives its issuer here).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "truncate" => Some(Self::Truncate),
            "err" => Some(Self::Err),
            _ => None,
        }
    }
}

/// One issuing CA: certificate, key and chain.
pub struct CertificateAuthority {
    /// The issuing CA's name, key identifier and key usages, as rcgen writes them into what it signs.
    issuer_params: CertificateParams,
    key: KeyPair,
    loaded: hierarchy::LoadedCa,
    settings: Settings,
    leaf_not_after: LeafNotAfter,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("issuer_id", &self.loaded.issuer_id)
            .field("subject", &self.loaded.subject)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA from `<data_dir>/ca`.
    pub fn load(data_dir: &Path, settings: Settings) -> Result<Self> {
        let (loaded, key) = hierarchy::LoadedCa::load(data_dir)?;
        Self::new(loaded, key, settings, LeafNotAfter::default())
    }

    /// A CA from checked material. `{{issuer_id}}` in the settings' CRL and caIssuers URLs
    /// becomes this issuer's id, so each issuer's certificates name its own CRL.
    pub fn new(
        loaded: hierarchy::LoadedCa,
        key: KeyPair,
        mut settings: Settings,
        leaf_not_after: LeafNotAfter,
    ) -> Result<Self> {
        let issuer_params = loaded.issuer_params()?;
        let id = loaded.issuer_id.clone();
        for url in settings
            .crl_urls
            .iter_mut()
            .chain(settings.issuing_certificate_urls.iter_mut())
        {
            *url = url.replace("{{issuer_id}}", &id);
        }
        Ok(Self {
            issuer_params,
            key,
            loaded,
            settings,
            leaf_not_after,
        })
    }

    /// The issuing certificate's notBefore.
    pub fn not_before(&self) -> OffsetDateTime {
        self.loaded.not_before
    }

    /// What happens to requests beyond this issuer's notAfter.
    pub fn leaf_not_after(&self) -> LeafNotAfter {
        self.leaf_not_after
    }

    /// The issuing CA's key identifier (its subject key identifier).
    pub fn key_id(&self) -> &[u8] {
        &self.loaded.key_id
    }

    /// The checked material (chain, alternates, subject).
    pub fn material(&self) -> &hierarchy::LoadedCa {
        &self.loaded
    }

    /// The CA's key as PKCS#8 DER, to rebuild it with other settings. Never logged or stored
    /// unsealed.
    pub(crate) fn key_pkcs8(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    /// Identifier of the issuing CA (hex subject key identifier).
    pub fn issuer_id(&self) -> &str {
        &self.loaded.issuer_id
    }

    /// The issuing CA's subject.
    pub fn subject(&self) -> &str {
        &self.loaded.subject
    }

    /// The issuing CA's notAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        self.loaded.not_after
    }

    /// Issuing certificate first, then its parents up to the root when known.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.loaded.chain
    }

    /// Trust anchors clients should trust.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.loaded.roots
    }

    /// Every chain offered for the issuing key: [`CertificateAuthority::chain`] first, then the alternates (e.g.
    /// cross-signed by a second root). Each starts with a certificate for the issuing CA and
    /// ends with its trust anchor.
    pub fn chains(&self) -> impl Iterator<Item = &[CertificateDer<'static>]> {
        std::iter::once(self.chain()).chain(self.loaded.alternates.iter().map(Vec::as_slice))
    }

    /// Issuance settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Signs a CRL listing `revoked` (serial, revocation time, RFC 5280 reason), valid from
    /// `this_update` for `lifetime`. The CRL number is `this_update` in milliseconds, which
    /// increases monotonically across replicas without coordination (as Boulder does).
    ///
    /// A shard's CRL (`shard_urls` non-empty) carries an issuingDistributionPoint naming those
    /// URLs, as RFC 5280 requires of a partitioned CRL.
    pub fn crl(
        &self,
        revoked: &[(Vec<u8>, i64, Option<i32>)],
        this_update: OffsetDateTime,
        lifetime: std::time::Duration,
        shard_urls: &[String],
    ) -> Result<Vec<u8>, IssueError> {
        use rcgen::{
            CertificateRevocationListParams, CrlIssuingDistributionPoint, CrlScope,
            RevocationReason, RevokedCertParams, SerialNumber,
        };
        let reason = |code: i32| match code {
            1 => Some(RevocationReason::KeyCompromise),
            2 => Some(RevocationReason::CaCompromise),
            3 => Some(RevocationReason::AffiliationChanged),
            4 => Some(RevocationReason::Superseded),
            5 => Some(RevocationReason::CessationOfOperation),
            6 => Some(RevocationReason::CertificateHold),
            8 => Some(RevocationReason::RemoveFromCrl),
            9 => Some(RevocationReason::PrivilegeWithdrawn),
            10 => Some(RevocationReason::AaCompromise),
            _ => None,
        };
        let millis = (this_update.unix_timestamp_nanos() / 1_000_000).max(1) as u64;
        let ski = self.loaded.key_id.clone();
        let params = CertificateRevocationListParams {
            this_update,
            next_update: this_update + lifetime,
            crl_number: SerialNumber::from_slice(&millis.to_be_bytes()),
            issuing_distribution_point: (!shard_urls.is_empty()).then(|| {
                CrlIssuingDistributionPoint {
                    distribution_point: CrlDistributionPoint {
                        uris: shard_urls.to_vec(),
                    },
                    scope: Some(CrlScope::UserCertsOnly),
                }
            }),
            revoked_certs: revoked
                .iter()
                .map(|(serial, at, code)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: OffsetDateTime::from_unix_timestamp(*at)
                        .unwrap_or(this_update),
                    reason_code: code.and_then(reason),
                    invalidity_date: None,
                })
                .collect(),
            // The CRL's authority key identifier must equal the issuing certificate's SKI.
            key_identifier_method: rcgen::KeyIdMethod::PreSpecified(ski),
        };
        let issuer = rcgen::Issuer::from_params(&self.issuer_params, &self.key);
        params
            .signed_by(&issuer)
            .map(|crl| crl.der().to_vec())
            .map_err(|e| IssueError::Signing(e.to_string()))
    }

    /// Builds and signs a certificate for `req`. Nothing is recorded; see [`Issuance::issue`].
    /// The to-be-signed certificate passes [`lint::check`] before the key signs it.
    pub fn sign(&self, req: &CertificateRequest) -> Result<SignedCertificate, IssueError> {
        let names = san_list(req)?;
        let mut warnings = Vec::new();
        let now = OffsetDateTime::now_utc();
        let lifetime = self.settings.lifetime(req.profile);
        // Never before the issuer's own notBefore: a freshly made CA would otherwise sign
        // certificates that predate it.
        let not_before = req
            .not_before
            .unwrap_or_else(|| now - self.settings.backdate)
            .max(self.loaded.not_before);
        let max_not_after = now + lifetime.max;
        // A requested lifetime beyond the maximum is only ever truncated, so it is capped before
        // the addition (a huge one would overflow the date).
        let requested = req.lifetime.unwrap_or(lifetime.default).min(
            lifetime
                .max
                .saturating_add(std::time::Duration::from_secs(1)),
        );
        let mut not_after = req.not_after.unwrap_or_else(|| now + requested);
        if not_after > max_not_after {
            warnings.push(format!(
                "requested lifetime is longer than the {} profile allows; truncated to {}",
                req.profile,
                crate::duration::format_go(lifetime.max)
            ));
            not_after = max_not_after;
        }
        if not_after > self.loaded.not_after && self.leaf_not_after == LeafNotAfter::Err {
            return Err(Violation::Validity(format!(
                "the requested notAfter is beyond the issuing CA's ({}); this issuer's \
                 leaf_not_after_behavior is err",
                self.loaded.not_after
            ))
            .into());
        }
        if not_after > self.loaded.not_after {
            warnings.push(
                "requested notAfter is beyond the issuing CA's; truncated to the CA's notAfter"
                    .to_owned(),
            );
            not_after = self.loaded.not_after;
        }
        if not_after <= now || not_after <= not_before {
            return Err(Violation::Validity(
                "the certificate would already be expired (notAfter is not in the future)".into(),
            )
            .into());
        }
        if req.name_constraints.is_some() && req.profile != Profile::Ca {
            return Err(Violation::Extension(
                "name constraints apply only to the ca profile".into(),
            )
            .into());
        }

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for (ty, value, _) in req.subject.entries() {
            dn.push(ty, value);
        }
        params.distinguished_name = dn;
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = serial::random();
        params.serial_number = Some(serial.clone());
        params.subject_alt_names = names.sans;
        params.use_authority_key_identifier_extension = true;
        apply_profile(&mut params, req);
        let crl_shard = (self.settings.crl_shards > 1)
            .then(|| shard_of(&serial.to_bytes(), self.settings.crl_shards));
        if !self.settings.crl_urls.is_empty() {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: crl_shard.map_or_else(
                    || self.settings.crl_urls.clone(),
                    |shard| shard_urls(&self.settings.crl_urls, shard),
                ),
            }];
        }
        if !self.settings.issuing_certificate_urls.is_empty() {
            params.custom_extensions.push(authority_info_access(
                &self.settings.issuing_certificate_urls,
            ));
        }
        if let Some(nc) = req.name_constraints.as_ref().filter(|nc| !nc.is_empty()) {
            params.custom_extensions.push(nc.to_extension());
        }

        let gate = lint::GatedKey::new(
            &self.key,
            lint::Expectations {
                profile: req.profile,
                issuer_subject: &self.loaded.subject_der,
                issuer_key_id: &self.loaded.key_id,
                issuer_not_before: self.loaded.not_before,
                issuer_not_after: self.loaded.not_after,
                max_validity: lifetime.max + self.settings.backdate,
                public_key: req.public_key.raw(),
                limits: self.settings.limits,
            },
        );
        let issuer = rcgen::Issuer::from_params(&self.issuer_params, &gate);
        let cert =
            params
                .signed_by(&req.public_key, &issuer)
                .map_err(|e| match gate.refusal() {
                    Some(violation) => IssueError::Rejected(violation),
                    None => IssueError::Signing(e.to_string()),
                })?;
        Ok(SignedCertificate {
            der: cert.der().clone(),
            issuer_id: self.loaded.issuer_id.clone(),
            chain: self.loaded.chain.clone(),
            serial: serial.to_bytes(),
            not_before,
            not_after,
            subject: req.subject.to_rfc4514(),
            spiffe_id: names.spiffe_id,
            warnings,
            crl_shard,
        })
    }
}

/// The CRL shard of a serial: its low 8 bytes modulo the shard count (Boulder's scheme). The
/// shard is written into the certificate and the ledger, so changing the count later only
/// affects new certificates.
pub fn shard_of(serial: &[u8], shards: u32) -> u32 {
    let mut low = [0u8; 8];
    let tail = &serial[serial.len().saturating_sub(8)..];
    low[8 - tail.len()..].copy_from_slice(tail);
    (u64::from_be_bytes(low) % u64::from(shards.max(1))) as u32
}

/// The distribution point URLs of one shard: `<url>/<shard>`.
pub fn shard_urls(urls: &[String], shard: u32) -> Vec<String> {
    urls.iter()
        .map(|u| format!("{}/{shard}", u.trim_end_matches('/')))
        .collect()
}

struct SanList {
    sans: Vec<SanType>,
    spiffe_id: Option<String>,
}

/// The request's names as rcgen SANs (DNS names normalised). Rules about which names a profile
/// needs, and their syntax and size, are [`lint`]'s, applied to the certificate as built.
fn san_list(req: &CertificateRequest) -> Result<SanList, IssueError> {
    let invalid = |kind: &'static str, value: &str| {
        IssueError::Rejected(Violation::InvalidName {
            kind,
            value: value.chars().take(80).collect(),
        })
    };
    let mut sans = Vec::with_capacity(
        req.dns_names.len() + req.ip_addresses.len() + req.uris.len() + req.emails.len(),
    );
    for name in &req.dns_names {
        let n = normalize_dns_name(name).ok_or_else(|| invalid("DNS name", name))?;
        sans.push(SanType::DnsName(
            ia5(&n).map_err(|_| invalid("DNS name", name))?,
        ));
    }
    sans.extend(req.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
    let mut spiffe_id = None;
    for uri in &req.uris {
        if uri
            .get(..9)
            .is_some_and(|p| p.eq_ignore_ascii_case("spiffe://"))
        {
            let id = SpiffeId::parse(uri)
                .map_err(|e| IssueError::Rejected(Violation::Names(e.to_string())))?;
            spiffe_id = Some(id.to_string());
        }
        sans.push(SanType::URI(ia5(uri).map_err(|_| invalid("URI", uri))?));
    }
    for email in &req.emails {
        sans.push(SanType::Rfc822Name(
            ia5(email).map_err(|_| invalid("e-mail address", email))?,
        ));
    }
    Ok(SanList { sans, spiffe_id })
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String, rcgen::Error> {
    rcgen::string::Ia5String::try_from(s)
}

fn apply_profile(params: &mut CertificateParams, req: &CertificateRequest) {
    if req.profile == Profile::Ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        return;
    }
    // ExplicitNoCa writes basicConstraints cA=false and the subject key identifier.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if req.public_key.algorithm().is_rsa() {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    if req.profile.server_auth() {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if req.profile.client_auth() {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
}

/// authorityInfoAccess with caIssuers URLs (RFC 5280 4.2.2.1).
fn authority_info_access(urls: &[String]) -> CustomExtension {
    const CA_ISSUERS: [u8; 8] = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];
    let descriptions: Vec<Vec<u8>> = urls
        .iter()
        .map(|u| asn1::sequence(&[asn1::tlv(0x06, &CA_ISSUERS), asn1::tlv(0x86, u.as_bytes())]))
        .collect();
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], asn1::sequence(&descriptions))
}

/// Signing plus recording: the one way certificates leave the CA.
#[derive(Clone)]
pub struct Issuance {
    issuers: Arc<set::Issuers>,
    ledger: LedgerWriter,
    metrics: Metrics,
}

impl std::fmt::Debug for Issuance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuance")
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

impl Issuance {
    /// Pairs the issuers with the ledger's writer.
    pub fn new(issuers: Arc<set::Issuers>, ledger: LedgerWriter, metrics: Metrics) -> Self {
        Self {
            issuers,
            ledger,
            metrics,
        }
    }

    /// The issuers.
    pub fn issuers(&self) -> &Arc<set::Issuers> {
        &self.issuers
    }

    /// The process's event metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts a request refused before signing (policy, bad input) for `ca_issuance_total`.
    pub fn refused(&self, protocol: ca_store::Protocol, profile: &str) {
        self.metrics.issuance(
            protocol,
            self.ca().issuer_id(),
            profile,
            IssuanceResult::Refused,
        );
    }

    /// The issuer that signs now (the default).
    pub fn ca(&self) -> Arc<CertificateAuthority> {
        Arc::clone(self.issuers.current().default_ca())
    }

    /// Signs `req` with the default issuer and records the result durably; only then returns it.
    pub async fn issue(
        &self,
        req: &CertificateRequest,
        requester: &Requester,
        request_id: &str,
    ) -> Result<SignedCertificate, IssueError> {
        self.issue_with(&self.ca(), req, requester, request_id)
            .await
    }

    /// Signs `req` with `ca` (one of the issuers) and records the result durably.
    pub async fn issue_with(
        &self,
        ca: &Arc<CertificateAuthority>,
        req: &CertificateRequest,
        requester: &Requester,
        request_id: &str,
    ) -> Result<SignedCertificate, IssueError> {
        let started = std::time::Instant::now();
        let result = self.sign_and_record(ca, req, requester, request_id).await;
        let profile = req.profile.name();
        // Refusals (Rejected, Csr) are counted by the protocol edge, which also sees the ones
        // that never reach the CA.
        let outcome = match &result {
            Ok(_) => {
                self.metrics
                    .issuance_duration(requester.protocol, profile, started.elapsed());
                Some(IssuanceResult::Issued)
            }
            Err(IssueError::Ledger(_) | IssueError::Signing(_)) => Some(IssuanceResult::Error),
            Err(_) => None,
        };
        if let Some(outcome) = outcome {
            self.metrics
                .issuance(requester.protocol, ca.issuer_id(), profile, outcome);
        }
        result
    }

    async fn sign_and_record(
        &self,
        ca: &Arc<CertificateAuthority>,
        req: &CertificateRequest,
        requester: &Requester,
        request_id: &str,
    ) -> Result<SignedCertificate, IssueError> {
        // A serial collision (UNIQUE violation) is retried with a fresh serial.
        for _ in 0..3 {
            let signed = ca.sign(req)?;
            let row = self.ledger_row(req, &signed, requester, request_id);
            let started = std::time::Instant::now();
            let recorded = self.ledger.record(row).await;
            self.metrics.ledger_write(started.elapsed());
            match recorded {
                Ok(()) => return Ok(signed),
                Err(ca_store::Error::AlreadyExists) => continue,
                Err(e) => return Err(IssueError::Ledger(e)),
            }
        }
        Err(IssueError::Ledger(ca_store::Error::AlreadyExists))
    }

    fn ledger_row(
        &self,
        req: &CertificateRequest,
        signed: &SignedCertificate,
        requester: &Requester,
        request_id: &str,
    ) -> NewCertificate {
        NewCertificate {
            serial: signed.serial.clone(),
            issuer_id: signed.issuer_id.clone(),
            profile: req.profile.name().to_owned(),
            subject: signed.subject.clone(),
            common_name: req.subject.common_name.clone(),
            dns_names: req
                .dns_names
                .iter()
                .filter_map(|n| normalize_dns_name(n))
                .collect(),
            ip_addresses: req.ip_addresses.iter().map(IpAddr::to_string).collect(),
            uris: req.uris.clone(),
            emails: req.emails.clone(),
            spiffe_id: signed.spiffe_id.clone(),
            key_algorithm: req.public_key.algorithm().to_string(),
            not_before: signed.not_before.unix_timestamp(),
            not_after: signed.not_after.unix_timestamp(),
            requester: requester.clone(),
            request_id: request_id.to_owned(),
            created_at: OffsetDateTime::now_utc().unix_timestamp(),
            der: signed.der.to_vec(),
            crl_shard: signed.crl_shard,
            workload_namespace: crate::names::workload_namespace(
                signed.spiffe_id.as_deref(),
                &req.dns_names,
            ),
        }
    }
}

#[cfg(test)]
mod tests;
