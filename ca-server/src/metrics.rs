//! Prometheus metrics (`GET /metrics`, OpenMetrics text).
//!
//! Two kinds, following cert-manager's model (`docs/metrics.md` lists every series):
//!
//! * **Events**, counted as they happen: issuances by protocol, profile and result, their latency,
//!   ACME validations, ledger write latency. These live in [`Metrics`], shared by every handler
//!   through [`crate::issuer::Issuance`].
//! * **State**, computed at scrape time from the ledger and the loaded CA, so a renewed, revoked
//!   or expired certificate's series disappears with it: our CA certificates' notAfter, one
//!   notAfter series per current long-lived certificate keyed by requester and name (never by
//!   serial or SAN), and for short-lived certificates only counts, earliest notAfter and a
//!   remaining-lifetime histogram with the kube-apiserver's buckets. Cardinality is bounded by
//!   [`MetricsConfig::tracked_limit`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_store::{MetricsSnapshot, Origin, Protocol, SnapshotQuery, Store};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::http::crl::CrlStatus;
use crate::issuer::set::{IssuerSet, Standing};

/// Remaining-lifetime bucket bounds (seconds): the kube-apiserver's
/// `apiserver_client_certificate_expiration_seconds` buckets, so the same
/// `histogram_quantile(0.01, …)` alerts apply.
pub const REMAINING_LIFETIME_BUCKETS: [i64; 14] = [
    0, 1_800, 3_600, 7_200, 21_600, 43_200, 86_400, 172_800, 345_600, 604_800, 2_592_000,
    7_776_000, 15_552_000, 31_104_000,
];

/// `[metrics]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Certificates whose lifetime is longer than this get their own notAfter series; shorter
    /// ones (SPIFFE SVIDs, which rotate hourly) are only counted and bucketed.
    #[serde(with = "crate::duration::serde_duration")]
    pub tracked_min_lifetime: Duration,
    /// A tracked certificate nobody renewed stays visible this long after it expired.
    #[serde(with = "crate::duration::serde_duration")]
    pub tracked_expired_grace: Duration,
    /// At most this many per-certificate series (earliest expiry first).
    pub tracked_limit: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            tracked_min_lifetime: Duration::from_secs(72 * 3600),
            tracked_expired_grace: Duration::from_secs(30 * 86_400),
            tracked_limit: 10_000,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuanceLabels {
    protocol: String,
    issuer: String,
    profile: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    protocol: String,
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValidationLabels {
    r#type: String,
    result: String,
}

/// Outcome of one issuance attempt, for `ca_issuance_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuanceResult {
    /// Signed and recorded.
    Issued,
    /// Refused by policy or for bad input (the client's fault).
    Refused,
    /// Failed on our side (signing, the ledger).
    Error,
}

impl IssuanceResult {
    fn as_str(self) -> &'static str {
        match self {
            IssuanceResult::Issued => "issued",
            IssuanceResult::Refused => "refused",
            IssuanceResult::Error => "error",
        }
    }
}

struct Events {
    registry: Registry,
    issuance: Family<IssuanceLabels, Counter>,
    issuance_duration: Family<DurationLabels, Histogram>,
    validations: Family<ValidationLabels, Counter>,
    ledger_write: Histogram,
}

/// Event counters and histograms. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    events: Arc<Events>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Metrics {
    /// A fresh set of counters (one per server process).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let issuance = Family::<IssuanceLabels, Counter>::default();
        registry.register(
            "ca_issuance",
            "Certificate requests by protocol, issuer, profile and result (issued, refused, error)",
            issuance.clone(),
        );
        let issuance_duration = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "ca_issuance_duration_seconds",
            "Time to sign and durably record a certificate",
            issuance_duration.clone(),
        );
        let validations = Family::<ValidationLabels, Counter>::default();
        registry.register(
            "ca_acme_challenge_validations",
            "ACME challenge validations by type and result (valid, or the ACME problem type)",
            validations.clone(),
        );
        let ledger_write = Histogram::new(latency_buckets());
        registry.register(
            "ca_ledger_write_duration_seconds",
            "Time from handing a certificate to the ledger until it is committed",
            ledger_write.clone(),
        );
        registry.register(
            "ca_build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            events: Arc::new(Events {
                registry,
                issuance,
                issuance_duration,
                validations,
                ledger_write,
            }),
        }
    }

    /// Counts one issuance attempt.
    pub fn issuance(
        &self,
        protocol: Protocol,
        issuer: &str,
        profile: &str,
        result: IssuanceResult,
    ) {
        self.events
            .issuance
            .get_or_create(&IssuanceLabels {
                protocol: protocol.as_str().to_owned(),
                issuer: issuer.to_owned(),
                profile: profile.to_owned(),
                result: result.as_str().to_owned(),
            })
            .inc();
    }

    /// Records how long a successful issuance took.
    pub fn issuance_duration(&self, protocol: Protocol, profile: &str, elapsed: Duration) {
        self.events
            .issuance_duration
            .get_or_create(&DurationLabels {
                protocol: protocol.as_str().to_owned(),
                profile: profile.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one ledger commit as seen by the issuing request.
    pub fn ledger_write(&self, elapsed: Duration) {
        self.events.ledger_write.observe(elapsed.as_secs_f64());
    }

    /// Counts one ACME validation: `result` is `valid` or the problem type's short name.
    pub fn validation(&self, challenge_type: &str, result: &str) {
        self.events
            .validations
            .get_or_create(&ValidationLabels {
                r#type: challenge_type.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// The full exposition: events, then state read from the ledger and the CA right now.
    pub async fn render(
        &self,
        config: &MetricsConfig,
        issuers: &IssuerSet,
        store: &dyn Store,
        crl: Vec<CrlStatus>,
    ) -> Result<String, ca_store::Error> {
        let started = Instant::now();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let snapshot = store
            .metrics_snapshot(&SnapshotQuery {
                now,
                bounds: REMAINING_LIFETIME_BUCKETS.to_vec(),
                tracked_min_lifetime: secs(config.tracked_min_lifetime),
                tracked_expired_grace: secs(config.tracked_expired_grace),
                tracked_limit: config.tracked_limit,
            })
            .await?;
        let mut state = Registry::default();
        state.register_collector(Box::new(StateCollector {
            ca: ca_certificates(issuers, now),
            crl,
            snapshot,
            now,
            query_seconds: started.elapsed().as_secs_f64(),
        }));
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an encoder error would be a bug in label handling.
        let encoded = text::encode_registry(&mut out, &self.events.registry)
            .and_then(|()| text::encode_registry(&mut out, &state))
            .and_then(|()| text::encode_eof(&mut out));
        if encoded.is_err() {
            tracing::error!("encoding metrics failed");
        }
        Ok(out)
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition, for scrapers that do not ask
/// for OpenMetrics (`promtool check metrics`, older Prometheus, most other tools): counters'
/// metadata names carry `_total`, `info` becomes a gauge named `_info`, and the OpenMetrics-only
/// `# UNIT` and `# EOF` lines go.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut kinds: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            kinds.insert(name, kind);
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# TYPE ")
            .map(|r| ("# TYPE ", r))
            .or_else(|| line.strip_prefix("# HELP ").map(|r| ("# HELP ", r)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let (name, tail) = match (kinds.get(name).copied(), prefix) {
                    (Some("counter"), _) => (format!("{name}_total"), tail.to_owned()),
                    (Some("info"), "# TYPE ") => (format!("{name}_info"), "gauge".to_owned()),
                    (Some("info"), _) => (format!("{name}_info"), tail.to_owned()),
                    (Some("unknown"), "# TYPE ") => (name.to_owned(), "untyped".to_owned()),
                    _ => (name.to_owned(), tail.to_owned()),
                };
                out.push_str(prefix);
                out.push_str(&name);
                out.push(' ');
                out.push_str(&tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// One of our CA certificates, for `ca_issuer_not_after_timestamp_seconds`.
#[derive(Debug)]
struct CaCertificate {
    issuer: String,
    subject: String,
    common_name: String,
    role: &'static str,
    /// The issuer's standing: `default`, `next` or `standby`.
    state: &'static str,
    not_before: i64,
    not_after: i64,
}

/// Every certificate of every issuer still valid (and the default's, whatever its state): the
/// issuing certificate, intermediates, and the roots its chains end at.
fn ca_certificates(issuers: &IssuerSet, now: i64) -> Vec<CaCertificate> {
    let mut out: Vec<CaCertificate> = Vec::new();
    for member in issuers.members() {
        let ca = &member.ca;
        if ca.not_after().unix_timestamp() <= now && member.standing != Standing::Default {
            continue;
        }
        let issuer = ca.issuer_id();
        for chain in ca.chains() {
            for (i, der) in chain.iter().enumerate() {
                let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
                    continue;
                };
                let subject = cert.subject().to_string();
                if out
                    .iter()
                    .any(|c| c.issuer == issuer && c.subject == subject)
                {
                    continue; // the same root or cross-signed subject in several chains
                }
                let role = if i == 0 {
                    "issuing"
                } else if cert.subject() == cert.issuer() {
                    "root"
                } else {
                    "intermediate"
                };
                let common_name = cert
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                out.push(CaCertificate {
                    issuer: issuer.to_owned(),
                    subject,
                    common_name,
                    role,
                    state: member.standing.as_str(),
                    not_before: cert.validity().not_before.timestamp(),
                    not_after: cert.validity().not_after.timestamp(),
                });
            }
        }
    }
    out
}

/// Scrape-time series, built from one ledger snapshot.
#[derive(Debug)]
struct StateCollector {
    ca: Vec<CaCertificate>,
    crl: Vec<CrlStatus>,
    snapshot: MetricsSnapshot,
    now: i64,
    query_seconds: f64,
}

fn origin(o: Origin) -> &'static str {
    o.as_str()
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            // The issuer id labels every series; this names it, for alerts and dashboards to join
            // (`* on (issuer) group_left (common_name) ca_issuer_info`).
            let mut m = encoder.encode_descriptor(
                "ca_issuer_info",
                "The issuing CA behind each issuer id: its common name and subject",
                None,
                MetricType::Gauge,
            )?;
            for issuing in self.ca.iter().filter(|c| c.role == "issuing") {
                let labels = [
                    ("issuer", issuing.issuer.as_str()),
                    ("common_name", issuing.common_name.as_str()),
                    ("subject", issuing.subject.as_str()),
                    ("state", issuing.state),
                ];
                m.encode_family(&labels)?.encode_gauge(&1i64)?;
            }
        }
        type Validity = fn(&CaCertificate) -> i64;
        let bounds: [(&str, &str, Validity); 2] = [
            (
                "ca_issuer_not_after_timestamp_seconds",
                "notAfter of this server's CA certificates (issuing, intermediates, roots), per issuer and its state (default, next, standby)",
                |c| c.not_after,
            ),
            (
                "ca_issuer_not_before_timestamp_seconds",
                "notBefore of this server's CA certificates",
                |c| c.not_before,
            ),
        ];
        for (name, help, field) in bounds {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for c in &self.ca {
                let labels = [
                    ("issuer", c.issuer.as_str()),
                    ("subject", c.subject.as_str()),
                    ("role", c.role),
                    ("state", c.state),
                ];
                m.encode_family(&labels)?.encode_gauge(&field(c))?;
            }
        }
        if !self.crl.is_empty() {
            type Field = fn(&CrlStatus) -> i64;
            let gauges: [(&str, &str, Field); 3] = [
                (
                    "ca_crl_next_update_timestamp_seconds",
                    "nextUpdate of the newest CRL this replica built (shard \"all\" is the complete CRL)",
                    |c| c.next_update,
                ),
                (
                    "ca_crl_this_update_timestamp_seconds",
                    "thisUpdate of the newest CRL this replica built",
                    |c| c.this_update,
                ),
                (
                    "ca_crl_entries",
                    "Revoked certificates listed in the newest CRL",
                    |c| i64::try_from(c.entries).unwrap_or(i64::MAX),
                ),
            ];
            for (name, help, field) in gauges {
                let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for crl in &self.crl {
                    let labels = [
                        ("issuer", crl.issuer_id.as_str()),
                        ("shard", crl.shard.as_str()),
                    ];
                    m.encode_family(&labels)?.encode_gauge(&field(crl))?;
                }
            }
        }

        // Long-lived current certificates: one series each, keyed by requester and name. Two
        // certificates with the same labels (same name, other SANs) report the earlier expiry.
        {
            let mut m = encoder.encode_descriptor(
                "ca_certificate_not_after_timestamp_seconds",
                "notAfter of each current long-lived certificate (not renewed, not revoked), by requester and name",
                None,
                MetricType::Gauge,
            )?;
            let mut seen = std::collections::HashSet::new();
            let mut not_before = Vec::new();
            for t in &self.snapshot.tracked {
                let labels = [
                    ("origin", origin(t.origin)),
                    ("issuer", t.issuer_id.as_str()),
                    ("profile", t.profile.as_str()),
                    ("namespace", t.namespace.as_str()),
                    ("workload_namespace", t.workload_namespace.as_str()),
                    ("name", t.name.as_str()),
                    ("requester", t.requester.as_str()),
                ];
                if seen.insert(labels) {
                    m.encode_family(&labels)?.encode_gauge(&t.not_after)?;
                    not_before.push((labels, t.not_before));
                }
            }
            let mut m = encoder.encode_descriptor(
                "ca_certificate_not_before_timestamp_seconds",
                "notBefore of the same certificates (lifetime = notAfter - notBefore)",
                None,
                MetricType::Gauge,
            )?;
            for (labels, value) in &not_before {
                m.encode_family(labels)?.encode_gauge(value)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "ca_certificate_series_truncated",
            "1 when more long-lived certificates exist than [metrics] tracked_limit allows",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&i64::from(self.snapshot.tracked_truncated))?;

        // Aggregates over all current, unexpired certificates.
        type Group<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);
        let mut groups: std::collections::BTreeMap<Group<'_>, (u64, i64)> = Default::default();
        let mut histograms: std::collections::BTreeMap<(&str, &str, &str), (Vec<u64>, i64)> =
            Default::default();
        for cell in &self.snapshot.cells {
            let g = groups
                .entry((
                    origin(cell.origin),
                    cell.issuer_id.as_str(),
                    cell.profile.as_str(),
                    cell.namespace.as_str(),
                    cell.workload_namespace.as_str(),
                ))
                .or_insert((0, i64::MAX));
            g.0 += cell.count;
            g.1 = g.1.min(cell.earliest_not_after);
            let h = histograms
                .entry((
                    origin(cell.origin),
                    cell.issuer_id.as_str(),
                    cell.profile.as_str(),
                ))
                .or_insert_with(|| (vec![0; REMAINING_LIFETIME_BUCKETS.len() + 1], 0));
            if let Some(slot) = h.0.get_mut(cell.bucket) {
                *slot += cell.count;
            }
            h.1 += cell.remaining_sum;
        }
        {
            let mut m = encoder.encode_descriptor(
                "ca_certificates_active",
                "Current, unexpired certificates (not renewed, not revoked)",
                None,
                MetricType::Gauge,
            )?;
            for ((o, issuer, profile, namespace, workload), (count, _)) in &groups {
                let labels = [
                    ("origin", *o),
                    ("issuer", *issuer),
                    ("profile", *profile),
                    ("namespace", *namespace),
                    ("workload_namespace", *workload),
                ];
                m.encode_family(&labels)?.encode_gauge(count)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "ca_certificate_earliest_not_after_timestamp_seconds",
                "Earliest notAfter among current, unexpired certificates",
                None,
                MetricType::Gauge,
            )?;
            for ((o, issuer, profile, namespace, workload), (_, earliest)) in &groups {
                let labels = [
                    ("origin", *o),
                    ("issuer", *issuer),
                    ("profile", *profile),
                    ("namespace", *namespace),
                    ("workload_namespace", *workload),
                ];
                m.encode_family(&labels)?.encode_gauge(earliest)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "ca_certificate_remaining_lifetime_seconds",
                "Remaining lifetime of current, unexpired certificates (kube-apiserver buckets)",
                None,
                MetricType::Histogram,
            )?;
            for ((o, issuer, profile), (counts, sum)) in &histograms {
                let labels = [("origin", *o), ("issuer", *issuer), ("profile", *profile)];
                // prometheus-client cumulates the per-bucket counts itself: pass each bucket's
                // own count (passing running totals counted every certificate many times over).
                let buckets: Vec<(f64, u64)> = counts
                    .iter()
                    .enumerate()
                    .map(|(i, count)| {
                        let bound = REMAINING_LIFETIME_BUCKETS
                            .get(i)
                            .map_or(f64::INFINITY, |b| *b as f64);
                        (bound, *count)
                    })
                    .collect();
                let total: u64 = counts.iter().sum();
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    *sum as f64,
                    total,
                    &buckets,
                    None,
                )?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "ca_metrics_ledger_query_seconds",
            "Time this scrape spent reading the ledger",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&self.query_seconds)?;
        let mut m = encoder.encode_descriptor(
            "ca_metrics_scrape_timestamp_seconds",
            "When this scrape read the ledger",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&self.now)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ca_store::report::LifetimeCell;

    fn cell(bucket: usize, count: u64) -> LifetimeCell {
        LifetimeCell {
            origin: Origin::Issued,
            issuer_id: "ab".into(),
            profile: "spiffe".into(),
            namespace: "team-a".into(),
            workload_namespace: String::new(),
            bucket,
            count,
            remaining_sum: 100,
            earliest_not_after: 0,
        }
    }

    fn render(cells: Vec<LifetimeCell>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(StateCollector {
            ca: vec![],
            crl: vec![],
            snapshot: MetricsSnapshot {
                cells,
                tracked: vec![],
                tracked_truncated: false,
            },
            now: 0,
            query_seconds: 0.0,
        }));
        let mut out = String::new();
        text::encode(&mut out, &registry).expect("encode");
        out
    }

    fn sample(text: &str, prefix: &str) -> u64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    }

    /// 40 certificates: 10 under 1 h, 30 between 1 d and 2 d. Each bucket counts its own and
    /// everything below, once; +Inf equals the count.
    #[test]
    fn histogram_buckets_cumulate_once() {
        let text = render(vec![cell(2, 10), cell(7, 30)]);
        let h = "ca_certificate_remaining_lifetime_seconds";
        assert_eq!(sample(&text, &format!("{h}_count")), 40);
        assert_eq!(sample(&text, &format!("{h}_bucket{{le=\"+Inf\"")), 40);
        assert_eq!(sample(&text, &format!("{h}_bucket{{le=\"3600.0\"")), 10);
        assert_eq!(sample(&text, &format!("{h}_bucket{{le=\"86400.0\"")), 10);
        assert_eq!(sample(&text, &format!("{h}_bucket{{le=\"172800.0\"")), 40);
        assert_eq!(sample(&text, &format!("{h}_bucket{{le=\"0.0\"")), 0);
    }

    #[test]
    fn text_format_for_scrapers_that_do_not_ask_for_openmetrics() {
        let om = "# HELP ca_issuance Requests.\n# TYPE ca_issuance counter\nca_issuance_total{a=\"b\"} 1\n# HELP ca_build Build.\n# TYPE ca_build info\nca_build_info{version=\"1\"} 1\n# TYPE x_seconds gauge\n# UNIT x_seconds seconds\nx_seconds 2\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP ca_issuance_total Requests.\n# TYPE ca_issuance_total counter\nca_issuance_total{a=\"b\"} 1\n# HELP ca_build_info Build.\n# TYPE ca_build_info gauge\nca_build_info{version=\"1\"} 1\n# TYPE x_seconds gauge\nx_seconds 2\n"
        );
    }
}
