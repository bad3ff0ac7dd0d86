//! PKCS#10 certificate requests: parsed with x509-cert, signature verified here with ring.
//!
//! We do not use rcgen's CSR parser: it rejects CSRs carrying extensions it does not model (such as
//! the NameConstraints cert-manager sends for `spec.nameConstraints`). Nothing in a CSR is copied
//! into a certificate: this module only reports what was asked for (subject, SANs, key); policy
//! decides what is granted and the profile decides the extensions.

use std::fmt;
use std::net::IpAddr;

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::der::asn1::{BitString, ObjectIdentifier};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Decode, Encode, Header, Reader, SliceReader};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::request::{CertReq, ExtensionReq};

/// What is wrong with a CSR. Shown to clients (ACME `badCSR`, Vault 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Not valid DER / PEM for a PKCS#10 request.
    #[error("CSR is not a valid PKCS#10 request: {0}")]
    Malformed(String),
    /// The self-signature does not verify.
    #[error("CSR signature does not verify")]
    BadSignature,
    /// A key or signature algorithm we do not accept.
    #[error("unsupported key or signature algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// An RSA key outside 2048–4096 bits.
    #[error("RSA key size {0} is outside the accepted 2048-4096 bits")]
    RsaKeySize(usize),
}

/// The subject key algorithms we issue for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA with the modulus size in bits.
    Rsa(usize),
    /// Ed25519.
    Ed25519,
}

impl KeyAlgorithm {
    /// True for RSA, whose TLS use still involves key encipherment.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyAlgorithm::Rsa(_))
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::EcdsaP256 => f.write_str("ECDSA-P256"),
            KeyAlgorithm::EcdsaP384 => f.write_str("ECDSA-P384"),
            KeyAlgorithm::Rsa(bits) => write!(f, "RSA-{bits}"),
            KeyAlgorithm::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// A subject public key as it will appear in the certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectPublicKey {
    /// DER SubjectPublicKeyInfo exactly as received.
    spki_der: Vec<u8>,
    /// Contents of the subjectPublicKey BIT STRING.
    raw: Vec<u8>,
    algorithm: KeyAlgorithm,
}

impl fmt::Debug for SubjectPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectPublicKey({})", self.algorithm)
    }
}

impl SubjectPublicKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(spki_der: &[u8]) -> Result<Self, CsrError> {
        let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(spki_der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| CsrError::Malformed("public key has unused bits".into()))?
            .to_vec();
        let algorithm = key_algorithm(&spki, &raw)?;
        Ok(Self {
            spki_der: spki_der.to_vec(),
            raw,
            algorithm,
        })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Contents of the subjectPublicKey BIT STRING (EC point, RSAPublicKey, or Ed25519 key).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

impl rcgen::PublicKeyData for SubjectPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn subject_public_key_info(&self) -> Vec<u8> {
        self.spki_der.clone()
    }

    // rcgen writes the SPKI algorithm from this; for RSA it writes rsaEncryption with NULL
    // parameters, for EC the named curve, matching what we accepted.
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.algorithm {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// A CSR whose signature verified, with what it asks for.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    /// The key to certify.
    pub public_key: SubjectPublicKey,
    /// Subject DN; `to_string()` gives RFC 4514 text. Kept structured: formatting looks every
    /// attribute type up in an OID table, a measurable share of a signing, and only some callers
    /// need the text.
    pub subject: x509_cert::name::Name,
    /// Subject common name, if present.
    pub common_name: Option<String>,
    /// Requested DNS names.
    pub dns_names: Vec<String>,
    /// Requested IP addresses.
    pub ip_addresses: Vec<IpAddr>,
    /// Requested URIs (SPIFFE IDs among them).
    pub uris: Vec<String>,
    /// Requested e-mail addresses.
    pub emails: Vec<String>,
    /// Requested SAN types we do not issue (otherName, directoryName, …), described.
    pub unsupported_sans: Vec<String>,
}

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const OID_SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// Parses a PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) CSR and verifies it.
pub fn parse_pem(pem: &str) -> Result<VerifiedCsr, CsrError> {
    use rustls::pki_types::pem::{PemObject, SectionKind};
    let mut found = None;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        let (kind, der) = item.map_err(|e| CsrError::Malformed(format!("PEM: {e}")))?;
        if kind == SectionKind::Csr {
            found = Some(der);
            break;
        }
    }
    // rustls-pki-types only labels "CERTIFICATE REQUEST"; accept the legacy label too.
    let der = match found {
        Some(der) => der,
        None => legacy_pem_body(pem)?,
    };
    parse_der(&der)
}

fn legacy_pem_body(pem: &str) -> Result<Vec<u8>, CsrError> {
    use base64::Engine as _;
    let begin = "-----BEGIN NEW CERTIFICATE REQUEST-----";
    let end = "-----END NEW CERTIFICATE REQUEST-----";
    let start = pem
        .find(begin)
        .ok_or_else(|| CsrError::Malformed("no CERTIFICATE REQUEST PEM block".into()))?;
    let body = &pem[start + begin.len()..];
    let stop = body
        .find(end)
        .ok_or_else(|| CsrError::Malformed("unterminated PEM block".into()))?;
    let b64: String = body[..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| CsrError::Malformed("bad base64".into()))
}

/// Parses a DER CSR and verifies its signature.
pub fn parse_der(der: &[u8]) -> Result<VerifiedCsr, CsrError> {
    let req = CertReq::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    let info_der = signed_info_bytes(der)?;
    let spki_der = req
        .info
        .public_key
        .to_der()
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    let public_key = SubjectPublicKey::from_spki_der(&spki_der)?;
    verify_signature(&public_key, &req.algorithm.oid, &req.signature, info_der)?;

    let common_name = req
        .info
        .subject
        .common_name()
        .map_err(|e| CsrError::Malformed(format!("subject common name: {e}")))?
        .map(String::from);
    let mut csr = VerifiedCsr {
        public_key,
        subject: req.info.subject.clone(),
        common_name,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        uris: Vec::new(),
        emails: Vec::new(),
        unsupported_sans: Vec::new(),
    };
    for attr in req.info.attributes.iter() {
        if attr.oid != ExtensionReq::OID {
            continue;
        }
        for value in attr.values.iter() {
            let exts: ExtensionReq = value
                .decode_as()
                .map_err(|e| CsrError::Malformed(format!("extensionRequest: {e}")))?;
            for ext in exts.0.iter().filter(|e| e.extn_id == OID_SAN) {
                let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                    .map_err(|e| CsrError::Malformed(format!("subjectAltName: {e}")))?;
                collect_sans(&mut csr, san)?;
            }
        }
    }
    Ok(csr)
}

fn collect_sans(csr: &mut VerifiedCsr, san: SubjectAltName) -> Result<(), CsrError> {
    for name in san.0 {
        match name {
            GeneralName::DnsName(n) => csr.dns_names.push(n.to_string()),
            GeneralName::UniformResourceIdentifier(u) => csr.uris.push(u.to_string()),
            GeneralName::Rfc822Name(e) => csr.emails.push(e.to_string()),
            GeneralName::IpAddress(ip) => {
                let b = ip.as_bytes();
                let addr = match b.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(b).unwrap_or_default()),
                    16 => IpAddr::from(<[u8; 16]>::try_from(b).unwrap_or_default()),
                    n => return Err(CsrError::Malformed(format!("IP SAN of {n} bytes"))),
                };
                csr.ip_addresses.push(addr);
            }
            GeneralName::OtherName(o) => csr
                .unsupported_sans
                .push(format!("otherName {}", o.type_id)),
            GeneralName::DirectoryName(d) => {
                csr.unsupported_sans.push(format!("directoryName {d}"))
            }
            GeneralName::RegisteredId(oid) => {
                csr.unsupported_sans.push(format!("registeredID {oid}"))
            }
            GeneralName::EdiPartyName(_) => csr.unsupported_sans.push("ediPartyName".into()),
        }
    }
    Ok(())
}

/// The exact bytes of `certificationRequestInfo` as received (what the signature covers).
fn signed_info_bytes(der: &[u8]) -> Result<&[u8], CsrError> {
    let malformed = |e: x509_cert::der::Error| CsrError::Malformed(e.to_string());
    let mut reader = SliceReader::new(der).map_err(malformed)?;
    let _outer = Header::decode(&mut reader).map_err(malformed)?;
    let start =
        usize::try_from(reader.position()).map_err(|_| CsrError::Malformed("offset".into()))?;
    let inner = Header::decode(&mut reader).map_err(malformed)?;
    let header_len = usize::try_from(reader.position())
        .map_err(|_| CsrError::Malformed("offset".into()))?
        - start;
    let body_len =
        usize::try_from(inner.length()).map_err(|_| CsrError::Malformed("length".into()))?;
    der.get(start..start + header_len + body_len)
        .ok_or_else(|| CsrError::Malformed("truncated".into()))
}

fn key_algorithm(
    spki: &x509_cert::spki::SubjectPublicKeyInfoOwned,
    raw: &[u8],
) -> Result<KeyAlgorithm, CsrError> {
    let oid = spki.algorithm.oid;
    if oid == OID_EC_PUBLIC_KEY {
        let curve: ObjectIdentifier = spki
            .algorithm
            .parameters
            .as_ref()
            .ok_or_else(|| CsrError::Malformed("EC key without curve".into()))?
            .decode_as()
            .map_err(|e| CsrError::Malformed(format!("EC curve: {e}")))?;
        return match curve {
            c if c == OID_P256 => Ok(KeyAlgorithm::EcdsaP256),
            c if c == OID_P384 => Ok(KeyAlgorithm::EcdsaP384),
            c => Err(CsrError::UnsupportedAlgorithm(format!("EC curve {c}"))),
        };
    }
    if oid == OID_RSA {
        let bits = rsa_modulus_bits(raw)?;
        if !(2048..=4096).contains(&bits) {
            return Err(CsrError::RsaKeySize(bits));
        }
        return Ok(KeyAlgorithm::Rsa(bits));
    }
    if oid == OID_ED25519 {
        return Ok(KeyAlgorithm::Ed25519);
    }
    Err(CsrError::UnsupportedAlgorithm(format!("public key {oid}")))
}

/// Bit length of an RSAPublicKey's modulus.
fn rsa_modulus_bits(raw: &[u8]) -> Result<usize, CsrError> {
    use x509_cert::der::asn1::UintRef;
    #[derive(der::Sequence)]
    struct RsaPublicKey<'a> {
        modulus: UintRef<'a>,
        _exponent: UintRef<'a>,
    }
    let key =
        RsaPublicKey::from_der(raw).map_err(|e| CsrError::Malformed(format!("RSA key: {e}")))?;
    let m = key.modulus.as_bytes();
    let Some(first) = m.first() else {
        return Err(CsrError::Malformed("empty RSA modulus".into()));
    };
    Ok(m.len() * 8 - first.leading_zeros() as usize)
}

fn verify_signature(
    key: &SubjectPublicKey,
    sig_oid: &ObjectIdentifier,
    signature: &BitString,
    message: &[u8],
) -> Result<(), CsrError> {
    let alg: &'static dyn VerificationAlgorithm = match (key.algorithm, *sig_oid) {
        (KeyAlgorithm::EcdsaP256, o) if o == OID_ECDSA_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
        (KeyAlgorithm::EcdsaP256, o) if o == OID_ECDSA_SHA384 => &signature::ECDSA_P256_SHA384_ASN1,
        (KeyAlgorithm::EcdsaP384, o) if o == OID_ECDSA_SHA256 => &signature::ECDSA_P384_SHA256_ASN1,
        (KeyAlgorithm::EcdsaP384, o) if o == OID_ECDSA_SHA384 => &signature::ECDSA_P384_SHA384_ASN1,
        (KeyAlgorithm::Rsa(_), o) if o == OID_RSA_SHA256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        (KeyAlgorithm::Rsa(_), o) if o == OID_RSA_SHA384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        (KeyAlgorithm::Rsa(_), o) if o == OID_RSA_SHA512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        (KeyAlgorithm::Ed25519, o) if o == OID_ED25519 => &signature::ED25519,
        (k, o) => {
            return Err(CsrError::UnsupportedAlgorithm(format!(
                "signature {o} with a {k} key"
            )));
        }
    };
    let sig = signature
        .as_bytes()
        .ok_or_else(|| CsrError::Malformed("signature has unused bits".into()))?;
    UnparsedPublicKey::new(alg, key.raw())
        .verify(message, sig)
        .map_err(|_| CsrError::BadSignature)
}
