//! JSON Web Keys and signatures (RFC 7515/7517/7518/7638), the parts ACME account keys and
//! Kubernetes service-account JWTs share: public JWKs (RSA 2048–4096, P-256, P-384), RFC 7638
//! thumbprints, signature verification with ring (RS256, ES256, ES384), and base64url.
//!
//! A leaf: it knows neither ACME nor Vault. Each caller maps [`JoseError`] to its protocol's error.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// Why a key or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoseError {
    /// A JWK that is malformed or of a kind or size we do not accept.
    #[error("{0}")]
    BadKey(String),
    /// The algorithm does not fit the key type.
    #[error("algorithm {0} does not match the key type")]
    AlgorithmMismatch(String),
    /// The signature does not verify.
    #[error("JWS signature is invalid")]
    BadSignature,
}

/// A public JWK: RSA (`n`, `e`) or EC (`crv`, `x`, `y`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `RSA` or `EC`.
    pub kty: String,
    /// EC curve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// An account key ready to verify signatures.
#[derive(Debug, Clone)]
pub enum AccountKey {
    /// RSA modulus and exponent (big-endian, no leading zeros).
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Exponent.
        e: Vec<u8>,
    },
    /// P-256 uncompressed point.
    P256(Vec<u8>),
    /// P-384 uncompressed point.
    P384(Vec<u8>),
}

fn b64(field: &str, value: Option<&String>) -> Result<Vec<u8>, JoseError> {
    let v = value.ok_or_else(|| JoseError::BadKey(format!("JWK lacks {field}")))?;
    B64.decode(v)
        .map_err(|_| JoseError::BadKey(format!("JWK {field} is not base64url")))
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let skip = v.iter().take_while(|b| **b == 0).count();
    v.drain(..skip);
    v
}

impl Jwk {
    /// Validates the key and converts it for verification.
    pub fn key(&self) -> Result<AccountKey, JoseError> {
        let bad = |m: &str| JoseError::BadKey(m.to_owned());
        match self.kty.as_str() {
            "RSA" => {
                let n = strip_zeros(b64("n", self.n.as_ref())?);
                let e = strip_zeros(b64("e", self.e.as_ref())?);
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                if !(2048..=4096).contains(&bits) {
                    return Err(bad(&format!("RSA keys must be 2048-4096 bits, not {bits}")));
                }
                if e.is_empty() || e.len() > 4 {
                    return Err(bad("unsupported RSA exponent"));
                }
                Ok(AccountKey::Rsa { n, e })
            }
            "EC" => {
                let (len, p384) = match self.crv.as_deref() {
                    Some("P-256") => (32, false),
                    Some("P-384") => (48, true),
                    other => return Err(bad(&format!("unsupported EC curve {other:?}"))),
                };
                let x = b64("x", self.x.as_ref())?;
                let y = b64("y", self.y.as_ref())?;
                if x.len() != len || y.len() != len {
                    return Err(bad("EC coordinates have the wrong length"));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(if p384 {
                    AccountKey::P384(point)
                } else {
                    AccountKey::P256(point)
                })
            }
            other => Err(bad(&format!("unsupported key type {other:?}"))),
        }
    }

    /// RFC 7638 thumbprint (base64url SHA-256 of the canonical JSON of the required members).
    pub fn thumbprint(&self) -> Result<String, JoseError> {
        let canonical = match self.key()? {
            AccountKey::Rsa { n, e } => {
                format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    B64.encode(e),
                    B64.encode(n)
                )
            }
            AccountKey::P256(p) | AccountKey::P384(p) => {
                let len = (p.len() - 1) / 2;
                let crv = if len == 32 { "P-256" } else { "P-384" };
                format!(
                    r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                    B64.encode(&p[1..=len]),
                    B64.encode(&p[1 + len..])
                )
            }
        };
        Ok(B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        )))
    }

    /// The JWK of a certificate's or CSR's subject public key (RSA or EC), for comparing keys.
    pub fn from_spki(spki: &crate::issuer::SubjectPublicKey) -> Option<Jwk> {
        use crate::issuer::KeyAlgorithm;
        let raw = spki.raw();
        match spki.algorithm() {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                let len = raw.len().checked_sub(1)? / 2;
                Some(Jwk {
                    kty: "EC".into(),
                    crv: Some(if len == 32 { "P-256" } else { "P-384" }.into()),
                    x: Some(B64.encode(raw.get(1..=len)?)),
                    y: Some(B64.encode(raw.get(1 + len..)?)),
                    n: None,
                    e: None,
                })
            }
            KeyAlgorithm::Rsa(_) => {
                let (n, e) = rsa_components(raw)?;
                Some(Jwk {
                    kty: "RSA".into(),
                    crv: None,
                    x: None,
                    y: None,
                    n: Some(B64.encode(strip_zeros(n))),
                    e: Some(B64.encode(strip_zeros(e))),
                })
            }
            KeyAlgorithm::Ed25519 => None,
        }
    }
}

fn rsa_components(raw: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use der::Decode;
    use der::asn1::UintRef;
    #[derive(der::Sequence)]
    struct RsaPublicKey<'a> {
        n: UintRef<'a>,
        e: UintRef<'a>,
    }
    let key = RsaPublicKey::from_der(raw).ok()?;
    Some((key.n.as_bytes().to_vec(), key.e.as_bytes().to_vec()))
}

impl AccountKey {
    /// Verifies `sig` over `message` for `alg`, which must match the key type.
    pub fn verify(&self, alg: &str, message: &[u8], sig: &[u8]) -> Result<(), JoseError> {
        let mismatch = || JoseError::AlgorithmMismatch(alg.to_owned());
        let ok = match (self, alg) {
            (AccountKey::Rsa { n, e }, "RS256") => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            (AccountKey::P256(p), "ES256") => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, p)
                    .verify(message, sig)
                    .is_ok()
            }
            (AccountKey::P384(p), "ES384") => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, p)
                    .verify(message, sig)
                    .is_ok()
            }
            _ => return Err(mismatch()),
        };
        if ok {
            Ok(())
        } else {
            Err(JoseError::BadSignature)
        }
    }
}

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    B64.encode(data)
}

/// Decodes base64url without padding (tolerating padding).
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7638 §3.1 example key and thumbprint.
    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    #[test]
    fn rfc7638_thumbprint() {
        let jwk = Jwk {
            kty: "RSA".into(),
            n: Some(RFC7638_N.into()),
            e: Some("AQAB".into()),
            crv: None,
            x: None,
            y: None,
        };
        assert_eq!(
            jwk.thumbprint().expect("thumbprint"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn es256_signatures_verify_and_tampering_fails() {
        use ring::rand::SystemRandom;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("keygen");
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let point = kp.public_key().as_ref();
        let jwk = Jwk {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: Some(b64url(&point[1..33])),
            y: Some(b64url(&point[33..])),
            n: None,
            e: None,
        };
        let sig = kp.sign(&rng, b"message").expect("sign");
        let key = jwk.key().expect("key");
        key.verify("ES256", b"message", sig.as_ref())
            .expect("verifies");
        assert_eq!(
            key.verify("ES256", b"massage", sig.as_ref()),
            Err(JoseError::BadSignature)
        );
        assert_eq!(
            key.verify("RS256", b"message", sig.as_ref()),
            Err(JoseError::AlgorithmMismatch("RS256".into()))
        );
    }

    #[test]
    fn small_rsa_keys_are_refused() {
        let jwk = Jwk {
            kty: "RSA".into(),
            n: Some(b64url(&[0xc5; 128])),
            e: Some("AQAB".into()),
            crv: None,
            x: None,
            y: None,
        };
        assert!(matches!(jwk.key(), Err(JoseError::BadKey(_))));
    }
}
