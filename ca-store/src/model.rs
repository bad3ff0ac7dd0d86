//! Ledger row types shared by both backends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The protocol through which a certificate was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// RFC 8555 ACME.
    Acme,
    /// The Vault-compatible PKI API.
    Vault,
    /// The `ca-server` command line, run by an operator.
    Cli,
    /// Issued by the server to itself (its own serving certificate).
    Internal,
    /// Not issued by us: found by `ca-server ledger observe` (files, kubeconfigs, endpoints).
    Observed,
}

impl Protocol {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Acme => "acme",
            Protocol::Vault => "vault",
            Protocol::Cli => "cli",
            Protocol::Internal => "internal",
            Protocol::Observed => "observed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "acme" => Protocol::Acme,
            "vault" => Protocol::Vault,
            "cli" => Protocol::Cli,
            "internal" => Protocol::Internal,
            "observed" => Protocol::Observed,
            _ => return None,
        })
    }
}

/// Who asked for a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// Through which protocol.
    pub protocol: Protocol,
    /// The authenticated identity: ACME account URL, Vault auth identity, operator name…
    pub identity: String,
    /// Kubernetes namespace of the requester, when known.
    pub namespace: Option<String>,
    /// Kubernetes service account of the requester, when known.
    pub service_account: Option<String>,
    /// Protocol-specific detail: ACME order and EAB key id, Vault mount, role and auth mount…
    pub detail: BTreeMap<String, String>,
}

impl Requester {
    /// A requester with only a protocol and an identity.
    pub fn new(protocol: Protocol, identity: impl Into<String>) -> Self {
        Self {
            protocol,
            identity: identity.into(),
            namespace: None,
            service_account: None,
            detail: BTreeMap::new(),
        }
    }
}

/// A certificate to record. Every field is known at signing time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCertificate {
    /// Serial number, big-endian, as encoded in the certificate (without a sign byte).
    pub serial: Vec<u8>,
    /// Identifier of the issuing CA.
    pub issuer_id: String,
    /// Issuance profile (`tls-server`, `spiffe`, …).
    pub profile: String,
    /// Subject distinguished name (RFC 4514), empty when the subject is empty.
    pub subject: String,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP address SANs, in text form.
    pub ip_addresses: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// E-mail SANs.
    pub emails: Vec<String>,
    /// The SPIFFE ID, for SVIDs.
    pub spiffe_id: Option<String>,
    /// Subject key algorithm, e.g. `ECDSA-P256`, `RSA-2048`.
    pub key_algorithm: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Who asked.
    pub requester: Requester,
    /// Correlates with request logs.
    pub request_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The CRL shard its distribution point names, when CRLs are sharded.
    pub crl_shard: Option<u32>,
    /// The workload's namespace, where the certificate names it (SPIFFE `ns/…`,
    /// `<svc>.<ns>.svc[.<domain>]`); the requester's is [`Requester::namespace`].
    pub workload_namespace: Option<String>,
}

/// Where a ledger row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Issued by this CA.
    Issued,
    /// Issued elsewhere and found by `ca-server ledger observe`.
    Observed,
}

impl Origin {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Issued => "issued",
            Origin::Observed => "observed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "issued" => Some(Origin::Issued),
            "observed" => Some(Origin::Observed),
            _ => None,
        }
    }
}

/// A certificate issued elsewhere, found in a file, a kubeconfig or a TLS endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedCertificate {
    /// The certificate's fields, as for an issued one; `requester.protocol` is
    /// [`Protocol::Observed`] and `requester.identity` the source.
    pub certificate: NewCertificate,
    /// Where it was found: `file:/etc/kubernetes/pki/apiserver.crt`, `kubeconfig:/etc/kubernetes/
    /// admin.conf`, `tls:api.example.com:443`.
    pub source: String,
    /// What reports call it (kubeadm's names: `apiserver`, `etcd-server`, `admin.conf`…).
    pub name: String,
}

/// What [`crate::Ledger::record_observed`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObserveOutcome {
    /// Certificates seen for the first time.
    pub inserted: u64,
    /// Certificates already observed (their source and observation time were updated).
    pub updated: u64,
    /// Certificates this CA issued itself (already in the ledger; left as they are).
    pub already_issued: u64,
}

/// A recorded certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Ledger row id (stable, increasing; used for pagination).
    pub id: i64,
    /// What was recorded at issuance. `der` is empty once retention removed it.
    pub certificate: NewCertificate,
    /// Unix seconds of revocation, if revoked.
    pub revoked_at: Option<i64>,
    /// RFC 5280 CRLReason code, if revoked.
    pub revocation_reason: Option<i32>,
    /// Issued by us or observed.
    pub origin: Origin,
    /// Where an observed certificate was found.
    pub source: Option<String>,
    /// What reports call the certificate.
    pub name: String,
    /// SHA-256 of the DER (empty for rows recorded before fingerprints were kept).
    pub fingerprint: Vec<u8>,
    /// When a newer certificate for the same requester and names was recorded.
    pub superseded_at: Option<i64>,
    /// Last time an observed certificate was seen.
    pub observed_at: Option<i64>,
}

/// Filters and pagination for expiry-ordered reads.
#[derive(Debug, Clone, Default)]
pub struct ExpiryQuery {
    /// Only certificates with `not_after >= not_after_from` (e.g. now, to skip expired ones).
    pub not_after_from: Option<i64>,
    /// Only certificates with `not_after <= not_after_until` (e.g. now + 7 days: a certificate
    /// expiring exactly then is within the window).
    pub not_after_until: Option<i64>,
    /// Only this issuer.
    pub issuer_id: Option<String>,
    /// Only this profile.
    pub profile: Option<String>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Include revoked certificates.
    pub include_revoked: bool,
    /// Only revoked certificates (for CRLs).
    pub revoked_only: bool,
    /// Only issued or only observed certificates.
    pub origin: Option<Origin>,
    /// Skip certificates that a newer one for the same requester and names replaced. Reports set
    /// this; CRLs must not (a renewed certificate that was revoked stays on the CRL).
    pub exclude_superseded: bool,
    /// Only SPIFFE IDs starting with this prefix (e.g. `spiffe://cluster.local/ns/payments/`).
    pub spiffe_prefix: Option<String>,
    /// Only certificates naming this DNS name, IP address, URI or e-mail (exact match), or with
    /// this common name.
    pub san: Option<String>,
    /// Only certificates requested by this identity (ACME account URL, Vault auth identity,
    /// observation source).
    pub requester: Option<String>,
    /// Only certificates whose distribution point names this CRL shard.
    pub crl_shard: Option<u32>,
    /// Only this serial (issued and observed certificates may share one).
    pub serial: Option<Vec<u8>>,
    /// Continue after this `(not_after, id)` position (cursor pagination).
    pub after: Option<(i64, i64)>,
    /// Page size; 0 means the default of 100.
    pub limit: u32,
}

impl ExpiryQuery {
    pub(crate) fn page_size(&self) -> i64 {
        match self.limit {
            0 => 100,
            n => i64::from(n.min(10_000)),
        }
    }
}

/// Columns in insert order; both backends bind values in this order.
pub(crate) const INSERT_COLUMNS: &str = "serial, issuer_id, profile, subject, common_name, \
     dns_names, ip_addresses, uris, emails, spiffe_id, key_algorithm, not_before, not_after, \
     protocol, requester, namespace, service_account, requester_detail, request_id, created_at, \
     der, origin, source, name, fingerprint, lineage, observed_at, crl_shard, workload_namespace";

pub(crate) const SELECT_COLUMNS: &str = "id, serial, issuer_id, profile, subject, common_name, \
     dns_names, ip_addresses, uris, emails, spiffe_id, key_algorithm, not_before, not_after, \
     protocol, requester, namespace, service_account, requester_detail, request_id, created_at, \
     revoked_at, revocation_reason, der, origin, source, name, fingerprint, superseded_at, \
     observed_at, crl_shard, workload_namespace";

/// SHA-256 of a certificate's DER.
pub(crate) fn fingerprint(der: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .to_vec()
}

/// What reports call an issued certificate: its common name, else its first SAN.
pub(crate) fn display_name(c: &NewCertificate) -> String {
    c.common_name
        .iter()
        .chain(&c.dns_names)
        .chain(&c.spiffe_id)
        .chain(&c.uris)
        .chain(&c.ip_addresses)
        .chain(&c.emails)
        .find(|n| !n.is_empty())
        .cloned()
        .unwrap_or_default()
}

/// "Same requester, same profile, same names": certificates of one lineage replace each other.
/// The names are compared as a set, case-insensitively; the issuer is left out so a certificate
/// from a rotated CA still replaces one from the old CA.
pub(crate) fn issued_lineage(c: &NewCertificate) -> Vec<u8> {
    let mut names: Vec<String> = c
        .common_name
        .iter()
        .map(|n| format!("cn:{n}"))
        .chain(c.dns_names.iter().map(|n| format!("dns:{n}")))
        .chain(c.ip_addresses.iter().map(|n| format!("ip:{n}")))
        .chain(c.uris.iter().map(|n| format!("uri:{n}")))
        .chain(c.emails.iter().map(|n| format!("email:{n}")))
        .map(|n| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    lineage_hash(&[
        "issued",
        &c.requester.identity,
        &c.profile,
        &names.join("\n"),
    ])
}

/// Observed certificates replace each other when found at the same source with the same subject.
pub(crate) fn observed_lineage(source: &str, subject: &str) -> Vec<u8> {
    lineage_hash(&["observed", source, subject])
}

fn lineage_hash(parts: &[&str]) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    // 16 bytes are plenty to keep lineages apart and keep the index small.
    ctx.finish().as_ref()[..16].to_vec()
}

/// A row as stored (JSON columns still encoded); decoded by [`RawRow::into_record`].
#[derive(sqlx::FromRow)]
pub(crate) struct RawRow {
    id: i64,
    serial: Vec<u8>,
    issuer_id: String,
    profile: String,
    subject: String,
    common_name: Option<String>,
    dns_names: String,
    ip_addresses: String,
    uris: String,
    emails: String,
    spiffe_id: Option<String>,
    key_algorithm: String,
    not_before: i64,
    not_after: i64,
    protocol: String,
    requester: String,
    namespace: Option<String>,
    service_account: Option<String>,
    requester_detail: String,
    request_id: String,
    created_at: i64,
    revoked_at: Option<i64>,
    revocation_reason: Option<i32>,
    der: Option<Vec<u8>>,
    origin: String,
    source: Option<String>,
    name: String,
    fingerprint: Option<Vec<u8>>,
    superseded_at: Option<i64>,
    observed_at: Option<i64>,
    crl_shard: Option<i64>,
    workload_namespace: Option<String>,
}

fn json_list(column: &str, value: &str) -> Result<Vec<String>, crate::Error> {
    serde_json::from_str(value).map_err(|e| crate::Error::Corrupt(format!("{column}: {e}")))
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> String {
    // Serialising lists and maps of strings cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

impl RawRow {
    /// A row of [`SELECT_COLUMNS`] read through rusqlite ([`crate::sqlite_inline`]).
    pub(crate) fn from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get("id")?,
            serial: row.get("serial")?,
            issuer_id: row.get("issuer_id")?,
            profile: row.get("profile")?,
            subject: row.get("subject")?,
            common_name: row.get("common_name")?,
            dns_names: row.get("dns_names")?,
            ip_addresses: row.get("ip_addresses")?,
            uris: row.get("uris")?,
            emails: row.get("emails")?,
            spiffe_id: row.get("spiffe_id")?,
            key_algorithm: row.get("key_algorithm")?,
            not_before: row.get("not_before")?,
            not_after: row.get("not_after")?,
            protocol: row.get("protocol")?,
            requester: row.get("requester")?,
            namespace: row.get("namespace")?,
            service_account: row.get("service_account")?,
            requester_detail: row.get("requester_detail")?,
            request_id: row.get("request_id")?,
            created_at: row.get("created_at")?,
            revoked_at: row.get("revoked_at")?,
            revocation_reason: row.get("revocation_reason")?,
            der: row.get("der")?,
            origin: row.get("origin")?,
            source: row.get("source")?,
            name: row.get("name")?,
            fingerprint: row.get("fingerprint")?,
            superseded_at: row.get("superseded_at")?,
            observed_at: row.get("observed_at")?,
            crl_shard: row.get("crl_shard")?,
            workload_namespace: row.get("workload_namespace")?,
        })
    }

    pub(crate) fn into_record(self) -> Result<CertificateRecord, crate::Error> {
        let protocol = Protocol::parse(&self.protocol)
            .ok_or_else(|| crate::Error::Corrupt(format!("protocol {:?}", self.protocol)))?;
        let detail: BTreeMap<String, String> = serde_json::from_str(&self.requester_detail)
            .map_err(|e| crate::Error::Corrupt(format!("requester_detail: {e}")))?;
        let origin = Origin::parse(&self.origin)
            .ok_or_else(|| crate::Error::Corrupt(format!("origin {:?}", self.origin)))?;
        Ok(CertificateRecord {
            id: self.id,
            certificate: NewCertificate {
                serial: self.serial,
                issuer_id: self.issuer_id,
                profile: self.profile,
                subject: self.subject,
                common_name: self.common_name,
                dns_names: json_list("dns_names", &self.dns_names)?,
                ip_addresses: json_list("ip_addresses", &self.ip_addresses)?,
                uris: json_list("uris", &self.uris)?,
                emails: json_list("emails", &self.emails)?,
                spiffe_id: self.spiffe_id,
                key_algorithm: self.key_algorithm,
                not_before: self.not_before,
                not_after: self.not_after,
                requester: Requester {
                    protocol,
                    identity: self.requester,
                    namespace: self.namespace,
                    service_account: self.service_account,
                    detail,
                },
                request_id: self.request_id,
                created_at: self.created_at,
                der: self.der.unwrap_or_default(),
                crl_shard: self.crl_shard.and_then(|s| u32::try_from(s).ok()),
                workload_namespace: self.workload_namespace,
            },
            revoked_at: self.revoked_at,
            revocation_reason: self.revocation_reason,
            origin,
            source: self.source,
            name: self.name,
            fingerprint: self.fingerprint.unwrap_or_default(),
            superseded_at: self.superseded_at,
            observed_at: self.observed_at,
        })
    }
}
