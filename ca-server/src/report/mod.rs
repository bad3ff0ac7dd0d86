//! Expiry reports over the ledger: one query ([`Filters`] → [`ExpiryQuery`]), three renderings.
//!
//! * **table**, like `kubeadm certs check-expiration`: name, expiry (`Jan 02, 2006 15:04 UTC`),
//!   residual time (`348d`, `23h`, `<invalid>` once expired), issuing CA; then our CA certificates;
//! * **json**, kubeadm's `CertificateExpirationInfo` (`certificates[]`, `certificateAuthorities[]`
//!   with `name`, `expirationDate`, `residualTime` in seconds, `caName`…) extended with serial,
//!   SANs, SPIFFE ID, requester, profile, namespace, origin and revocation;
//! * **csv**, a header row and RFC 3339 times.
//!
//! Used by `ca-server ledger …` and by `GET /v1/ledger/certificates`
//! ([`crate::vault::ledger`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use ca_store::{CertificateRecord, ExpiryQuery, Origin};
use serde::Serialize;
use time::OffsetDateTime;

/// Report filters, shared by the CLI flags and the HTTP query parameters.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filters {
    /// Only certificates expiring within this duration from now (e.g. `30d`, `12h`).
    #[arg(long, value_parser = parse_duration)]
    pub within: Option<Duration>,
    /// Also list certificates that already expired (and were not renewed).
    #[arg(long)]
    pub include_expired: bool,
    /// Only this issuer (our issuer id, or an observed certificate's issuer name).
    #[arg(long)]
    pub issuer: Option<String>,
    /// Only this profile (`tls-server`, `spiffe`, `ca`…).
    #[arg(long)]
    pub profile: Option<String>,
    /// Only this requester namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only SPIFFE IDs with this prefix, e.g. `spiffe://cluster.local/ns/payments/`.
    #[arg(long)]
    pub spiffe_prefix: Option<String>,
    /// Only certificates naming this DNS name, IP, URI, e-mail or common name (exact).
    #[arg(long)]
    pub san: Option<String>,
    /// Only this requester (ACME account URL, Vault identity, observation source).
    #[arg(long)]
    pub requester: Option<String>,
    /// Only issued or only observed certificates.
    #[arg(long, value_parser = parse_origin)]
    pub origin: Option<Origin>,
    /// Include revoked certificates.
    #[arg(long)]
    pub include_revoked: bool,
    /// Include certificates already replaced by a newer one for the same requester and names.
    #[arg(long)]
    pub include_superseded: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

fn parse_origin(s: &str) -> Result<Origin, String> {
    Origin::parse(s).ok_or_else(|| format!("origin must be issued or observed, not {s:?}"))
}

impl Filters {
    /// The ledger query for these filters at `now` (Unix seconds).
    pub fn to_query(&self, now: i64) -> ExpiryQuery {
        ExpiryQuery {
            not_after_from: (!self.include_expired).then_some(now),
            not_after_until: self
                .within
                .map(|w| now.saturating_add(i64::try_from(w.as_secs()).unwrap_or(i64::MAX))),
            issuer_id: self.issuer.clone(),
            profile: self.profile.clone(),
            namespace: self.namespace.clone(),
            include_revoked: self.include_revoked,
            revoked_only: false,
            origin: self.origin,
            exclude_superseded: !self.include_superseded,
            spiffe_prefix: self.spiffe_prefix.clone(),
            san: self.san.clone(),
            requester: self.requester.clone(),
            serial: None,
            crl_shard: None,
            after: None,
            limit: 0,
        }
    }
}

/// One certificate in a report (the JSON item; CSV and table use the same fields).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// What the report calls it.
    pub name: String,
    /// notAfter, RFC 3339 UTC.
    pub expiration_date: String,
    /// Seconds until notAfter (negative once expired).
    pub residual_time: i64,
    /// Not issued by us (observed elsewhere).
    pub externally_managed: bool,
    /// The issuing CA's name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ca_name: String,
    /// Serial number, lower-case hex with colons (as Vault prints it).
    pub serial: String,
    /// notBefore, RFC 3339 UTC.
    pub not_before: String,
    /// Subject DN.
    pub subject: String,
    /// DNS, IP, URI and e-mail SANs.
    pub sans: Vec<String>,
    /// SPIFFE ID, for SVIDs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Issuance profile.
    pub profile: String,
    /// Issuer id as stored in the ledger.
    pub issuer_id: String,
    /// Requester namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The workload's namespace, where the certificate names one (SPIFFE `ns/…`,
    /// `<svc>.<ns>.svc`): the team a certificate cert-manager asked for belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_namespace: Option<String>,
    /// Who asked (or where it was observed).
    pub requester: String,
    /// `acme`, `vault`, `cli`, `internal` or `observed`.
    pub protocol: String,
    /// `issued` or `observed`.
    pub origin: String,
    /// Where an observed certificate was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// SHA-256 of the DER, hex.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fingerprint_sha256: String,
    /// Revocation, if revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    /// When a newer certificate replaced it, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_at: Option<String>,
}

/// Revocation details.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// RFC 3339 UTC.
    pub revoked_at: String,
    /// RFC 5280 CRLReason code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<i32>,
}

/// A CA certificate for the `certificateAuthorities` section.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorityItem {
    /// Subject common name (or DN).
    pub name: String,
    /// notAfter, RFC 3339 UTC.
    pub expiration_date: String,
    /// Seconds until notAfter.
    pub residual_time: i64,
    /// False: we hold the key.
    pub externally_managed: bool,
    /// `issuing`, `intermediate` or `root`.
    pub role: String,
}

/// Lower-case colon hex (as Vault prints serials).
pub use crate::issuer::serial::to_colon_hex as colon_hex;

/// Parses a serial in hex, with or without colons.
pub use crate::issuer::serial::from_hex as parse_serial;

/// RFC 3339 UTC with seconds.
pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// kubeadm's `Jan 02, 2006 15:04 UTC`.
pub fn kubeadm_date(t: i64) -> String {
    let format =
        time::macros::format_description!("[month repr:short] [day], [year] [hour]:[minute] UTC");
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}

/// An RFC 3339 expiry (as the JSON report carries it) in kubeadm's format; unchanged if unparsable.
fn kubeadm_date_of(rfc3339: &str) -> String {
    OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map_or_else(|_| rfc3339.to_owned(), |t| kubeadm_date(t.unix_timestamp()))
}

/// Kubernetes' `ShortHumanDuration`: `45s`, `12m`, `23h`, `348d`, `6y`; `<invalid>` when past.
pub fn residual(seconds: i64) -> String {
    if seconds < -1 {
        "<invalid>".into()
    } else if seconds < 0 {
        "0s".into()
    } else if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3600 {
        format!("{}m", seconds / 60)
    } else if seconds < 86_400 {
        format!("{}h", seconds / 3600)
    } else if seconds < 365 * 86_400 {
        format!("{}d", seconds / 86_400)
    } else {
        format!("{}y", seconds / (365 * 86_400))
    }
}

/// Turns a ledger row into a report item. `ca_names` maps our issuer ids to readable names.
pub fn item(r: &CertificateRecord, now: i64, ca_names: &BTreeMap<String, String>) -> Item {
    let c = &r.certificate;
    let sans: Vec<String> = c
        .dns_names
        .iter()
        .chain(&c.ip_addresses)
        .chain(&c.uris)
        .chain(&c.emails)
        .cloned()
        .collect();
    Item {
        name: if r.name.is_empty() {
            colon_hex(&c.serial)
        } else {
            r.name.clone()
        },
        expiration_date: rfc3339(c.not_after),
        residual_time: c.not_after - now,
        externally_managed: r.origin == Origin::Observed,
        ca_name: ca_names
            .get(&c.issuer_id)
            .cloned()
            .unwrap_or_else(|| c.issuer_id.clone()),
        serial: colon_hex(&c.serial),
        not_before: rfc3339(c.not_before),
        subject: c.subject.clone(),
        sans,
        spiffe_id: c.spiffe_id.clone(),
        profile: c.profile.clone(),
        issuer_id: c.issuer_id.clone(),
        namespace: c.requester.namespace.clone(),
        workload_namespace: c.workload_namespace.clone(),
        requester: c.requester.identity.clone(),
        protocol: c.requester.protocol.as_str().to_owned(),
        origin: r.origin.as_str().to_owned(),
        source: r.source.clone(),
        fingerprint_sha256: r.fingerprint.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }),
        revocation: r.revoked_at.map(|at| Revocation {
            revoked_at: rfc3339(at),
            reason: r.revocation_reason,
        }),
        superseded_at: r.superseded_at.map(rfc3339),
    }
}

/// Our CA certificates as report items: every live issuer's chain (the default's first), each
/// certificate once.
pub fn authorities(issuers: &crate::issuer::set::IssuerSet, now: i64) -> Vec<AuthorityItem> {
    let mut out: Vec<AuthorityItem> = Vec::new();
    let mut members: Vec<&crate::issuer::set::Member> = vec![issuers.default_member()];
    members.extend(
        issuers
            .members()
            .iter()
            .filter(|m| m.ca.issuer_id() != issuers.default_ca().issuer_id())
            .filter(|m| m.ca.not_after().unix_timestamp() > now),
    );
    for member in members {
        for (i, der) in member
            .ca
            .chain()
            .iter()
            .chain(member.ca.roots())
            .enumerate()
        {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
                continue;
            };
            let name = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map_or_else(|| cert.subject().to_string(), str::to_owned);
            if out.iter().any(|a| a.name == name) {
                continue;
            }
            let not_after = cert.validity().not_after.timestamp();
            out.push(AuthorityItem {
                name,
                expiration_date: rfc3339(not_after),
                residual_time: not_after - now,
                externally_managed: false,
                role: if i == 0 {
                    "issuing"
                } else if cert.subject() == cert.issuer() {
                    "root"
                } else {
                    "intermediate"
                }
                .into(),
            });
        }
    }
    out
}

/// `issuer id → issuing CA name` for each of our issuers, so reports show a name, not a hash.
pub fn ca_names(issuers: &crate::issuer::set::IssuerSet) -> BTreeMap<String, String> {
    issuers
        .members()
        .iter()
        .map(|m| {
            let name = x509_parser::parse_x509_certificate(&m.ca.chain()[0])
                .ok()
                .and_then(|(_, cert)| {
                    cert.subject()
                        .iter_common_name()
                        .next()
                        .and_then(|cn| cn.as_str().ok())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| m.ca.subject().to_owned());
            (m.ca.issuer_id().to_owned(), name)
        })
        .collect()
}

/// The JSON document: kubeadm's `CertificateExpirationInfo`, extended.
pub fn json(items: &[Item], authorities: &[AuthorityItem]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "output.ca-server.dev/v1alpha1",
        "kind": "CertificateExpirationInfo",
        "certificates": items,
        "certificateAuthorities": authorities,
    })
}

/// Aligned columns separated by three spaces, like Go's tabwriter in kubeadm.
fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 3;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The kubeadm-style table: certificates, then certificate authorities.
pub fn table(items: &[Item], authorities: &[AuthorityItem]) -> String {
    let mut rows = vec![
        [
            "CERTIFICATE",
            "EXPIRES",
            "RESIDUAL TIME",
            "CERTIFICATE AUTHORITY",
            "PROFILE",
            "NAMESPACE",
            "EXTERNALLY MANAGED",
            "SERIAL",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for i in items {
        let expires = kubeadm_date_of(&i.expiration_date);
        rows.push(vec![
            i.name.clone(),
            expires,
            residual(i.residual_time),
            i.ca_name.clone(),
            i.profile.clone(),
            i.namespace.clone().unwrap_or_default(),
            if i.externally_managed { "yes" } else { "no" }.into(),
            i.serial.clone(),
        ]);
    }
    let mut out = columns(&rows);
    if !authorities.is_empty() {
        let mut rows = vec![
            [
                "CERTIFICATE AUTHORITY",
                "EXPIRES",
                "RESIDUAL TIME",
                "EXTERNALLY MANAGED",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for a in authorities {
            let expires = kubeadm_date_of(&a.expiration_date);
            rows.push(vec![
                a.name.clone(),
                expires,
                residual(a.residual_time),
                "no".into(),
            ]);
        }
        out.push('\n');
        out.push_str(&columns(&rows));
    }
    out
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// CSV (RFC 4180) with a header row; list fields joined with spaces.
pub fn csv(items: &[Item]) -> String {
    let mut out = String::from(
        "name,serial,not_before,not_after,residual_seconds,issuer,profile,namespace,workload_namespace,requester,\
         protocol,origin,source,subject,sans,spiffe_id,revoked_at,revocation_reason,\
         superseded_at,fingerprint_sha256\r\n",
    );
    for i in items {
        let fields = [
            i.name.clone(),
            i.serial.clone(),
            i.not_before.clone(),
            i.expiration_date.clone(),
            i.residual_time.to_string(),
            i.ca_name.clone(),
            i.profile.clone(),
            i.namespace.clone().unwrap_or_default(),
            i.workload_namespace.clone().unwrap_or_default(),
            i.requester.clone(),
            i.protocol.clone(),
            i.origin.clone(),
            i.source.clone().unwrap_or_default(),
            i.subject.clone(),
            i.sans.join(" "),
            i.spiffe_id.clone().unwrap_or_default(),
            i.revocation
                .as_ref()
                .map(|r| r.revoked_at.clone())
                .unwrap_or_default(),
            i.revocation
                .as_ref()
                .and_then(|r| r.reason)
                .map(|r| r.to_string())
                .unwrap_or_default(),
            i.superseded_at.clone().unwrap_or_default(),
            i.fingerprint_sha256.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_matches_kubernetes_short_human_duration() {
        assert_eq!(residual(-5), "<invalid>");
        assert_eq!(residual(45), "45s");
        assert_eq!(residual(12 * 60 + 5), "12m");
        assert_eq!(residual(23 * 3600 + 59), "23h");
        assert_eq!(residual(348 * 86_400), "348d");
        assert_eq!(residual(6 * 365 * 86_400 + 10), "6y");
    }

    #[test]
    fn kubeadm_dates() {
        // 2024-04-09T09:17:00Z
        assert_eq!(kubeadm_date(1_712_654_220), "Apr 09, 2024 09:17 UTC");
    }

    #[test]
    fn serials_parse_with_or_without_colons() {
        assert_eq!(parse_serial("1a:2b"), Some(vec![0x1a, 0x2b]));
        assert_eq!(parse_serial("001A2B"), Some(vec![0x1a, 0x2b]));
        assert_eq!(parse_serial("1a2"), None);
        assert_eq!(parse_serial("zz"), None);
    }

    #[test]
    fn csv_quotes_fields_that_need_it() {
        assert_eq!(csv_field("O=a, CN=b"), "\"O=a, CN=b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
