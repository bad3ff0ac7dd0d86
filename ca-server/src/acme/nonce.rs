//! Anti-replay nonces (RFC 8555 §6.5).
//!
//! A nonce is `issued-at (8 bytes) || instance (8) || counter (8) || HMAC-SHA256(key, first 24)`,
//! base64url. Issuing one costs no database write: the HMAC key is shared through the database,
//! sealed ([`crate::seal`]; the first replica to start creates it), so only this deployment can
//! make one. How a nonce is redeemed depends on who else could be asked to accept it:
//!
//! - **Embedded SQLite** — one process serves the database, so redemption happens in memory
//!   ([`Window`]): a nonce is accepted only by the process instance that issued it (a random id
//!   drawn at start), once, and only while it is among the last [`WINDOW`] issued. A restart or
//!   an older nonce answers `badNonce`, which RFC 8555 clients retry with the fresh nonce that
//!   comes with the error. No database round trip per request.
//! - **PostgreSQL** — any replica behind a load balancer may receive the next request, so
//!   redeeming inserts the nonce into `acme_used_nonces` (a UNIQUE key) and a nonce works once,
//!   on any replica, until it expires.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::jws::{b64url, b64url_decode};
use super::problem::AcmeError;

/// How long a nonce stays valid.
pub const LIFETIME: Duration = Duration::from_secs(3600);

/// How many of the most recently issued nonces an in-memory [`Window`] can still accept: 4 Mi
/// (512 KiB of bits), about a quarter of an hour of nonces at 5,000 requests per second.
pub const WINDOW: u64 = 1 << 22;

/// Length of a decoded nonce: issued-at, instance, counter, tag.
const RAW_LEN: usize = 8 + 8 + 8 + 32;
/// Bytes the tag covers.
const SIGNED_LEN: usize = 24;
/// Length of a nonce of the previous release (`issued-at || random (8) || tag` over the first
/// 16 bytes). Redemption in the database still takes them, so that during a rolling upgrade of
/// PostgreSQL replicas the old and the new accept each other's nonces.
const LEGACY_LEN: usize = 8 + 8 + 32;

/// Issues and checks nonces.
#[derive(Clone)]
pub struct Nonces {
    key: hmac::Key,
    instance: [u8; 8],
    redemption: Redemption,
    store: Arc<dyn ca_store::Store>,
}

/// Where used nonces are remembered.
#[derive(Clone)]
enum Redemption {
    /// This process only (the embedded database has no other server).
    Memory(Arc<Mutex<Window>>),
    /// The shared database, for every replica; the counter only makes nonces distinct.
    Database(
        ca_store::writer::NonceRedeemer,
        Arc<std::sync::atomic::AtomicU64>,
    ),
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonces")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Nonces {
    /// Loads (or creates) the shared HMAC key; redemption in memory on the embedded database,
    /// in the database on PostgreSQL.
    pub async fn new(
        store: Arc<dyn ca_store::Store>,
        seal: &crate::seal::Seal,
    ) -> anyhow::Result<Self> {
        let redemption = match store.backend() {
            ca_store::Backend::Sqlite => Redemption::Memory(Arc::new(Mutex::new(Window::new()))),
            ca_store::Backend::Postgres => {
                let acme_store: Arc<dyn ca_store::acme::AcmeStore> = store.clone();
                Redemption::Database(
                    ca_store::writer::NonceRedeemer::spawn(acme_store),
                    Arc::default(),
                )
            }
        };
        Self::with_redemption(store, seal, redemption).await
    }

    async fn with_redemption(
        store: Arc<dyn ca_store::Store>,
        seal: &crate::seal::Seal,
        redemption: Redemption,
    ) -> anyhow::Result<Self> {
        const PURPOSE: &str = "acme-nonce-key";
        let rng = SystemRandom::new();
        let mut fresh = [0u8; 32];
        let mut instance = [0u8; 8];
        rng.fill(&mut fresh)
            .and_then(|()| rng.fill(&mut instance))
            .unwrap_or_else(|_| panic!("the operating system's random number generator failed"));
        let stored = store
            .setting_or_insert("acme_nonce_key_sealed", &seal.seal_bytes(PURPOSE, &fresh))
            .await?;
        let key = seal.open_bytes(PURPOSE, &stored)?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            instance,
            redemption,
            store,
        })
    }

    /// A fresh nonce.
    pub fn issue(&self) -> String {
        let counter = match &self.redemption {
            Redemption::Memory(window) => lock(window).issue(),
            Redemption::Database(_, counter) => {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            }
        };
        let mut raw = [0u8; RAW_LEN];
        raw[..8].copy_from_slice(&now().to_be_bytes());
        raw[8..16].copy_from_slice(&self.instance);
        raw[16..24].copy_from_slice(&counter.to_be_bytes());
        let tag = hmac::sign(&self.key, &raw[..SIGNED_LEN]);
        raw[SIGNED_LEN..].copy_from_slice(tag.as_ref());
        b64url(&raw)
    }

    /// Accepts a nonce once: authentic, unexpired, never seen before.
    pub async fn redeem(&self, nonce: &str) -> Result<(), AcmeError> {
        let raw = b64url_decode(nonce).ok_or_else(AcmeError::bad_nonce)?;
        let signed = match (raw.len(), &self.redemption) {
            (RAW_LEN, _) => SIGNED_LEN,
            (LEGACY_LEN, Redemption::Database(..)) => 16,
            _ => return Err(AcmeError::bad_nonce()),
        };
        hmac::verify(&self.key, &raw[..signed], &raw[signed..])
            .map_err(|_| AcmeError::bad_nonce())?;
        let issued = u64::from_be_bytes(field(&raw, 0));
        let expires = issued.saturating_add(LIFETIME.as_secs());
        if expires < now() || issued > now() + 60 {
            return Err(AcmeError::bad_nonce());
        }
        let fresh = match &self.redemption {
            Redemption::Memory(window) => {
                field(&raw, 8) == self.instance
                    && lock(window).redeem(u64::from_be_bytes(field(&raw, 16)))
            }
            Redemption::Database(redeemer, _) => {
                let expires = i64::try_from(expires).unwrap_or(i64::MAX);
                redeemer.redeem(nonce, expires).await?
            }
        };
        if fresh {
            Ok(())
        } else {
            Err(AcmeError::bad_nonce())
        }
    }

    /// Drops expired redeemed nonces from the database (run periodically).
    pub async fn purge(&self) -> Result<u64, ca_store::Error> {
        self.store
            .purge_nonces(i64::try_from(now()).unwrap_or(i64::MAX))
            .await
    }
}

/// Eight bytes of a decoded nonce starting at `at` (the caller checked the length).
fn field(raw: &[u8], at: usize) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&raw[at..at + 8]);
    out
}

fn lock(window: &Mutex<Window>) -> std::sync::MutexGuard<'_, Window> {
    window
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The in-memory record of which recently issued nonces were redeemed: one bit per counter value
/// for the last [`WINDOW`] issued. Issuing counter `c` clears the bit that `c - WINDOW` used, so
/// memory stays fixed however long the server runs; a nonce older than that is refused.
#[derive(Debug)]
pub struct Window {
    used: Vec<u64>,
    next: u64,
}

impl Window {
    fn new() -> Self {
        Self {
            used: vec![0; usize::try_from(WINDOW / 64).unwrap_or(1)],
            next: 0,
        }
    }

    fn slot(&self, counter: u64) -> (usize, u64) {
        let bit = counter % WINDOW;
        (
            usize::try_from(bit / 64).unwrap_or_default(),
            1u64 << (bit % 64),
        )
    }

    /// The next counter value, its bit cleared for use.
    fn issue(&mut self) -> u64 {
        let counter = self.next;
        self.next += 1;
        let (word, mask) = self.slot(counter);
        self.used[word] &= !mask;
        counter
    }

    /// True the first time an issued counter still inside the window is redeemed.
    fn redeem(&mut self, counter: u64) -> bool {
        if counter >= self.next || self.next - counter > WINDOW {
            return false;
        }
        let (word, mask) = self.slot(counter);
        let fresh = self.used[word] & mask == 0;
        self.used[word] |= mask;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn nonces() -> (tempfile::TempDir, Nonces) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = ca_store::DatabaseUrl::sqlite_file(&dir.path().join("l.db"));
        let store = ca_store::open(&url).await.expect("store");
        std::fs::create_dir_all(dir.path().join("ca")).expect("mkdir");
        let seal = crate::seal::Seal::create(dir.path()).expect("seal");
        (dir, Nonces::new(store, &seal).await.expect("nonces"))
    }

    /// Two servers over one database (the same key), redeeming as `memory` says.
    async fn two_instances(memory: bool) -> (tempfile::TempDir, Nonces, Nonces) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = ca_store::DatabaseUrl::sqlite_file(&dir.path().join("l.db"));
        let store = ca_store::open(&url).await.expect("store");
        std::fs::create_dir_all(dir.path().join("ca")).expect("mkdir");
        let seal = crate::seal::Seal::create(dir.path()).expect("seal");
        let redemption = || {
            if memory {
                Redemption::Memory(Arc::new(Mutex::new(Window::new())))
            } else {
                let acme_store: Arc<dyn ca_store::acme::AcmeStore> = store.clone();
                Redemption::Database(
                    ca_store::writer::NonceRedeemer::spawn(acme_store),
                    Arc::default(),
                )
            }
        };
        let a = Nonces::with_redemption(store.clone(), &seal, redemption())
            .await
            .expect("a");
        let b = Nonces::with_redemption(store.clone(), &seal, redemption())
            .await
            .expect("b");
        (dir, a, b)
    }

    #[tokio::test]
    async fn a_nonce_works_once() {
        let (_dir, n) = nonces().await;
        let nonce = n.issue();
        assert_eq!(nonce.len(), 75);
        n.redeem(&nonce).await.expect("first use");
        let replay = n.redeem(&nonce).await.expect_err("second use");
        assert_eq!(replay.detail, "JWS has an invalid anti-replay nonce");
    }

    #[tokio::test]
    async fn forged_and_foreign_nonces_are_refused() {
        let (_dir, a) = nonces().await;
        let (_dir2, b) = nonces().await;
        assert!(
            a.redeem(&b.issue()).await.is_err(),
            "another deployment's key"
        );
        let mut forged = a.issue().into_bytes();
        forged[30] = if forged[30] == b'A' { b'B' } else { b'A' };
        assert!(
            a.redeem(&String::from_utf8(forged).expect("ascii"))
                .await
                .is_err()
        );
        assert!(a.redeem("not-a-nonce").await.is_err());
    }

    #[tokio::test]
    async fn in_memory_nonces_die_with_the_process_that_issued_them() {
        // A restarted server (same database, same key) must not accept a nonce its previous
        // run issued: that run may have redeemed it already, and its memory is gone.
        let (_dir, before, after) = two_instances(true).await;
        let old = before.issue();
        before.redeem(&old).await.expect("redeemed by its issuer");
        assert!(
            after.redeem(&old).await.is_err(),
            "replayed after a restart"
        );
        let unused = before.issue();
        assert!(after.redeem(&unused).await.is_err(), "not this run's nonce");
        after.redeem(&after.issue()).await.expect("its own nonce");
    }

    #[tokio::test]
    async fn database_nonces_work_once_on_any_replica() {
        let (_dir, a, b) = two_instances(false).await;
        let nonce = a.issue();
        b.redeem(&nonce).await.expect("another replica's nonce");
        assert!(a.redeem(&nonce).await.is_err(), "replayed on its issuer");
        assert!(
            b.redeem(&nonce).await.is_err(),
            "replayed on the same replica"
        );
    }

    #[tokio::test]
    async fn previous_release_nonces_work_once_in_the_database_only() {
        let legacy = |n: &Nonces| {
            let mut raw = [0u8; LEGACY_LEN];
            raw[..8].copy_from_slice(&now().to_be_bytes());
            raw[8..16].copy_from_slice(&[7; 8]);
            let tag = hmac::sign(&n.key, &raw[..16]);
            raw[16..].copy_from_slice(tag.as_ref());
            b64url(&raw)
        };
        let (_dir, replica, _) = two_instances(false).await;
        let old = legacy(&replica);
        replica.redeem(&old).await.expect("an old replica's nonce");
        assert!(replica.redeem(&old).await.is_err(), "replayed");
        let (_dir, embedded, _) = two_instances(true).await;
        assert!(
            embedded.redeem(&legacy(&embedded)).await.is_err(),
            "the embedded database never shares nonces"
        );
    }

    #[test]
    fn the_window_refuses_unissued_stale_and_reused_counters() {
        let mut w = Window::new();
        assert!(!w.redeem(0), "never issued");
        let first = w.issue();
        assert!(w.redeem(first));
        assert!(!w.redeem(first), "reused");
        let kept = w.issue();
        for _ in 0..WINDOW - 1 {
            w.issue();
        }
        assert!(w.redeem(kept), "the oldest nonce still inside the window");
        let stale = w.issue();
        for _ in 0..WINDOW {
            w.issue();
        }
        assert!(!w.redeem(stale), "pushed out of the window");
        // Its bit was reused by a newer nonce, which is still good exactly once.
        let newest = w.issue();
        assert!(w.redeem(newest) && !w.redeem(newest));
    }
}
