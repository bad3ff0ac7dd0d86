//! JSON Web Signatures as ACME uses them (RFC 8555 §6.2, RFC 7515 flattened JSON): decoding,
//! which algorithms account requests may use, and the HMAC check of External Account Bindings.
//! Keys, thumbprints and signature verification are [`crate::jose`]'s; its errors become problem
//! documents here.
//!
//! Verified algorithms: RS256, ES256, ES384. `none` and MAC algorithms are refused on account
//! requests; MACs (HS256/384/512) are accepted only inside an EAB.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use serde_json::Value;

use super::problem::{AcmeError, ProblemType};
pub use crate::jose::{AccountKey, JoseError, Jwk, b64url, b64url_decode};

impl From<JoseError> for AcmeError {
    fn from(e: JoseError) -> Self {
        match e {
            JoseError::BadKey(m) => AcmeError::new(ProblemType::BadPublicKey, m),
            e @ JoseError::AlgorithmMismatch(_) => {
                AcmeError::new(ProblemType::BadSignatureAlgorithm, e.to_string())
            }
            e => AcmeError::malformed(e.to_string()),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_and_mac_algorithms_are_refused_for_accounts() {
        for alg in ["none", "HS256", "RS1", ""] {
            let err = check_account_alg(alg).expect_err(alg);
            assert_eq!(err.kind, ProblemType::BadSignatureAlgorithm);
            assert!(err.document()["algorithms"].is_array());
        }
    }

    #[test]
    fn key_errors_become_problems() {
        let bad = Jwk {
            kty: "OKP".into(),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
        };
        let err: AcmeError = bad.key().expect_err("unsupported").into();
        assert_eq!(err.kind, ProblemType::BadPublicKey);
        let mismatch: AcmeError = JoseError::AlgorithmMismatch("RS256".into()).into();
        assert_eq!(mismatch.kind, ProblemType::BadSignatureAlgorithm);
    }
}
