//! Anti-replay nonces (RFC 8555 §6.5) that any replica sharing the database accepts.
//!
//! A nonce is `issued-at (8 bytes) || random (8) || HMAC-SHA256(key, first 16)`, base64url.
//! Issuing one costs no database write; the HMAC key is shared through the database, sealed
//! ([`crate::seal`]; the first replica to start creates it). Redeeming one inserts it into
//! `acme_used_nonces` (a UNIQUE key), so a nonce works once, on any replica, until it expires.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::jws::{b64url, b64url_decode};
use super::problem::AcmeError;

/// How long a nonce stays valid.
pub const LIFETIME: Duration = Duration::from_secs(3600);

/// Issues and checks nonces.
#[derive(Clone)]
pub struct Nonces {
    key: hmac::Key,
    store: Arc<dyn ca_store::Store>,
    redeemer: ca_store::writer::NonceRedeemer,
    rng: SystemRandom,
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
    /// Loads (or creates) the shared HMAC key.
    pub async fn new(
        store: Arc<dyn ca_store::Store>,
        seal: &crate::seal::Seal,
    ) -> anyhow::Result<Self> {
        const PURPOSE: &str = "acme-nonce-key";
        let rng = SystemRandom::new();
        let mut fresh = [0u8; 32];
        rng.fill(&mut fresh)
            .unwrap_or_else(|_| panic!("the operating system's random number generator failed"));
        let stored = store
            .setting_or_insert("acme_nonce_key_sealed", &seal.seal_bytes(PURPOSE, &fresh))
            .await?;
        let key = seal.open_bytes(PURPOSE, &stored)?;
        let acme_store: Arc<dyn ca_store::acme::AcmeStore> = store.clone();
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            redeemer: ca_store::writer::NonceRedeemer::spawn(acme_store),
            store,
            rng,
        })
    }

    /// A fresh nonce.
    pub fn issue(&self) -> String {
        let mut raw = [0u8; 48];
        raw[..8].copy_from_slice(&now().to_be_bytes());
        self.rng
            .fill(&mut raw[8..16])
            .unwrap_or_else(|_| panic!("the operating system's random number generator failed"));
        let tag = hmac::sign(&self.key, &raw[..16]);
        raw[16..].copy_from_slice(tag.as_ref());
        b64url(&raw)
    }

    /// Accepts a nonce once: authentic, unexpired, never seen before.
    pub async fn redeem(&self, nonce: &str) -> Result<(), AcmeError> {
        let raw = b64url_decode(nonce).ok_or_else(AcmeError::bad_nonce)?;
        if raw.len() != 48 {
            return Err(AcmeError::bad_nonce());
        }
        hmac::verify(&self.key, &raw[..16], &raw[16..]).map_err(|_| AcmeError::bad_nonce())?;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let issued = u64::from_be_bytes(ts);
        let expires = issued.saturating_add(LIFETIME.as_secs());
        if expires < now() || issued > now() + 60 {
            return Err(AcmeError::bad_nonce());
        }
        let expires = i64::try_from(expires).unwrap_or(i64::MAX);
        match self.redeemer.redeem(nonce, expires).await? {
            true => Ok(()),
            false => Err(AcmeError::bad_nonce()),
        }
    }

    /// Drops expired redeemed nonces (run periodically).
    pub async fn purge(&self) -> Result<u64, ca_store::Error> {
        self.store
            .purge_nonces(i64::try_from(now()).unwrap_or(i64::MAX))
            .await
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

    #[tokio::test]
    async fn a_nonce_works_once() {
        let (_dir, n) = nonces().await;
        let nonce = n.issue();
        assert_eq!(nonce.len(), 64);
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
        forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
        assert!(
            a.redeem(&String::from_utf8(forged).expect("ascii"))
                .await
                .is_err()
        );
        assert!(a.redeem("not-a-nonce").await.is_err());
    }
}
