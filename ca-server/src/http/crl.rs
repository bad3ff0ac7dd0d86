//! Serving CRLs: each issuer's revoked, unexpired certificates from the ledger, signed by that
//! issuer and cached briefly. After a rotation the former issuers keep their CRLs (at
//! `/crl/issuer/<id>`, the URL `{{issuer_id}}` in `crl_urls` expands to) until their own
//! certificate expires. A revocation on this replica shows at the next request (and wakes
//! [`refresh_forever`], which rebuilds at once); one on another replica within [`CACHE_FOR`].
//! The refresher also rebuilds on a timer, so the CRL served (and its nextUpdate metric) never
//! goes stale even when nobody asks for it.
//!
//! With `[ca] crl_shards = N` (N > 1) each certificate names one shard in its distribution point
//! (`<crl_url>/<k>`, `k` from its serial, stored in the ledger) and `/crl/<k>` serves that shard:
//! only its revoked certificates, with an issuingDistributionPoint naming the shard. `/crl` is
//! always the complete CRL (the Vault paths serve it too).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_store::{ExpiryQuery, Origin, Store};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::issuer::set::Issuers;
use crate::issuer::{CertificateAuthority, IssueError, shard_urls};

/// How long a built CRL is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// CRL validity (nextUpdate − thisUpdate).
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Highest shard number served (a bound on what a URL can make us build).
pub const MAX_SHARDS: u32 = 1024;

/// Why a CRL could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// Reading revocations failed.
    #[error(transparent)]
    Store(#[from] ca_store::Error),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] IssueError),
}

/// A built CRL: when, for which cache generation, and its DER.
struct Built {
    at: Instant,
    generation: u64,
    der: Vec<u8>,
}

/// What the newest CRL of one shard says, for metrics.
#[derive(Debug, Clone)]
pub struct CrlStatus {
    /// The issuer that signed it.
    pub issuer_id: String,
    /// `all` for the complete CRL, else the shard number.
    pub shard: String,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// Revoked certificates listed.
    pub entries: u64,
}

/// Which CRL: an issuer's complete CRL (`shard` None) or one shard of it.
type CrlKey = (String, Option<u32>);

/// A per-process cache of the current CRLs (per issuer: complete, and each shard).
#[derive(Clone, Default)]
pub struct CrlCache {
    current: Arc<Mutex<BTreeMap<CrlKey, Built>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    status: Arc<std::sync::Mutex<BTreeMap<CrlKey, CrlStatus>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for CrlCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrlCache")
    }
}

impl CrlCache {
    /// Marks the cached CRLs stale (call after a revocation).
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// The newest CRLs this process built (per issuer: complete first, then shards).
    pub fn status(&self) -> Vec<CrlStatus> {
        self.status
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The current complete CRL (`shard` None) or one shard's (DER), rebuilt when stale.
    pub async fn der(
        &self,
        ca: &CertificateAuthority,
        store: &Arc<dyn Store>,
        shard: Option<u32>,
    ) -> Result<Vec<u8>, CrlError> {
        let generation = self.generation.load(std::sync::atomic::Ordering::Relaxed);
        let key: CrlKey = (ca.issuer_id().to_owned(), shard);
        let mut current = self.current.lock().await;
        if let Some(built) = current.get(&key)
            && built.at.elapsed() < CACHE_FOR
            && built.generation == generation
        {
            return Ok(built.der.clone());
        }
        let now = OffsetDateTime::now_utc();
        let mut revoked = Vec::new();
        let mut query = ExpiryQuery {
            issuer_id: Some(ca.issuer_id().to_owned()),
            origin: Some(Origin::Issued),
            not_after_from: Some(now.unix_timestamp()),
            revoked_only: true,
            crl_shard: shard,
            limit: 10_000,
            ..ExpiryQuery::default()
        };
        loop {
            let page = store.expiring(&query).await?;
            let Some(last) = page.last() else { break };
            query.after = Some((last.certificate.not_after, last.id));
            revoked.extend(page.into_iter().filter_map(|r| {
                r.revoked_at
                    .map(|at| (r.certificate.serial, at, r.revocation_reason))
            }));
        }
        let idp = shard
            .map(|k| shard_urls(&ca.settings().crl_urls, k))
            .unwrap_or_default();
        let der = ca.crl(&revoked, now, LIFETIME, &idp)?;
        if let Ok(mut status) = self.status.lock() {
            status.insert(
                key.clone(),
                CrlStatus {
                    issuer_id: ca.issuer_id().to_owned(),
                    shard: shard.map_or_else(|| "all".to_owned(), |k| k.to_string()),
                    this_update: now.unix_timestamp(),
                    next_update: (now + LIFETIME).unix_timestamp(),
                    entries: revoked.len() as u64,
                },
            );
        }
        current.insert(
            key,
            Built {
                at: Instant::now(),
                generation,
                der: der.clone(),
            },
        );
        Ok(der)
    }
}

/// Rebuilds every live issuer's complete CRL and configured shards every `period`, and at once
/// after a revocation on this replica. Failures are logged and retried at the next tick; the
/// served CRLs stay valid for [`LIFETIME`].
pub async fn refresh_forever(
    cache: CrlCache,
    issuers: Arc<Issuers>,
    store: Arc<dyn Store>,
    period: Duration,
) {
    loop {
        let set = issuers.current();
        for member in set.live(OffsetDateTime::now_utc()) {
            let shards = member.ca.settings().crl_shards;
            let mut targets = vec![None];
            if shards > 1 {
                targets.extend((0..shards).map(Some));
            }
            for shard in targets {
                if let Err(e) = cache.der(&member.ca, &store, shard).await {
                    tracing::warn!(error = %e, issuer_id = member.ca.issuer_id(), ?shard, "rebuilding the CRL failed; retrying later");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = cache.changed.notified() => {}
        }
    }
}
