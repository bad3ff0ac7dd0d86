//! Aggregates over the ledger for reports and metrics: one grouped pass over the current
//! certificates (not revoked, not superseded, not expired) instead of one series per row.

use serde::Serialize;

use crate::model::Origin;

/// Counts and earliest expiry of the current certificates sharing origin, issuer, profile and
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrentGroup {
    /// Issued or observed.
    pub origin: Origin,
    /// Issuing CA (ours) or the observed certificate's issuer name.
    pub issuer_id: String,
    /// Issuance profile.
    pub profile: String,
    /// Requester's namespace; empty when unknown.
    pub namespace: String,
    /// Current, unexpired certificates.
    pub active: u64,
    /// Earliest notAfter among them (Unix seconds).
    pub earliest_not_after: i64,
}

/// What `ledger stats` and the summary endpoint show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerSummary {
    /// Every row, whatever its state.
    pub total: u64,
    /// Current and unexpired.
    pub active: u64,
    /// Past notAfter and not revoked.
    pub expired: u64,
    /// Revoked (expired or not).
    pub revoked: u64,
    /// Replaced by a newer certificate for the same requester and names (not revoked).
    pub superseded: u64,
    /// Observed (not issued by us).
    pub observed: u64,
    /// Earliest notAfter among current, unexpired certificates.
    pub earliest_not_after: Option<i64>,
    /// The active certificates by origin, issuer, profile and namespace.
    pub groups: Vec<CurrentGroup>,
}

/// One cell of the scrape-time aggregation: current, unexpired certificates of one group whose
/// remaining lifetime falls in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifetimeCell {
    /// Issued or observed.
    pub origin: Origin,
    /// Issuing CA.
    pub issuer_id: String,
    /// Issuance profile.
    pub profile: String,
    /// Requester's namespace; empty when unknown.
    pub namespace: String,
    /// The workload's namespace the certificate names; empty when it names none.
    pub workload_namespace: String,
    /// Index of the first bucket bound ≥ the remaining lifetime; `bounds.len()` for +Inf.
    pub bucket: usize,
    /// Certificates in this cell.
    pub count: u64,
    /// Sum of their remaining lifetimes (seconds).
    pub remaining_sum: i64,
    /// Earliest notAfter in this cell.
    pub earliest_not_after: i64,
}

/// A current long-lived certificate that gets its own series, keyed by requester and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedCertificate {
    /// Issued or observed.
    pub origin: Origin,
    /// Issuing CA.
    pub issuer_id: String,
    /// Issuance profile.
    pub profile: String,
    /// Requester's namespace; empty when unknown.
    pub namespace: String,
    /// The workload's namespace the certificate names; empty when it names none.
    pub workload_namespace: String,
    /// What reports call it.
    pub name: String,
    /// Who asked (or where it was observed).
    pub requester: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// Parameters of [`crate::Ledger::metrics_snapshot`].
#[derive(Debug, Clone)]
pub struct SnapshotQuery {
    /// Now, Unix seconds.
    pub now: i64,
    /// Upper bounds (seconds of remaining lifetime) of the histogram buckets, ascending.
    pub bounds: Vec<i64>,
    /// Certificates whose total lifetime exceeds this get their own series.
    pub tracked_min_lifetime: i64,
    /// Tracked certificates stay reported this long after expiring (an expired certificate
    /// nobody renewed is what the alerts are for).
    pub tracked_expired_grace: i64,
    /// At most this many tracked certificates (earliest expiry first): bounded cardinality.
    pub tracked_limit: u32,
}

/// Everything the scrape-time collectors need, read in two queries.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// Remaining-lifetime cells of current, unexpired certificates.
    pub cells: Vec<LifetimeCell>,
    /// Long-lived current certificates, earliest expiry first.
    pub tracked: Vec<TrackedCertificate>,
    /// True when more long-lived certificates existed than `tracked_limit`.
    pub tracked_truncated: bool,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RawCell {
    pub origin: String,
    pub issuer_id: String,
    pub profile: String,
    pub namespace: String,
    pub workload_namespace: String,
    pub bucket: i64,
    pub count: i64,
    pub remaining_sum: i64,
    pub earliest: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RawTracked {
    pub origin: String,
    pub issuer_id: String,
    pub profile: String,
    pub namespace: String,
    pub workload_namespace: String,
    pub name: String,
    pub requester: String,
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RawTotals {
    pub total: i64,
    pub expired: i64,
    pub revoked: i64,
    pub superseded: i64,
    pub observed: i64,
}

pub(crate) fn origin(s: &str) -> Result<Origin, crate::Error> {
    Origin::parse(s).ok_or_else(|| crate::Error::Corrupt(format!("origin {s:?}")))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl RawCell {
    pub(crate) fn into_cell(self) -> Result<LifetimeCell, crate::Error> {
        Ok(LifetimeCell {
            origin: origin(&self.origin)?,
            issuer_id: self.issuer_id,
            profile: self.profile,
            namespace: self.namespace,
            workload_namespace: self.workload_namespace,
            bucket: usize::try_from(self.bucket).unwrap_or(0),
            count: count(self.count),
            remaining_sum: self.remaining_sum,
            earliest_not_after: self.earliest,
        })
    }
}

impl RawTracked {
    pub(crate) fn into_tracked(self) -> Result<TrackedCertificate, crate::Error> {
        Ok(TrackedCertificate {
            origin: origin(&self.origin)?,
            issuer_id: self.issuer_id,
            profile: self.profile,
            namespace: self.namespace,
            workload_namespace: self.workload_namespace,
            name: self.name,
            requester: self.requester,
            not_before: self.not_before,
            not_after: self.not_after,
        })
    }
}

/// Folds the lifetime cells and totals into a summary.
pub(crate) fn summarize(totals: RawTotals, cells: Vec<LifetimeCell>) -> LedgerSummary {
    let mut groups: Vec<CurrentGroup> = Vec::new();
    for cell in cells {
        match groups.iter_mut().find(|g| {
            g.origin == cell.origin
                && g.issuer_id == cell.issuer_id
                && g.profile == cell.profile
                && g.namespace == cell.namespace
        }) {
            Some(g) => {
                g.active += cell.count;
                g.earliest_not_after = g.earliest_not_after.min(cell.earliest_not_after);
            }
            None => groups.push(CurrentGroup {
                origin: cell.origin,
                issuer_id: cell.issuer_id,
                profile: cell.profile,
                namespace: cell.namespace,
                active: cell.count,
                earliest_not_after: cell.earliest_not_after,
            }),
        }
    }
    groups.sort_by(|a, b| {
        (a.origin.as_str(), &a.issuer_id, &a.profile, &a.namespace).cmp(&(
            b.origin.as_str(),
            &b.issuer_id,
            &b.profile,
            &b.namespace,
        ))
    });
    LedgerSummary {
        total: count(totals.total),
        active: groups.iter().map(|g| g.active).sum(),
        expired: count(totals.expired),
        revoked: count(totals.revoked),
        superseded: count(totals.superseded),
        observed: count(totals.observed),
        earliest_not_after: groups.iter().map(|g| g.earliest_not_after).min(),
        groups,
    }
}
