//! Serving CRLs: the issuing CA's revoked, unexpired certificates from the ledger, signed by the
//! issuer on demand and cached briefly. A revocation on this replica shows at the next request;
//! one on another replica within [`CACHE_FOR`].

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

/// A per-process cache of the current CRL.
#[derive(Clone, Default)]
pub struct CrlCache {
    current: Arc<Mutex<Option<Built>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
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
        *current = Some(Built {
            at: Instant::now(),
            generation,
            der: der.clone(),
        });
        Ok(der)
    }
}
