//! Secrets at rest: values the server must read back in clear (EAB MAC keys, the ACME nonce
//! key, Kubernetes `token_reviewer_jwt`) are stored sealed with AES-256-GCM under a key kept
//! beside the CA keys (`<data-dir>/ca/seal.key`, mode 0600), so a copy of the database alone does
//! not yield them. Secrets that only need comparing (tokens, AppRole secret IDs) are hashed
//! instead and never reach this module.
//!
//! Each sealed value is bound to its slot (`purpose`, e.g. `eab:<kid>`) as associated data, so a
//! sealed value copied into another row does not open there. The database records the seal key's
//! id; a server whose key file differs refuses to start ([`Seal::check_against`]) instead of
//! failing on every secret later.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of sealed text values; anything else is a value stored before sealing existed.
const PREFIX: &str = "sealed:v1:";

/// The sealing key.
pub struct Seal {
    key: LessSafeKey,
    /// Hex of the first 8 bytes of SHA-256(key): names the key without revealing it.
    id: String,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal").field("id", &self.id).finish()
    }
}

/// Why a sealed value does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a sealed secret does not open with this server's seal key ({0})")]
pub struct SealError(&'static str);

/// `<data-dir>/ca/seal.key`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ca").join("seal.key")
}

impl Seal {
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 32 {
            bail!("the seal key must be 32 bytes");
        }
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| anyhow::anyhow!("bad seal key"))?,
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        Ok(Self {
            key,
            id: crate::issuer::hierarchy::hex(&digest.as_ref()[..8]),
        })
    }

    /// Creates a new key file (mode 0600); refuses to replace one.
    pub fn create(data_dir: &Path) -> Result<Self> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        crate::issuer::keys::write_secret(&key_path(data_dir), format!("{text}\n").as_bytes())?;
        Self::from_bytes(&bytes)
    }

    /// Loads the key file; None when it does not exist.
    pub fn load(data_dir: &Path) -> Result<Option<Self>> {
        let path = key_path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .with_context(|| format!("{} is not base64", path.display()))?;
        Self::from_bytes(&bytes)
            .with_context(|| format!("{}", path.display()))
            .map(Some)
    }

    /// The key's id, recorded in the database.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records this key's id in the database on first use; refuses a database sealed under
    /// another key, naming the file to restore.
    pub async fn check_against(&self, store: &dyn ca_store::Store, data_dir: &Path) -> Result<()> {
        let recorded = store
            .setting_or_insert("seal_key_id", self.id.as_bytes())
            .await
            .context("recording the seal key id")?;
        if recorded != self.id.as_bytes() {
            bail!(
                "the database's secrets are sealed with key {} but {} is key {}: restore the seal \
                 key the other replicas use (the same Secret as the CA keys)",
                String::from_utf8_lossy(&recorded),
                key_path(data_dir).display(),
                self.id
            );
        }
        Ok(())
    }

    /// Seals `plaintext` for `purpose`: `nonce || ciphertext || tag`.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .unwrap_or_else(|_| panic!("the operating system's random number generator failed"));
        let mut out = plaintext.to_vec();
        // Sealing in place cannot fail for inputs below AES-GCM's 64 GiB limit.
        let _ = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(purpose.as_bytes()),
            &mut out,
        );
        let mut sealed = nonce.to_vec();
        sealed.extend(out);
        sealed
    }

    /// Opens what [`Seal::seal`] made for the same `purpose`.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError("too short"));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError("nonce"))?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buf)
            .map_err(|_| SealError("wrong key or tampered value"))?;
        Ok(plain.to_vec())
    }

    /// Seals text for a text column: `sealed:v1:<base64>`.
    pub fn seal_text(&self, purpose: &str, plaintext: &str) -> String {
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD
                .encode(self.seal(purpose, plaintext.as_bytes()))
        )
    }

    /// Opens a text value; values without the prefix (written before sealing) pass through.
    pub fn open_text(&self, purpose: &str, stored: &str) -> Result<String, SealError> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| SealError("not base64"))?;
        String::from_utf8(self.open(purpose, &sealed)?).map_err(|_| SealError("not UTF-8"))
    }

    /// Seals bytes for a binary column: the prefix, then [`Seal::seal`]'s output.
    pub fn seal_bytes(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut out = PREFIX.as_bytes().to_vec();
        out.extend(self.seal(purpose, plaintext));
        out
    }

    /// Opens a binary value; values without the prefix (written before sealing) pass through.
    pub fn open_bytes(&self, purpose: &str, stored: &[u8]) -> Result<Vec<u8>, SealError> {
        match stored.strip_prefix(PREFIX.as_bytes()) {
            Some(sealed) => self.open(purpose, sealed),
            None => Ok(stored.to_vec()),
        }
    }

    /// Opens a binary value that must be sealed: unlike [`Seal::open_bytes`] a value in clear is
    /// refused (only secrets from before sealing may be in clear, and none of these are).
    pub fn open_sealed_bytes(&self, purpose: &str, stored: &[u8]) -> Result<Vec<u8>, SealError> {
        match stored.strip_prefix(PREFIX.as_bytes()) {
            Some(sealed) => self.open(purpose, sealed),
            None => Err(SealError("a value that must be sealed is stored in clear")),
        }
    }

    /// True when a binary value is sealed.
    pub fn is_sealed_bytes(stored: &[u8]) -> bool {
        stored.starts_with(PREFIX.as_bytes())
    }

    /// True when a text value is sealed.
    pub fn is_sealed_text(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_key_and_purpose() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("ca")).expect("mkdir");
        let seal = Seal::create(dir.path()).expect("create");
        assert!(Seal::create(dir.path()).is_err(), "never replaced");
        let loaded = Seal::load(dir.path()).expect("load").expect("exists");
        assert_eq!(loaded.id(), seal.id());

        let sealed = seal.seal("eab:a", b"mac key");
        assert!(!sealed.windows(7).any(|w| w == b"mac key"), "no clear text");
        assert_eq!(
            loaded.open("eab:a", &sealed).as_deref(),
            Ok(&b"mac key"[..])
        );
        assert!(loaded.open("eab:b", &sealed).is_err(), "bound to its slot");
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert!(loaded.open("eab:a", &tampered).is_err());

        let other_dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(other_dir.path().join("ca")).expect("mkdir");
        let other = Seal::create(other_dir.path()).expect("create");
        assert!(other.open("eab:a", &sealed).is_err());

        let text = seal.seal_text("k8s", "eyJhbGciOi");
        assert!(Seal::is_sealed_text(&text) && !text.contains("eyJhbGciOi"));
        assert_eq!(seal.open_text("k8s", &text).as_deref(), Ok("eyJhbGciOi"));
        assert_eq!(seal.open_text("k8s", "legacy").as_deref(), Ok("legacy"));
        let bytes = seal.seal_bytes("eab:k", &[1, 2, 3]);
        assert!(Seal::is_sealed_bytes(&bytes));
        assert_eq!(seal.open_bytes("eab:k", &bytes), Ok(vec![1, 2, 3]));
        assert_eq!(seal.open_bytes("eab:k", &[9, 9]), Ok(vec![9, 9]));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(key_path(dir.path()))
                .expect("stat")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
