//! The pre-signing check: the last gate every certificate passes, whoever asked for it.
//!
//! rcgen hands the exact to-be-signed bytes (`TBSCertificate`) to the signing key; the issuing key
//! sits behind [`GatedKey`], which parses those bytes and checks them here before the key is used
//! (Boulder lints the same way, before its real signature). Policy has already decided what the
//! caller may have; this module checks what the certificate *says*, against RFC 5280 and the
//! profile, so that a bug or a gap in any caller's policy cannot produce a certificate that breaks
//! them: names of valid syntax and bounded size, no control characters, a server certificate's
//! common name among its SANs when it reads as a host name or address, validity inside the
//! issuer's, and exactly the extensions the profile defines.
//!
//! It never decides *who* may have a name; that is [`crate::policy`]'s job.

use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;
use x509_parser::certificate::TbsCertificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::*;
use x509_parser::prelude::FromDer;

use super::Profile;
use crate::names::{has_control_character, is_valid_uri, normalize_dns_name, normalize_email};
use crate::spiffe::SpiffeId;

/// RFC 5280 `ub-common-name`: no configuration can raise it.
pub const MAX_COMMON_NAME: usize = 64;

/// Size limits of one certificate (`[ca.limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most subject alternative names in one certificate (Let's Encrypt's cap is 100).
    pub max_sans: usize,
    /// Most octets of all SAN values together.
    pub max_san_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sans: 100,
            max_san_bytes: 16 * 1024,
        }
    }
}

/// One way a to-be-signed certificate breaks the rules. Shown to clients (Vault 400, ACME
/// `badCSR`), so messages name the offending value without echoing unbounded input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The bytes are not a TBSCertificate (a bug: we built them).
    #[error("the to-be-signed certificate does not parse: {0}")]
    Malformed(String),
    /// A subject attribute longer than its RFC 5280 upper bound.
    #[error("subject {attribute} is {length} characters long; the limit is {limit}")]
    AttributeTooLong {
        /// Short name (CN, O, …).
        attribute: &'static str,
        /// Characters in the value.
        length: usize,
        /// RFC 5280 upper bound.
        limit: usize,
    },
    /// A control character (NUL, escape, C1…) in a subject attribute or a SAN.
    #[error("{0} contains a control character")]
    ControlCharacter(&'static str),
    /// A subject attribute type or string type we never issue.
    #[error("subject attribute {0} is not allowed")]
    Attribute(String),
    /// More SANs than [`Limits::max_sans`].
    #[error("{count} subject alternative names requested; at most {limit} are allowed")]
    TooManyNames {
        /// Requested.
        count: usize,
        /// Allowed.
        limit: usize,
    },
    /// The SAN values together exceed [`Limits::max_san_bytes`].
    #[error("the subject alternative names total {bytes} octets; at most {limit} are allowed")]
    NamesTooLarge {
        /// Requested.
        bytes: usize,
        /// Allowed.
        limit: usize,
    },
    /// A SAN of invalid syntax.
    #[error("{kind} {value:?} is not valid")]
    InvalidName {
        /// `DNS name`, `e-mail address`, `URI`, `IP address`.
        kind: &'static str,
        /// The value, shortened.
        value: String,
    },
    /// The common name of a server certificate is none of its SANs.
    #[error(
        "the common name {0:?} must also be one of the certificate's subject alternative names"
    )]
    CommonNameNotInSans(String),
    /// Validity outside the issuer's or the profile's bounds.
    #[error("{0}")]
    Validity(String),
    /// An extension missing, unexpected, duplicated or wrong for the profile.
    #[error("{0}")]
    Extension(String),
    /// The certificate would name nobody, or break a profile's name rule.
    #[error("{0}")]
    Names(String),
    /// The key in the certificate is not the key that was approved, or not one we certify.
    #[error("{0}")]
    Key(String),
}

/// What the to-be-signed certificate must agree with.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// The profile it was built for.
    pub profile: Profile,
    /// Raw DER of the issuing CA's subject (the certificate's issuer must equal it).
    pub issuer_subject: &'a [u8],
    /// The issuing CA's key identifier (the authority key identifier must equal it).
    pub issuer_key_id: &'a [u8],
    /// The issuing CA's validity.
    pub issuer_not_before: OffsetDateTime,
    /// The issuing CA's validity.
    pub issuer_not_after: OffsetDateTime,
    /// Longest validity the profile allows (its maximum lifetime plus backdating).
    pub max_validity: Duration,
    /// The subjectPublicKey bits that were approved.
    pub public_key: &'a [u8],
    /// Size limits.
    pub limits: Limits,
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Checks a DER `TBSCertificate` against RFC 5280 and the profile.
pub fn check(tbs_der: &[u8], expect: &Expectations<'_>) -> Result<(), Violation> {
    let (rest, tbs) =
        TbsCertificate::from_der(tbs_der).map_err(|e| Violation::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Violation::Malformed("trailing bytes".into()));
    }
    check_serial(tbs.raw_serial())?;
    if tbs.issuer.as_raw() != expect.issuer_subject {
        return Err(Violation::Names(
            "the issuer name is not the issuing CA's subject".into(),
        ));
    }
    check_validity(&tbs, expect)?;
    if tbs.subject_pki.subject_public_key.data.as_ref() != expect.public_key {
        return Err(Violation::Key(
            "the certificate's key is not the approved key".into(),
        ));
    }
    let common_name = check_subject(&tbs)?;
    let extensions = Extensions::read(&tbs)?;
    let names = check_sans(&extensions, expect.limits)?;
    if expect.profile == Profile::Ca && tbs.subject.iter_attributes().next().is_none() {
        // RFC 5280 4.1.2.6: a CA's subject is never empty (issuers are matched by it).
        return Err(Violation::Names(
            "a CA certificate needs a subject (a common name or an organisation)".into(),
        ));
    }
    check_profile(expect, &tbs, &extensions, &names, common_name.as_deref())
}

fn check_serial(serial: &[u8]) -> Result<(), Violation> {
    let positive = serial.first().is_some_and(|b| b & 0x80 == 0) && serial.iter().any(|b| *b != 0);
    if !positive || serial.len() > 20 {
        return Err(Violation::Malformed(
            "serial number must be positive and at most 20 octets".into(),
        ));
    }
    Ok(())
}

fn check_validity(tbs: &TbsCertificate<'_>, expect: &Expectations<'_>) -> Result<(), Violation> {
    let not_before = tbs.validity.not_before.to_datetime();
    let not_after = tbs.validity.not_after.to_datetime();
    if not_after <= not_before {
        return Err(Violation::Validity(
            "notAfter is not after notBefore".into(),
        ));
    }
    if not_before < expect.issuer_not_before || not_after > expect.issuer_not_after {
        return Err(Violation::Validity(
            "the validity period is not inside the issuing CA's".into(),
        ));
    }
    let length = not_after - not_before;
    if length > expect.max_validity {
        return Err(Violation::Validity(format!(
            "a validity of {} is longer than the {} profile allows",
            crate::duration::format_go(length.unsigned_abs()),
            expect.profile
        )));
    }
    Ok(())
}

/// Subject attributes: known types, bounded lengths, no control characters. Returns the CN.
fn check_subject(tbs: &TbsCertificate<'_>) -> Result<Option<String>, Violation> {
    let mut common_name = None;
    for attr in tbs.subject.iter_attributes() {
        let oid = attr.attr_type();
        let (name, limit): (&'static str, usize) = if *oid == OID_X509_COMMON_NAME {
            ("CN", MAX_COMMON_NAME)
        } else if *oid == OID_X509_ORGANIZATION_NAME {
            ("O", 64)
        } else if *oid == OID_X509_ORGANIZATIONAL_UNIT {
            ("OU", 64)
        } else if *oid == OID_X509_LOCALITY_NAME {
            ("L", 128)
        } else if *oid == OID_X509_STATE_OR_PROVINCE_NAME {
            ("ST", 128)
        } else if *oid == OID_X509_COUNTRY_NAME {
            ("C", 2)
        } else if *oid == OID_X509_SERIALNUMBER {
            ("serialNumber", 64)
        } else {
            return Err(Violation::Attribute(oid.to_id_string()));
        };
        let value = attr.as_str().map_err(|_| {
            Violation::Attribute(format!("{name} (not a UTF-8 or printable string)"))
        })?;
        if has_control_character(value) {
            return Err(Violation::ControlCharacter(name));
        }
        let length = value.chars().count();
        if length == 0 || length > limit || (name == "C" && length != 2) {
            return Err(Violation::AttributeTooLong {
                attribute: name,
                length,
                limit,
            });
        }
        if name == "CN" {
            if common_name.is_some() {
                return Err(Violation::Attribute("CN (more than one)".into()));
            }
            common_name = Some(value.to_owned());
        }
    }
    Ok(common_name)
}

/// The extensions of a TBSCertificate, each at most once.
struct Extensions<'a, 'b> {
    all: Vec<&'b x509_parser::extensions::X509Extension<'a>>,
}

impl<'a, 'b> Extensions<'a, 'b> {
    fn read(tbs: &'b TbsCertificate<'a>) -> Result<Self, Violation> {
        let all: Vec<_> = tbs.extensions().iter().collect();
        for (i, ext) in all.iter().enumerate() {
            if all[..i].iter().any(|e| e.oid == ext.oid) {
                return Err(Violation::Extension(format!(
                    "extension {} appears twice",
                    ext.oid.to_id_string()
                )));
            }
            if let ParsedExtension::ParseError { error } = ext.parsed_extension() {
                return Err(Violation::Extension(format!(
                    "extension {} does not parse: {error}",
                    ext.oid.to_id_string()
                )));
            }
        }
        Ok(Self { all })
    }

    fn get(&self, oid: &Oid<'_>) -> Option<&'b x509_parser::extensions::X509Extension<'a>> {
        self.all.iter().copied().find(|e| e.oid == *oid)
    }
}

/// The SAN values by kind, checked for syntax and size.
#[derive(Default)]
struct Names {
    dns: Vec<String>,
    emails: Vec<String>,
    uris: Vec<String>,
    ips: Vec<std::net::IpAddr>,
    critical: bool,
}

impl Names {
    fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.emails.is_empty() && self.uris.is_empty() && self.ips.is_empty()
    }
}

fn check_sans(extensions: &Extensions<'_, '_>, limits: Limits) -> Result<Names, Violation> {
    let mut names = Names::default();
    let Some(ext) = extensions.get(&OID_X509_EXT_SUBJECT_ALT_NAME) else {
        return Ok(names);
    };
    names.critical = ext.critical;
    let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() else {
        return Err(Violation::Extension("subjectAltName does not parse".into()));
    };
    if san.general_names.is_empty() {
        return Err(Violation::Extension("subjectAltName is empty".into()));
    }
    if san.general_names.len() > limits.max_sans {
        return Err(Violation::TooManyNames {
            count: san.general_names.len(),
            limit: limits.max_sans,
        });
    }
    let mut bytes = 0usize;
    let invalid = |kind: &'static str, value: &str| Violation::InvalidName {
        kind,
        value: shorten(value),
    };
    for name in &san.general_names {
        match name {
            GeneralName::DNSName(n) => {
                bytes += n.len();
                if has_control_character(n) || normalize_dns_name(n).as_deref() != Some(*n) {
                    return Err(invalid("DNS name", n));
                }
                // `*.com`: a wildcard needs at least two labels beneath it.
                if n.strip_prefix("*.").is_some_and(|base| !base.contains('.')) {
                    return Err(invalid("DNS name", n));
                }
                names.dns.push((*n).to_owned());
            }
            GeneralName::RFC822Name(e) => {
                bytes += e.len();
                if has_control_character(e) || normalize_email(e).is_none() {
                    return Err(invalid("e-mail address", e));
                }
                names.emails.push((*e).to_owned());
            }
            GeneralName::URI(u) => {
                bytes += u.len();
                if !is_valid_uri(u) {
                    return Err(invalid("URI", u));
                }
                names.uris.push((*u).to_owned());
            }
            GeneralName::IPAddress(raw) => {
                bytes += raw.len();
                let ip = match raw.len() {
                    4 => <[u8; 4]>::try_from(*raw).map(std::net::IpAddr::from).ok(),
                    16 => <[u8; 16]>::try_from(*raw).map(std::net::IpAddr::from).ok(),
                    _ => None,
                };
                names
                    .ips
                    .push(ip.ok_or_else(|| invalid("IP address", "(wrong length)"))?);
            }
            other => {
                return Err(Violation::Names(format!(
                    "subject alternative names of this type are not issued: {other:?}"
                )));
            }
        }
    }
    if bytes > limits.max_san_bytes {
        return Err(Violation::NamesTooLarge {
            bytes,
            limit: limits.max_san_bytes,
        });
    }
    Ok(names)
}

/// The profile's extensions, exactly, and its name rules.
fn check_profile(
    expect: &Expectations<'_>,
    tbs: &TbsCertificate<'_>,
    extensions: &Extensions<'_, '_>,
    names: &Names,
    common_name: Option<&str>,
) -> Result<(), Violation> {
    let ext_err = |m: String| Err(Violation::Extension(m));
    let is_ca = expect.profile == Profile::Ca;
    let allowed: [Oid<'static>; 8] = [
        OID_X509_EXT_BASIC_CONSTRAINTS,
        OID_X509_EXT_KEY_USAGE,
        OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
        OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
        OID_X509_EXT_SUBJECT_ALT_NAME,
        OID_X509_EXT_CRL_DISTRIBUTION_POINTS,
        OID_PKIX_AUTHORITY_INFO_ACCESS,
        if is_ca {
            OID_X509_EXT_NAME_CONSTRAINTS
        } else {
            OID_X509_EXT_EXTENDED_KEY_USAGE
        },
    ];
    if let Some(ext) = extensions.all.iter().find(|e| !allowed.contains(&e.oid)) {
        return ext_err(format!(
            "extension {} is not part of the {} profile",
            ext.oid.to_id_string(),
            expect.profile
        ));
    }

    match extensions
        .get(&OID_X509_EXT_BASIC_CONSTRAINTS)
        .map(|e| (e.critical, e.parsed_extension()))
    {
        Some((critical, ParsedExtension::BasicConstraints(bc))) => {
            if bc.ca != is_ca {
                return ext_err(format!(
                    "basicConstraints cA must be {is_ca} for the {} profile",
                    expect.profile
                ));
            }
            if is_ca && (!critical || bc.path_len_constraint != Some(0)) {
                return ext_err(
                    "a subordinate CA needs critical basicConstraints with pathLen 0".into(),
                );
            }
            if !is_ca && bc.path_len_constraint.is_some() {
                return ext_err("a leaf certificate has no pathLen".into());
            }
        }
        _ => return ext_err("basicConstraints is missing".into()),
    }

    match extensions
        .get(&OID_X509_EXT_KEY_USAGE)
        .map(|e| (e.critical, e.parsed_extension()))
    {
        Some((true, ParsedExtension::KeyUsage(ku))) => {
            let signs_certificates = ku.key_cert_sign() || ku.crl_sign();
            if is_ca != signs_certificates || (is_ca && !(ku.key_cert_sign() && ku.crl_sign())) {
                return ext_err(format!(
                    "keyUsage certificate signing does not match the {} profile",
                    expect.profile
                ));
            }
            if !is_ca && !ku.digital_signature() {
                return ext_err("a leaf certificate needs keyUsage digitalSignature".into());
            }
        }
        _ => return ext_err("keyUsage is missing or not critical".into()),
    }

    if !is_ca {
        match extensions
            .get(&OID_X509_EXT_EXTENDED_KEY_USAGE)
            .map(|e| e.parsed_extension())
        {
            Some(ParsedExtension::ExtendedKeyUsage(eku)) => {
                let extra = eku.any
                    || eku.code_signing
                    || eku.email_protection
                    || eku.time_stamping
                    || eku.ocsp_signing
                    || !eku.other.is_empty();
                if extra
                    || eku.server_auth != expect.profile.server_auth()
                    || eku.client_auth != expect.profile.client_auth()
                {
                    return ext_err(format!(
                        "extendedKeyUsage does not match the {} profile",
                        expect.profile
                    ));
                }
            }
            _ => return ext_err("extendedKeyUsage is missing".into()),
        }
    }

    if extensions
        .get(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
        .is_none()
    {
        return ext_err("subjectKeyIdentifier is missing".into());
    }
    match extensions
        .get(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
        .map(|e| e.parsed_extension())
    {
        Some(ParsedExtension::AuthorityKeyIdentifier(aki))
            if aki.key_identifier.as_ref().map(|k| k.0) == Some(expect.issuer_key_id) => {}
        _ => return ext_err("authorityKeyIdentifier does not name the issuing CA's key".into()),
    }

    // Names.
    let subject_empty = tbs.subject.iter_attributes().next().is_none();
    if subject_empty && names.is_empty() {
        return Err(Violation::Names(
            "the certificate would name nobody (empty subject and no SAN)".into(),
        ));
    }
    if subject_empty && !names.critical {
        return ext_err("subjectAltName must be critical when the subject is empty".into());
    }
    match expect.profile {
        Profile::TlsServer | Profile::TlsServerClient
            if names.dns.is_empty() && names.ips.is_empty() =>
        {
            return Err(Violation::Names(format!(
                "the {} profile needs at least one DNS name or IP address",
                expect.profile
            )));
        }
        Profile::Spiffe => {
            let spiffe: Vec<&String> = names.uris.iter().collect();
            let valid =
                spiffe.len() == 1 && SpiffeId::parse(spiffe[0]).is_ok_and(|id| !id.is_root());
            if !valid {
                return Err(Violation::Names(
                    "an X509-SVID carries exactly one URI SAN, a SPIFFE ID with a path".into(),
                ));
            }
        }
        Profile::Ca
            if names
                .uris
                .iter()
                .any(|u| SpiffeId::parse(u).map_or(true, |id| !id.is_root())) =>
        {
            return Err(Violation::Names(
                "a signing certificate's only URI is the bare trust domain (spiffe://<td>)".into(),
            ));
        }
        _ => {}
    }
    // A client may read the CN of a server certificate as a host name: one that reads as a host
    // name (a dotted DNS name, an IP address) or an e-mail address must be a SAN too. Labels such
    // as kubeadm's `kube-apiserver` or the kubelet's `system:node:<name>` name a component, not
    // a host, and stay as they are.
    if let Some(cn) = common_name
        && expect.profile.server_auth()
        && reads_as_a_host(cn)
    {
        let in_sans = names.dns.iter().any(|d| d.eq_ignore_ascii_case(cn))
            || names
                .ips
                .iter()
                .any(|ip| cn.parse::<std::net::IpAddr>().ok() == Some(*ip))
            || names.emails.iter().any(|e| e.eq_ignore_ascii_case(cn));
        if !in_sans {
            return Err(Violation::CommonNameNotInSans(shorten(cn)));
        }
    }
    Ok(())
}

fn reads_as_a_host(cn: &str) -> bool {
    cn.contains('@')
        || cn.parse::<std::net::IpAddr>().is_ok()
        || (cn.contains('.') && normalize_dns_name(cn).is_some())
}

/// The issuing key behind the gate: rcgen passes `sign` the TBSCertificate; the key signs only
/// once [`check`] accepts it. A refusal is kept in the gate for the caller to report (rcgen's own
/// error type cannot carry it).
pub struct GatedKey<'a> {
    key: &'a rcgen::KeyPair,
    expect: Expectations<'a>,
    refusal: RefCell<Option<Violation>>,
}

impl<'a> GatedKey<'a> {
    /// Puts `key` behind the check for one certificate.
    pub fn new(key: &'a rcgen::KeyPair, expect: Expectations<'a>) -> Self {
        Self {
            key,
            expect,
            refusal: RefCell::new(None),
        }
    }

    /// Why the check refused the certificate, if it did.
    pub fn refusal(&self) -> Option<Violation> {
        self.refusal.borrow_mut().take()
    }
}

impl fmt::Debug for GatedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatedKey")
    }
}

impl rcgen::PublicKeyData for GatedKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.key.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        rcgen::PublicKeyData::algorithm(self.key)
    }
}

impl rcgen::SigningKey for GatedKey<'_> {
    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        if let Err(violation) = check(tbs, &self.expect) {
            *self.refusal.borrow_mut() = Some(violation);
            return Err(rcgen::Error::RemoteKeyError);
        }
        rcgen::SigningKey::sign(self.key, tbs)
    }
}
