//! Serving CRLs: the issuing CA's revoked, unexpired certificates from the ledger, signed by the
//! issuer and cached briefly. A revocation on this replica shows at the next request (and wakes
//! [`refresh_forever`], which rebuilds at once); one on another replica within [`CACHE_FOR`].
//! The refresher also rebuilds on a timer, so the CRL served (and its nextUpdate metric) never
//! goes stale even when nobody asks for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_store::{ExpiryQuery, Store};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::issuer::{CertificateAuthority, IssueError};

/// How long a built CRL is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// CRL validity (nextUpdate − thisUpdate).
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);

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

/// What the newest CRL says, for metrics.
#[derive(Debug, Clone)]
pub struct CrlStatus {
    /// The issuer that signed it.
    pub issuer_id: String,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// Revoked certificates listed.
    pub entries: u64,
}

/// A per-process cache of the current CRL.
#[derive(Clone, Default)]
pub struct CrlCache {
    current: Arc<Mutex<Option<Built>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    status: Arc<std::sync::Mutex<Option<CrlStatus>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for CrlCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrlCache")
    }
}

impl CrlCache {
    /// Marks the cached CRL stale (call after a revocation).
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// The newest CRL this process built, if any.
    pub fn status(&self) -> Option<CrlStatus> {
        self.status.lock().ok().and_then(|s| s.clone())
    }

    /// The current CRL (DER), rebuilt when stale.
    pub async fn der(
        &self,
        ca: &CertificateAuthority,
        store: &Arc<dyn Store>,
    ) -> Result<Vec<u8>, CrlError> {
        let generation = self.generation.load(std::sync::atomic::Ordering::Relaxed);
        let mut current = self.current.lock().await;
        if let Some(built) = current.as_ref()
            && built.at.elapsed() < CACHE_FOR
            && built.generation == generation
        {
            return Ok(built.der.clone());
        }
        let now = OffsetDateTime::now_utc();
        let mut revoked = Vec::new();
        let mut query = ExpiryQuery {
            issuer_id: Some(ca.issuer_id().to_owned()),
            not_after_from: Some(now.unix_timestamp()),
            revoked_only: true,
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
        let der = ca.crl(&revoked, now, LIFETIME)?;
        if let Ok(mut status) = self.status.lock() {
            *status = Some(CrlStatus {
                issuer_id: ca.issuer_id().to_owned(),
                this_update: now.unix_timestamp(),
                next_update: (now + LIFETIME).unix_timestamp(),
                entries: revoked.len() as u64,
            });
        }
        *current = Some(Built {
            at: Instant::now(),
            generation,
            der: der.clone(),
        });
        Ok(der)
    }
}

/// Rebuilds the CRL every `period`, and at once after a revocation on this replica. Failures are
/// logged and retried at the next tick; the served CRL stays valid for [`LIFETIME`].
pub async fn refresh_forever(
    cache: CrlCache,
    ca: Arc<CertificateAuthority>,
    store: Arc<dyn Store>,
    period: Duration,
) {
    loop {
        match cache.der(&ca, &store).await {
            Ok(_) => tracing::debug!("CRL rebuilt"),
            Err(e) => tracing::warn!(error = %e, "rebuilding the CRL failed; retrying later"),
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = cache.changed.notified() => {}
        }
    }
}
