//! The CA material in the data directory: creating a root and an issuing intermediate, adopting
//! an existing CA (kubeadm's `ca.crt`/`ca.key`, or an intermediate signed by an offline root), and
//! loading it at start-up.
//!
//! Layout under `<data-dir>/ca/`:
//! - `issuing.crt`: the certificate that signs everything we issue;
//! - `issuing.key`: its private key, PKCS#8 PEM, mode 0600;
//! - `chain.pem`: the issuing certificate's parents, nearest first, up to the root when known
//!   (absent when the issuing certificate is itself a root);
//! - `root.key`: the root's key, only when `init` generated the root (mode 0600). The server never
//!   reads it; operators may move it offline.
//! - `alternate-chain*.pem` (optional, taken in name order): other chains for the same issuing
//!   key, e.g. the issuing CA cross-signed by a second root during a root rotation. Each starts
//!   with a certificate of the issuing CA's subject and key, followed by its parents up to the
//!   trust anchor; ACME offers them as alternate chains (`Link: rel="alternate"`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

use super::keys;
use super::serial;

/// File names inside `<data-dir>/ca/`.
pub struct CaFiles {
    dir: PathBuf,
}

impl CaFiles {
    /// The CA directory under a data directory.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("ca"),
        }
    }

    /// `issuing.crt`
    pub fn issuing_cert(&self) -> PathBuf {
        self.dir.join("issuing.crt")
    }
    /// `issuing.key`
    pub fn issuing_key(&self) -> PathBuf {
        self.dir.join("issuing.key")
    }
    /// `chain.pem`
    pub fn chain(&self) -> PathBuf {
        self.dir.join("chain.pem")
    }
    /// `root.key`
    pub fn root_key(&self) -> PathBuf {
        self.dir.join("root.key")
    }
    /// `alternate-chain*.pem`, in name order.
    pub fn alternate_chains(&self) -> Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for entry in
            fs::read_dir(&self.dir).with_context(|| format!("reading {}", self.dir.display()))?
        {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with("alternate-chain") && name.ends_with(".pem") {
                paths.push(path);
            }
        }
        paths.sort();
        Ok(paths)
    }

    /// True when an issuing CA has been set up.
    pub fn exists(&self) -> bool {
        self.issuing_cert().exists() && self.issuing_key().exists()
    }

    /// What the CA directory holds: nothing (a new deployment), a complete issuing CA, or part
    /// of one (a Secret mounted without an item, a key moved away) — never to be "completed" by
    /// making a new CA.
    pub fn state(&self) -> CaState {
        let required = [self.issuing_cert(), self.issuing_key()];
        let present: Vec<bool> = required.iter().map(|p| p.exists()).collect();
        let anything = present.iter().any(|p| *p)
            || self.chain().exists()
            || self.root_key().exists()
            || crate::seal::key_path(self.dir.parent().unwrap_or(&self.dir)).exists();
        match (present.iter().all(|p| *p), anything) {
            (true, _) => CaState::Complete,
            (false, false) => CaState::Empty,
            (false, true) => CaState::Partial(
                required
                    .into_iter()
                    .zip(present)
                    .filter(|(_, p)| !p)
                    .map(|(path, _)| path)
                    .collect(),
            ),
        }
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn prepare(&self) -> Result<()> {
        ensure!(
            !self.exists(),
            "a CA already exists in {}; refusing to replace it",
            self.dir.display()
        );
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        // Only the server's user may list or enter the directory holding keys.
        fs::set_permissions(
            &self.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        Ok(())
    }
}

/// See [`CaFiles::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaState {
    /// No CA material at all.
    Empty,
    /// An issuing certificate and its key.
    Complete,
    /// Some material, without these files.
    Partial(Vec<PathBuf>),
}

/// Names for a generated hierarchy.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Organisation in both subjects.
    pub organization: String,
    /// Root common name.
    pub root_common_name: String,
    /// Issuing CA common name.
    pub issuing_common_name: String,
    /// Root lifetime.
    pub root_lifetime: Duration,
    /// Issuing CA lifetime (clamped to the root's).
    pub issuing_lifetime: Duration,
    /// Write the root's key here instead of `ca/root.key` (an offline root: the directory is
    /// carried away, and the server never holds the key).
    pub offline_root: Option<PathBuf>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            organization: "ca-server".into(),
            root_common_name: "ca-server Root CA".into(),
            issuing_common_name: "ca-server Issuing CA".into(),
            root_lifetime: Duration::days(3652),
            issuing_lifetime: Duration::days(1826),
            offline_root: None,
        }
    }
}

fn ca_params(cn: &str, org: &str, path_len: Option<u8>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(serial::random());
    params
}

/// How far an issuing CA's notBefore is set in the past to absorb clock skew: an hour, or a tenth
/// of a short lifetime (so a short-lived CA's rotation schedule, which runs from its notBefore,
/// is not spent before it starts).
pub fn ca_backdate(lifetime: Duration) -> Duration {
    let tenth: Duration = lifetime / 10;
    tenth.min(Duration::hours(1))
}

/// Creates a root CA (ECDSA P-256) and an issuing intermediate (ECDSA P-256) in `data_dir`.
pub fn generate(data_dir: &Path, opts: &GenerateOptions) -> Result<()> {
    let files = CaFiles::new(data_dir);
    files.prepare()?;
    let now = OffsetDateTime::now_utc();

    let root_key = keys::generate_p256()?;
    let mut root_params = ca_params(&opts.root_common_name, &opts.organization, None);
    root_params.not_before = now - Duration::hours(1);
    root_params.not_after = now + opts.root_lifetime;
    let root = root_params.self_signed(&root_key)?;

    let issuing_key = keys::generate_p256()?;
    // pathLen 1: the issuing CA may sign the `ca` profile's subordinates (pathLen 0).
    let mut params = ca_params(&opts.issuing_common_name, &opts.organization, Some(1));
    params.not_before = now - ca_backdate(opts.issuing_lifetime);
    params.not_after = (now + opts.issuing_lifetime).min(root_params.not_after);
    params.use_authority_key_identifier_extension = true;
    let root_issuer = rcgen::Issuer::from_params(&root_params, &root_key);
    let issuing = params.signed_by(&issuing_key, &root_issuer)?;

    match &opts.offline_root {
        Some(dir) => {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            for name in ["root.key", "root.crt"] {
                ensure!(
                    !dir.join(name).exists(),
                    "{} exists: the offline root goes into a directory of its own",
                    dir.join(name).display()
                );
            }
            keys::write_secret(&dir.join("root.key"), keys::pkcs8_pem(&root_key).as_bytes())?;
            fs::write(dir.join("root.crt"), root.pem())
                .with_context(|| format!("writing {}", dir.join("root.crt").display()))?;
        }
        None => keys::write_secret(&files.root_key(), keys::pkcs8_pem(&root_key).as_bytes())?,
    }
    keys::write_secret(
        &files.issuing_key(),
        keys::pkcs8_pem(&issuing_key).as_bytes(),
    )?;
    fs::write(files.chain(), root.pem())?;
    // Written last: its presence marks the CA as complete.
    fs::write(files.issuing_cert(), issuing.pem())?;
    Ok(())
}

/// Adopts an existing CA: `cert_pem` holds the issuing certificate, optionally followed by its
/// parents; `chain_pem` may hold (more) parents; `key_pem` is its private key.
pub fn import(
    data_dir: &Path,
    cert_pem: &str,
    key_pem: &str,
    chain_pem: Option<&str>,
) -> Result<()> {
    let files = CaFiles::new(data_dir);
    let mut certs = parse_certs(cert_pem).context("reading the CA certificate")?;
    ensure!(
        !certs.is_empty(),
        "no CERTIFICATE block in the CA certificate file"
    );
    if let Some(chain) = chain_pem {
        certs.extend(parse_certs(chain).context("reading the CA chain")?);
    }
    let (key, pkcs8) = keys::load_pem(key_pem).context("reading the CA key")?;
    LoadedCa::check(certs.clone(), &key)?;
    files.prepare()?;
    keys::write_secret(
        &files.issuing_key(),
        pem_block("PRIVATE KEY", &pkcs8).as_bytes(),
    )?;
    if certs.len() > 1 {
        fs::write(files.chain(), to_pem(&certs[1..]))?;
    }
    fs::write(files.issuing_cert(), to_pem(&certs[..1]))?;
    Ok(())
}

/// PEM text for DER bytes under `label`.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Concatenated `CERTIFICATE` PEM blocks.
pub fn to_pem(certs: &[CertificateDer<'static>]) -> String {
    certs.iter().map(|c| pem_block("CERTIFICATE", c)).collect()
}

/// Every `CERTIFICATE` block in `pem`.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("bad certificate PEM: {e}"))
}

/// The CA as loaded and checked: issuing certificate, its key, parents and trust anchors.
#[derive(Clone)]
pub struct LoadedCa {
    /// Issuing certificate first, then parents.
    pub chain: Vec<CertificateDer<'static>>,
    /// Trust anchors: the self-signed root, or the top-most certificate we know.
    pub roots: Vec<CertificateDer<'static>>,
    /// Issuing certificate's notBefore.
    pub not_before: OffsetDateTime,
    /// Issuing certificate's notAfter.
    pub not_after: OffsetDateTime,
    /// Stable identifier: hex of [`LoadedCa::key_id`].
    pub issuer_id: String,
    /// The issuing CA's key identifier: its subject key identifier, or (without one) the first
    /// 20 bytes of the SHA-256 of its key. Issued certificates name it as authority key id.
    pub key_id: Vec<u8>,
    /// Issuing certificate's subject (RFC 4514).
    pub subject: String,
    /// Issuing certificate's subject, DER, exactly as in the certificate.
    pub subject_der: Vec<u8>,
    /// Other chains for the issuing key (`alternate-chain*.pem`): each a certificate with the
    /// issuing CA's subject and key, then its parents, the trust anchor last.
    pub alternates: Vec<Vec<CertificateDer<'static>>>,
}

impl LoadedCa {
    /// Loads the CA from the data directory.
    pub fn load(data_dir: &Path) -> Result<(Self, KeyPair)> {
        let files = CaFiles::new(data_dir);
        let cert_pem = fs::read_to_string(files.issuing_cert())
            .with_context(|| format!("reading {}", files.issuing_cert().display()))?;
        let key_pem = fs::read_to_string(files.issuing_key())
            .with_context(|| format!("reading {}", files.issuing_key().display()))?;
        let mut certs = parse_certs(&cert_pem)?;
        ensure!(
            certs.len() == 1,
            "issuing.crt must hold exactly one certificate"
        );
        if files.chain().exists() {
            certs.extend(parse_certs(&fs::read_to_string(files.chain())?)?);
        }
        let (key, _) = keys::load_pem(&key_pem)?;
        let mut loaded = Self::check(certs, &key).with_context(|| {
            format!(
                "{} and {}",
                files.issuing_cert().display(),
                files.chain().display()
            )
        })?;
        for path in files.alternate_chains()? {
            let chain = parse_certs(&fs::read_to_string(&path)?)
                .and_then(|certs| loaded.check_alternate(certs))
                .with_context(|| format!("alternate chain {}", path.display()))?;
            loaded.alternates.push(chain);
        }
        Ok((loaded, key))
    }

    /// Checks an issuing CA held elsewhere than the data directory (the database): `chain` is the
    /// issuing certificate then its parents up to a root, `alternates` other chains for the same
    /// key, each checked as `alternate-chain*.pem` files are.
    pub fn from_chain(
        chain: Vec<CertificateDer<'static>>,
        key: &KeyPair,
        alternates: Vec<Vec<CertificateDer<'static>>>,
    ) -> Result<Self> {
        let mut loaded = Self::check(chain, key)?;
        for (i, alternate) in alternates.into_iter().enumerate() {
            let checked = loaded
                .check_alternate(alternate)
                .with_context(|| format!("alternate chain {}", i + 1))?;
            loaded.alternates.push(checked);
        }
        Ok(loaded)
    }

    /// An alternate chain must start with a certificate for the issuing CA (same subject and
    /// key), chain by signature to its last certificate, and end above the issuing CA.
    fn check_alternate(
        &self,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<Vec<CertificateDer<'static>>> {
        use x509_parser::prelude::*;
        ensure!(
            chain.len() >= 2,
            "needs the issuing CA's certificate and at least its issuer"
        );
        let parsed = parse_all(&chain)?;
        let (_, issuing) = X509Certificate::from_der(&self.chain[0])
            .map_err(|e| anyhow!("parsing the issuing certificate: {e}"))?;
        ensure!(
            parsed[0].subject() == issuing.subject()
                && parsed[0].public_key().raw == issuing.public_key().raw,
            "the first certificate ({}) is not the issuing CA's subject and key",
            parsed[0].subject()
        );
        ensure!(
            subject_key_id(&parsed[0]) == subject_key_id(&issuing),
            "the first certificate's subject key identifier differs from the issuing CA's: \
             clients could not match it to the certificates we issue"
        );
        verify_links(&parsed)?;
        let top = &parsed[parsed.len() - 1];
        ensure!(
            top.subject() == top.issuer(),
            "the chain ends at {}, which is not a root: its top would be published as a trust \
             anchor",
            top.subject()
        );
        Ok(chain)
    }

    /// What an issuing CA installed at run time must be, beyond a CA for its key: able to sign
    /// certificates and CRLs (keyUsage keyCertSign and cRLSign when present), able to sign the
    /// `ca` profile's subordinates (no path length 0), and not expired.
    pub fn check_installable(&self, now: OffsetDateTime) -> Result<()> {
        use x509_parser::prelude::*;
        let (_, issuing) = X509Certificate::from_der(&self.chain[0])
            .map_err(|e| anyhow!("parsing the issuing certificate: {e}"))?;
        if let Ok(Some(ku)) = issuing.key_usage() {
            ensure!(
                ku.value.key_cert_sign() && ku.value.crl_sign(),
                "the certificate's keyUsage lacks keyCertSign or cRLSign: it could not sign \
                 certificates and CRLs"
            );
        }
        if let Ok(Some(bc)) = issuing.basic_constraints() {
            ensure!(
                bc.value.path_len_constraint != Some(0),
                "the certificate has path length 0: it could not sign the ca profile's \
                 subordinates; ask for path length 1 or more"
            );
        }
        ensure!(
            self.not_after > now,
            "the certificate expired at {}",
            self.not_after
        );
        Ok(())
    }

    /// Checks that `chain[0]` is a CA certificate for `key`, that each certificate is signed by
    /// the next, and works out the trust anchors.
    fn check(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> Result<Self> {
        let parsed = parse_all(&chain)?;
        let issuing = &parsed[0];
        ensure!(
            issuing.public_key().subject_public_key.data.as_ref() == key.public_key_raw(),
            "the CA key does not belong to the CA certificate"
        );
        match issuing.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            _ => bail!("the CA certificate is not a CA (basicConstraints cA is not true)"),
        }
        verify_links(&parsed)?;
        let top = parsed.len() - 1;
        // The trust bundle is the top of the chain: it must be a root, or a lost chain.pem would
        // silently make the issuing CA everyone's trust anchor.
        ensure!(
            parsed[top].subject() == parsed[top].issuer(),
            "the chain ends at {}, which is not a root (issued by {}): the issuing CA's parents up \
             to the root are missing (chain.pem, or --import-chain)",
            parsed[top].subject(),
            parsed[top].issuer()
        );
        let roots = vec![chain[top].clone()];
        // Without an SKI, identify the issuer by a digest of its key.
        let key_id = subject_key_id(issuing)
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| {
                ring::digest::digest(&ring::digest::SHA256, key.public_key_raw()).as_ref()[..20]
                    .to_vec()
            });
        let not_before = issuing.validity().not_before.to_datetime();
        let not_after = issuing.validity().not_after.to_datetime();
        let subject = issuing.subject().to_string();
        let subject_der = issuing.subject().as_raw().to_vec();
        Ok(Self {
            issuer_id: hex(&key_id),
            key_id,
            chain,
            roots,
            not_before,
            not_after,
            subject,
            subject_der,
            alternates: Vec::new(),
        })
    }
}

impl LoadedCa {
    /// What rcgen needs to sign as this CA: its subject exactly as encoded in its certificate
    /// (same attribute and string types, so chains match byte for byte), its key identifier and
    /// its key usages.
    pub fn issuer_params(&self) -> Result<CertificateParams> {
        use rcgen::{DnValue, string::*};
        use x509_parser::der_parser::asn1_rs::Tag;
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(&self.chain[0])
            .map_err(|e| anyhow!("parsing the issuing certificate: {e}"))?;
        let mut dn = DistinguishedName::new();
        for rdn in cert.subject().iter() {
            let mut attrs = rdn.iter();
            let (Some(attr), None) = (attrs.next(), attrs.next()) else {
                bail!("the issuing CA's subject has a multi-valued RDN, which is not supported");
            };
            let oid: Vec<u64> = attr
                .attr_type()
                .iter()
                .ok_or_else(|| anyhow!("subject attribute OID too large"))?
                .collect();
            let data = attr.attr_value().data;
            let text = || std::str::from_utf8(data).map_err(|_| anyhow!("subject is not UTF-8"));
            let value = match attr.attr_value().header.tag() {
                Tag::PrintableString => {
                    DnValue::PrintableString(PrintableString::try_from(text()?)?)
                }
                Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
                Tag::Ia5String => DnValue::Ia5String(Ia5String::try_from(text()?)?),
                Tag::T61String => DnValue::TeletexString(TeletexString::try_from(text()?)?),
                Tag::BmpString => DnValue::BmpString(BmpString::from_utf16be(data.to_vec())?),
                Tag::UniversalString => {
                    DnValue::UniversalString(UniversalString::from_utf32be(data.to_vec())?)
                }
                other => bail!("unsupported string type {other:?} in the issuing CA's subject"),
            };
            dn.push(DnType::from_oid(&oid), value);
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(self.key_id.clone());
        if let Ok(Some(ku)) = cert.key_usage() {
            let ku = &ku.value;
            for (set, purpose) in [
                (ku.digital_signature(), KeyUsagePurpose::DigitalSignature),
                (ku.key_cert_sign(), KeyUsagePurpose::KeyCertSign),
                (ku.crl_sign(), KeyUsagePurpose::CrlSign),
            ] {
                if set {
                    params.key_usages.push(purpose);
                }
            }
        }
        Ok(params)
    }
}

fn parse_all<'a>(
    chain: &'a [CertificateDer<'static>],
) -> Result<Vec<x509_parser::certificate::X509Certificate<'a>>> {
    use x509_parser::prelude::*;
    ensure!(!chain.is_empty(), "no certificate");
    chain
        .iter()
        .map(|der| {
            X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|e| anyhow!("parsing CA certificate: {e}"))
        })
        .collect()
}

/// The subject key identifier extension's value, if the certificate has one.
fn subject_key_id<'a>(cert: &x509_parser::certificate::X509Certificate<'a>) -> Option<&'a [u8]> {
    use x509_parser::extensions::ParsedExtension;
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0),
            _ => None,
        })
}

/// Each certificate must be issued and signed by the next.
fn verify_links(parsed: &[x509_parser::certificate::X509Certificate<'_>]) -> Result<()> {
    for pair in parsed.windows(2) {
        let (child, parent) = (&pair[0], &pair[1]);
        ensure!(
            child.issuer() == parent.subject(),
            "chain is out of order: {} is not issued by {}",
            child.subject(),
            parent.subject()
        );
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|e| {
                anyhow!(
                    "{} is not signed by {}: {e}",
                    child.subject(),
                    parent.subject()
                )
            })?;
    }
    Ok(())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
