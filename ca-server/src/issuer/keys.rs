//! Private key files: generation, import of the PEM forms operators have (PKCS#8, PKCS#1 from
//! kubeadm's `ca.key`, SEC1 from `openssl ecparam`), and writing with mode 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use rcgen::KeyPair;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::{PemObject, SectionKind};

use super::asn1::tlv;

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// A new ECDSA P-256 key.
pub fn generate_p256() -> Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating a P-256 key")
}

/// Loads a private key from PEM in PKCS#8, PKCS#1 (`RSA PRIVATE KEY`) or SEC1
/// (`EC PRIVATE KEY`) form. Returns the key and its PKCS#8 encoding (what we store).
pub fn load_pem(pem: &str) -> Result<(KeyPair, Vec<u8>)> {
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        let (kind, der) = item.map_err(|e| anyhow!("reading key PEM: {e}"))?;
        let candidates: Vec<Vec<u8>> = match kind {
            SectionKind::PrivateKey => vec![der],
            SectionKind::RsaPrivateKey => vec![pkcs8_wrap(&rsa_alg_id(), &der)],
            SectionKind::EcPrivateKey => [OID_P256, OID_P384]
                .iter()
                .map(|curve| pkcs8_wrap(&ec_alg_id(curve), &der))
                .collect(),
            _ => continue,
        };
        for pkcs8 in candidates {
            if let Ok(key) = KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8.as_slice())) {
                return Ok((key, pkcs8));
            }
        }
        bail!("unsupported or invalid private key (accepted: ECDSA P-256/P-384, RSA, Ed25519)");
    }
    bail!("no private key PEM block found")
}

/// Writes `contents` to `path` readable only by the owner (0600). Refuses to overwrite.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // The umask cannot widen 0600, but an inherited ACL or odd umask can narrow; set it exactly.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// PKCS#8 PEM of a key pair.
pub fn pkcs8_pem(key: &KeyPair) -> String {
    key.serialize_pem()
}

fn rsa_alg_id() -> Vec<u8> {
    let mut content = tlv(0x06, OID_RSA_ENCRYPTION);
    content.extend(tlv(0x05, &[]));
    tlv(0x30, &content)
}

fn ec_alg_id(curve: &[u8]) -> Vec<u8> {
    let mut content = tlv(0x06, OID_EC_PUBLIC_KEY);
    content.extend(tlv(0x06, curve));
    tlv(0x30, &content)
}

/// `PrivateKeyInfo ::= SEQUENCE { version 0, algorithm, privateKey OCTET STRING }`.
fn pkcs8_wrap(alg_id: &[u8], key: &[u8]) -> Vec<u8> {
    let mut content = tlv(0x02, &[0]);
    content.extend_from_slice(alg_id);
    content.extend(tlv(0x04, key));
    tlv(0x30, &content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        write_secret(&path, b"secret").expect("write");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_secret(&path, b"again").is_err(), "must not overwrite");
    }

    #[test]
    fn generated_key_round_trips_through_pem() {
        let key = generate_p256().expect("keygen");
        let (loaded, _) = load_pem(&pkcs8_pem(&key)).expect("load");
        assert_eq!(loaded.public_key_raw(), key.public_key_raw());
    }
}
