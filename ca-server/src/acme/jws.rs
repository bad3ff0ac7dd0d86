//! JSON Web Signatures as ACME uses them (RFC 8555 §6.2, RFC 7515 flattened JSON): account keys
//! as JWKs (RSA 2048–4096, P-256, P-384), RFC 7638 thumbprints, signature verification with ring,
//! and the HMAC check of External Account Bindings.
//!
//! Verified algorithms: RS256, ES256, ES384. `none` and MAC algorithms are refused on account
//! requests; MACs (HS256/384/512) are accepted only inside an EAB.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::problem::{AcmeError, ProblemType};

/// Algorithms accepted for account-key signatures, as advertised in badSignatureAlgorithm.
pub const SIGNATURE_ALGORITHMS: [&str; 3] = ["RS256", "ES256", "ES384"];

/// A flattened JWS as POSTed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlattenedJws {
    /// base64url protected header.
    pub protected: String,
    /// base64url payload; empty for POST-as-GET.
    pub payload: String,
    /// base64url signature.
    pub signature: String,
}

/// The protected header members ACME uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ProtectedHeader {
    /// Signature algorithm.
    pub alg: String,
    /// Anti-replay nonce.
    pub nonce: Option<String>,
    /// The request URL.
    pub url: Option<String>,
    /// The signer's key (newAccount, revocation by certificate key).
    pub jwk: Option<Jwk>,
    /// The signer's account URL.
    pub kid: Option<String>,
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

fn b64(field: &str, value: Option<&String>) -> Result<Vec<u8>, AcmeError> {
    let v = value
        .ok_or_else(|| AcmeError::new(ProblemType::BadPublicKey, format!("JWK lacks {field}")))?;
    B64.decode(v).map_err(|_| {
        AcmeError::new(
            ProblemType::BadPublicKey,
            format!("JWK {field} is not base64url"),
        )
    })
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let skip = v.iter().take_while(|b| **b == 0).count();
    v.drain(..skip);
    v
}

impl Jwk {
    /// Validates the key and converts it for verification.
    pub fn key(&self) -> Result<AccountKey, AcmeError> {
        let bad = |m: &str| AcmeError::new(ProblemType::BadPublicKey, m.to_owned());
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
    pub fn thumbprint(&self) -> Result<String, AcmeError> {
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
    pub fn verify(&self, alg: &str, message: &[u8], sig: &[u8]) -> Result<(), AcmeError> {
        let mismatch = || {
            AcmeError::new(
                ProblemType::BadSignatureAlgorithm,
                format!("algorithm {alg} does not match the key type"),
            )
        };
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
            Err(AcmeError::malformed("JWS signature is invalid"))
        }
    }
}

/// A decoded JWS: header, raw signing input and signature.
#[derive(Debug, Clone)]
pub struct DecodedJws {
    /// Protected header.
    pub header: ProtectedHeader,
    /// Payload bytes (empty for POST-as-GET).
    pub payload: Vec<u8>,
    /// `protected || '.' || payload` as sent.
    pub signing_input: Vec<u8>,
    /// Signature bytes.
    pub signature: Vec<u8>,
}

/// Parses a flattened JWS body and refuses disallowed algorithms. The signature is not checked.
pub fn decode(body: &[u8]) -> Result<DecodedJws, AcmeError> {
    let jws: FlattenedJws = serde_json::from_slice(body)
        .map_err(|e| AcmeError::malformed(format!("request body is not a flattened JWS: {e}")))?;
    decode_parts(&jws)
}

/// Decodes an already-parsed flattened JWS (used for EAB and keyChange inner JWS too).
pub fn decode_parts(jws: &FlattenedJws) -> Result<DecodedJws, AcmeError> {
    let protected = B64
        .decode(&jws.protected)
        .map_err(|_| AcmeError::malformed("protected header is not base64url"))?;
    let header: ProtectedHeader = serde_json::from_slice(&protected)
        .map_err(|e| AcmeError::malformed(format!("protected header is not valid JSON: {e}")))?;
    let payload = B64
        .decode(&jws.payload)
        .map_err(|_| AcmeError::malformed("payload is not base64url"))?;
    let signature = B64
        .decode(&jws.signature)
        .map_err(|_| AcmeError::malformed("signature is not base64url"))?;
    let mut signing_input = jws.protected.clone().into_bytes();
    signing_input.push(b'.');
    signing_input.extend_from_slice(jws.payload.as_bytes());
    Ok(DecodedJws {
        header,
        payload,
        signing_input,
        signature,
    })
}

/// badSignatureAlgorithm unless `alg` is one we verify for account keys.
pub fn check_account_alg(alg: &str) -> Result<(), AcmeError> {
    if SIGNATURE_ALGORITHMS.contains(&alg) {
        return Ok(());
    }
    let mut err = AcmeError::new(
        ProblemType::BadSignatureAlgorithm,
        format!("JWS algorithm {alg:?} is not accepted for account requests"),
    );
    err.extra = Some(("algorithms", Value::from(SIGNATURE_ALGORITHMS.to_vec())));
    Err(err)
}

/// Verifies an EAB JWS MAC (HS256/384/512) in constant time.
pub fn verify_mac(alg: &str, key: &[u8], message: &[u8], tag: &[u8]) -> Result<(), AcmeError> {
    let algorithm = match alg {
        "HS256" => ring::hmac::HMAC_SHA256,
        "HS384" => ring::hmac::HMAC_SHA384,
        "HS512" => ring::hmac::HMAC_SHA512,
        other => {
            return Err(AcmeError::malformed(format!(
                "externalAccountBinding uses unsupported MAC algorithm {other:?}"
            )));
        }
    };
    ring::hmac::verify(&ring::hmac::Key::new(algorithm, key), message, tag)
        .map_err(|_| AcmeError::unauthorized("externalAccountBinding MAC does not verify"))
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
        assert!(key.verify("ES256", b"massage", sig.as_ref()).is_err());
        let err = key
            .verify("RS256", b"message", sig.as_ref())
            .expect_err("alg mismatch");
        assert_eq!(err.kind, ProblemType::BadSignatureAlgorithm);
    }

    #[test]
    fn none_and_mac_algorithms_are_refused_for_accounts() {
        for alg in ["none", "HS256", "RS1", ""] {
            let err = check_account_alg(alg).expect_err(alg);
            assert_eq!(err.kind, ProblemType::BadSignatureAlgorithm);
            assert!(err.document()["algorithms"].is_array());
        }
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
        assert_eq!(
            jwk.key().expect_err("1024-bit").kind,
            ProblemType::BadPublicKey
        );
    }
}
