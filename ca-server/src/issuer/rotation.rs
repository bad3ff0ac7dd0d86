//! New issuing CAs: rotation signed by the root this deployment holds, keys whose CSR an outside
//! root signs (`ca csr` / Vault's `intermediate/generate`), and installing what comes back
//! (`ca install-intermediate` / `intermediate/set-signed`).
//!
//! The schedule follows SPIRE's: the successor of the default issuer is prepared when half of the
//! issuer's lifetime has passed, so its chain is in the published bundle long before it signs, and
//! becomes the default at five sixths. Preparing needs the root key (`ca/root.key`, or the path
//! `--root-key` names); without it the server makes nothing and warns, and an operator runs
//! `ca-server ca rotate`, which then produces a CSR for the offline root to sign.
//!
//! Many replicas may prepare at the same moment: the database accepts one successor per issuer
//! (a unique index), and the others' candidates are dropped unused.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail, ensure};
use ca_store::issuers::KeyRow;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::hierarchy::{self, CaFiles, LoadedCa, parse_certs};
use super::set::{self, IssuerSet, Issuers};
use super::{CertificateAuthority, keys, serial};

/// When the default issuer's successor is prepared and activated, as fractions of its lifetime.
pub const PREPARE_AT: f64 = 0.5;
/// See [`PREPARE_AT`].
pub const ACTIVATE_AT: f64 = 5.0 / 6.0;

/// A root this deployment holds the key of, able to sign new issuing CAs.
pub struct RootSigner {
    cert: CertificateDer<'static>,
    params: CertificateParams,
    key: KeyPair,
}

impl std::fmt::Debug for RootSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootSigner")
    }
}

impl RootSigner {
    /// The root key at `key_path` (default `<data-dir>/ca/root.key`), with the root certificate
    /// it belongs to among the issuers' chains. None when there is no key file, or when it is no
    /// root of these issuers (warned: rotation then needs `ca rotate` and an outside signature).
    pub fn load(set: &IssuerSet, key_path: &Path) -> Result<Option<Self>> {
        if !key_path.exists() {
            return Ok(None);
        }
        let pem = std::fs::read_to_string(key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let (key, _) = keys::load_pem(&pem).with_context(|| key_path.display().to_string())?;
        let root = set
            .members()
            .iter()
            .flat_map(|m| {
                m.ca.chains()
                    .filter_map(|c| c.last().cloned())
                    .collect::<Vec<_>>()
            })
            .find(|der| {
                x509_parser::parse_x509_certificate(der).is_ok_and(|(_, c)| {
                    c.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
                })
            });
        let Some(root) = root else {
            tracing::warn!(path = %key_path.display(), "this root key belongs to none of the issuers' roots: automatic rotation is off");
            return Ok(None);
        };
        // Sign as the root: its exact subject and key identifier, as the issuing CA does.
        let loaded = LoadedCa::from_chain(vec![root.clone()], &key, Vec::new())?;
        let params = loaded.issuer_params()?;
        Ok(Some(Self {
            cert: root,
            params,
            key,
        }))
    }

    /// The root certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }
}

/// Issuers rotate only when each one's certificates name its own CRL: with `crl_urls` that are
/// set but carry no `{{issuer_id}}`, the former issuer's certificates would point at the new
/// issuer's CRL, and revocation checks against them would fail open.
pub async fn check_crl_urls(issuers: &Issuers) -> Result<()> {
    let stored: Option<set::Urls> = issuers
        .store()
        .setting(set::URLS_SETTING)
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok());
    let urls = match stored {
        Some(u) if !u.crl_distribution_points.is_empty() || !u.issuing_certificates.is_empty() => {
            u.crl_distribution_points
        }
        _ => issuers.settings().crl_urls.clone(),
    };
    if urls.is_empty() || urls.iter().all(|u| u.contains("{{issuer_id}}")) {
        return Ok(());
    }
    bail!(
        "the CRL URLs {urls:?} carry no {{{{issuer_id}}}}: after a change of issuer the former \
         issuer's certificates would name the new issuer's CRL. Set [ca] crl_urls (or Vault's \
         config/urls) to e.g. http://<service>/crl/issuer/{{{{issuer_id}}}} first"
    )
}

/// `CN` of a successor: the current one with its generation suffix ` G<n>` bumped.
pub fn successor_common_name(current: &str, generation: usize) -> String {
    let base = match current.rsplit_once(" G") {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => current,
    };
    format!("{base} G{generation}")
}

/// A subject like `ca`'s issuing certificate's, with common name `cn`.
fn subject_like(ca: &CertificateAuthority, cn: &str) -> Result<DistinguishedName> {
    let (_, cert) = x509_parser::parse_x509_certificate(&ca.chain()[0])
        .map_err(|e| anyhow!("parsing the issuing certificate: {e}"))?;
    let mut dn = DistinguishedName::new();
    for attr in cert.subject().iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .map(Iterator::collect)
            .ok_or_else(|| anyhow!("subject OID too large"))?;
        if oid == [2, 5, 4, 3] {
            continue;
        }
        if let Ok(text) = attr.as_str() {
            dn.push(DnType::from_oid(&oid), DnValue::Utf8String(text.to_owned()));
        }
    }
    dn.push(DnType::CommonName, cn);
    Ok(dn)
}

/// Certificate parameters for an issuing CA under a root: path length 1 (it may sign the `ca`
/// profile's subordinates), certificate and CRL signing.
fn issuing_params(
    dn: DistinguishedName,
    not_after: OffsetDateTime,
    lifetime: Duration,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(serial::random());
    params.not_before = OffsetDateTime::now_utc() - hierarchy::ca_backdate(lifetime);
    params.not_after = not_after;
    params.use_authority_key_identifier_extension = true;
    params
}

/// A new issuing CA signed by `root`, named after `current`, as long-lived as `current` (never
/// beyond the root).
pub fn sign_successor(
    current: &CertificateAuthority,
    root: &RootSigner,
    generation: usize,
) -> Result<(LoadedCa, KeyPair)> {
    let common = current_common_name(current);
    let dn = subject_like(current, &successor_common_name(&common, generation))?;
    let lifetime = current.not_after() - current.not_before();
    let (_, root_cert) = x509_parser::parse_x509_certificate(&root.cert)
        .map_err(|e| anyhow!("parsing the root: {e}"))?;
    let root_not_after = root_cert.validity().not_after.to_datetime();
    let not_after = (OffsetDateTime::now_utc() + lifetime).min(root_not_after);
    ensure!(
        not_after - OffsetDateTime::now_utc() > lifetime / 10,
        "the root {} expires too soon to sign a new issuing CA: rotate the root",
        root_cert.subject()
    );
    let key = keys::generate_p256()?;
    let params = issuing_params(dn, not_after, lifetime);
    let issuer = rcgen::Issuer::from_params(&root.params, &root.key);
    let cert = params.signed_by(&key, &issuer)?;
    let loaded = LoadedCa::from_chain(
        vec![cert.der().clone(), root.cert.clone()],
        &key,
        Vec::new(),
    )?;
    Ok((loaded, key))
}

fn current_common_name(ca: &CertificateAuthority) -> String {
    x509_parser::parse_x509_certificate(&ca.chain()[0])
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "ca-server Issuing CA".to_owned())
}

/// When `ca`'s successor should be prepared and activated.
pub fn schedule(ca: &CertificateAuthority) -> (OffsetDateTime, OffsetDateTime) {
    let (from, to) = (ca.not_before(), ca.not_after());
    let life = to - from;
    (from + life * PREPARE_AT, from + life * ACTIVATE_AT)
}

/// What [`prepare_successor`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// This call made it.
    Made(String),
    /// Another replica (or an earlier run) had made it.
    Exists(String),
}

/// Makes the default issuer's successor with `root`, to become the default at `activate_at`,
/// unless it has one already.
pub async fn prepare_successor(
    issuers: &Issuers,
    root: &RootSigner,
    activate_at: OffsetDateTime,
) -> Result<Prepared> {
    let set = issuers.current();
    let current = set.default_member();
    if let Some(existing) = set
        .members()
        .iter()
        .find(|m| m.successor_of.as_deref() == Some(current.ca.issuer_id()))
    {
        return Ok(Prepared::Exists(existing.ca.issuer_id().to_owned()));
    }
    check_crl_urls(issuers).await?;
    let seal = issuers
        .seal()
        .ok_or_else(|| anyhow!("the seal key is needed to store a new issuer's key"))?;
    let (loaded, key) = sign_successor(&current.ca, root, set.members().len() + 1)?;
    let row = set::new_row(
        &loaded,
        &key,
        seal,
        None,
        Some(activate_at.unix_timestamp()),
        Some(current.ca.issuer_id().to_owned()),
    );
    match issuers.store().insert_issuer(&row).await {
        Ok(()) => {
            issuers.refresh().await?;
            Ok(Prepared::Made(loaded.issuer_id))
        }
        Err(ca_store::Error::AlreadyExists) => {
            issuers.refresh().await?;
            let set = issuers.current();
            let winner = set
                .members()
                .iter()
                .find(|m| m.successor_of.as_deref() == Some(current.ca.issuer_id()))
                .map(|m| m.ca.issuer_id().to_owned())
                .unwrap_or_default();
            Ok(Prepared::Exists(winner))
        }
        Err(e) => Err(e.into()),
    }
}

/// One pass of the automatic schedule: prepares the default issuer's successor once half its
/// life has passed. Activation needs no action (the successor carries its activation time).
/// Returns the id of a successor made now.
pub async fn tick(issuers: &Issuers, root: Option<&RootSigner>) -> Result<Option<String>> {
    let set = issuers.current();
    let current = set.default_member();
    let (prepare_at, activate_at) = schedule(&current.ca);
    if OffsetDateTime::now_utc() < prepare_at
        || set
            .members()
            .iter()
            .any(|m| m.successor_of.as_deref() == Some(current.ca.issuer_id()))
    {
        return Ok(None);
    }
    let Some(root) = root else {
        bail!(
            "the issuing CA {} is due for rotation (half its lifetime has passed) and the root key \
             is not here: run `ca-server ca rotate`, have the offline root sign the CSR, then \
             `ca-server ca install-intermediate`",
            current.ca.subject()
        );
    };
    if current.ca.chain().last() != Some(root.certificate()) {
        bail!(
            "the issuing CA {} is due for rotation and chains to another root than the key here \
             signs for: run `ca-server ca rotate` for a CSR its own root signs",
            current.ca.subject()
        );
    }
    let (_, root_cert) = x509_parser::parse_x509_certificate(root.certificate())
        .map_err(|e| anyhow!("parsing the root: {e}"))?;
    let life = current.ca.not_after() - current.ca.not_before();
    let left = root_cert.validity().not_after.to_datetime() - OffsetDateTime::now_utc();
    if left < life / 2 {
        bail!(
            "the root {} expires in {left}, too soon for a successor as long-lived as the \
             issuing CA {}: rotate the root (docs/ca-material.md)",
            root_cert.subject(),
            current.ca.subject()
        );
    }
    check_crl_urls(issuers).await?;
    match prepare_successor(issuers, root, activate_at).await? {
        Prepared::Made(id) => Ok(Some(id)),
        Prepared::Exists(_) => Ok(None),
    }
}

/// Runs [`tick`] every `period` until dropped; a missing root key is warned about once an hour.
pub async fn schedule_forever(issuers: Arc<Issuers>, root: Option<Arc<RootSigner>>) {
    let period = set::POLL;
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        match tick(&issuers, root.as_deref()).await {
            Ok(Some(id)) => {
                tracing::info!(issuer_id = %id, "prepared the next issuing CA; it is in the trust bundle now and becomes the default on schedule")
            }
            Ok(None) => {}
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(3600)) {
                    tracing::warn!(error = %format!("{e:#}"), "issuing CA rotation");
                    last_warning = Some(std::time::Instant::now());
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// A new key and a CSR for an issuing CA named `cn` (other subject attributes copied from the
/// default issuer), kept sealed in the database until its certificate is installed.
pub async fn create_pending(issuers: &Issuers, cn: &str, name: Option<String>) -> Result<KeyRow> {
    let seal = issuers
        .seal()
        .ok_or_else(|| anyhow!("the seal key is needed to store a new key"))?;
    let set = issuers.current();
    let dn = subject_like(set.default_ca(), cn)?;
    let key = keys::generate_p256()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .context("making the CSR")?
        .pem()
        .context("encoding the CSR")?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let key_id = key_id_of(&key);
    let row = KeyRow {
        key_id: key_id.clone(),
        name,
        key_sealed: seal.seal_bytes(&set::pending_key_purpose(&key_id), &key.serialize_der()),
        public_key: spki,
        csr_pem: csr,
        created_at: OffsetDateTime::now_utc().unix_timestamp(),
    };
    issuers.store().insert_key(&row).await?;
    Ok(row)
}

/// The key id of a key: hex of the first 20 bytes of SHA-256 of its public key (the form issuing
/// CAs without a subject key identifier are named by).
pub fn key_id_of(key: &KeyPair) -> String {
    hierarchy::hex(
        &ring::digest::digest(&ring::digest::SHA256, key.public_key_raw()).as_ref()[..20],
    )
}

/// What [`install`] registered.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The new issuer's id.
    pub issuer_id: String,
    /// The pending key it used.
    pub key_id: String,
    /// Parents that came with it (issuer ids are not assigned to them: we hold no key).
    pub parents: Vec<CertificateDer<'static>>,
}

/// Installs a signed issuing certificate for a pending key: `bundle` holds it first, then its
/// parents up to a root (or `chain` does); `alternates` are other chains for the same key. The
/// new issuer becomes the default at `activate_at` (None: only when activated later).
pub async fn install(
    issuers: &Issuers,
    bundle: &str,
    chain: Option<&str>,
    alternates: &[String],
    name: Option<String>,
    activate_at: Option<i64>,
) -> Result<Installed> {
    let seal = issuers
        .seal()
        .ok_or_else(|| anyhow!("the seal key is needed to store the issuer's key"))?;
    if bundle.contains("PRIVATE KEY") {
        bail!("private keys are not accepted here: the key stays where the CSR was made");
    }
    let mut certs = parse_certs(bundle)?;
    ensure!(!certs.is_empty(), "no CERTIFICATE block");
    if let Some(chain) = chain {
        certs.extend(parse_certs(chain)?);
    }
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0])
        .map_err(|e| anyhow!("parsing the certificate: {e}"))?;
    let public = leaf.public_key().subject_public_key.data.to_vec();
    let pending = issuers.store().key_rows().await?;
    let (row, key) = pending
        .iter()
        .find_map(|row| {
            let pkcs8 = seal
                .open_sealed_bytes(&set::pending_key_purpose(&row.key_id), &row.key_sealed)
                .ok()?;
            let key = KeyPair::try_from(&rustls::pki_types::PrivatePkcs8KeyDer::from(
                pkcs8.as_slice(),
            ))
            .ok()?;
            (key.public_key_raw() == public.as_slice()).then(|| (row.clone(), key))
        })
        .ok_or_else(|| {
            anyhow!(
                "no pending key matches this certificate ({}): install the certificate signed \
                 for a CSR from `ca-server ca csr` (or intermediate/generate) on this deployment",
                leaf.subject()
            )
        })?;
    let alternates: Vec<Vec<CertificateDer<'static>>> = alternates
        .iter()
        .map(|pem| parse_certs(pem))
        .collect::<Result<_>>()?;
    let loaded = LoadedCa::from_chain(certs.clone(), &key, alternates)
        .context("checking the signed certificate")?;
    let now = OffsetDateTime::now_utc();
    loaded
        .check_installable(now)
        .context("checking the signed certificate")?;
    if let Some(at) = activate_at {
        ensure!(
            loaded.not_before.unix_timestamp() <= at.max(now.unix_timestamp()),
            "the certificate is not valid before {}: activate it then (--activate <time>)",
            loaded.not_before
        );
        check_crl_urls(issuers).await?;
    }
    // A name given with the CSR (`ca csr --name`, Vault's key_name) carries over.
    let name = name.or_else(|| row.name.clone());
    let issuer_row = set::new_row(&loaded, &key, seal, name, activate_at, None);
    issuers
        .store()
        .insert_issuer(&issuer_row)
        .await
        .map_err(|e| match e {
            ca_store::Error::AlreadyExists => {
                anyhow!("this issuer, or an issuer of that name, is installed already")
            }
            e => e.into(),
        })?;
    issuers.store().delete_key(&row.key_id).await?;
    issuers.refresh().await?;
    Ok(Installed {
        issuer_id: loaded.issuer_id,
        key_id: row.key_id,
        parents: certs[1..].to_vec(),
    })
}

/// Makes `issuer` the default now. Every replica follows within [`set::POLL`].
pub async fn activate_now(issuers: &Issuers, reference: &str) -> Result<String> {
    let set = issuers.current();
    let member = set
        .resolve(reference)
        .ok_or_else(|| anyhow!("no issuer {reference:?}"))?;
    ensure!(
        member.ca.not_after() > OffsetDateTime::now_utc()
            && member.ca.not_before() <= OffsetDateTime::now_utc(),
        "issuer {} is not valid now",
        member.ca.issuer_id()
    );
    let id = member.ca.issuer_id().to_owned();
    if id != set.default_ca().issuer_id() {
        check_crl_urls(issuers).await?;
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    // An explicit choice cancels what was scheduled to take over later.
    for other in set
        .members()
        .iter()
        .filter(|m| m.ca.issuer_id() != id && m.activate_at.is_some_and(|t| t > now))
    {
        issuers
            .store()
            .update_issuer(
                other.ca.issuer_id(),
                other.name.as_deref(),
                Some(other.ca.leaf_not_after().as_str()),
                None,
            )
            .await?;
    }
    // Strictly after every earlier activation, so it wins the "activated last" rule.
    let latest = set
        .members()
        .iter()
        .filter(|m| m.ca.issuer_id() != id)
        .filter_map(|m| m.activate_at.or(m.in_files.then_some(m.registered_at)))
        .filter(|t| *t <= now)
        .max()
        .unwrap_or(0);
    issuers
        .store()
        .update_issuer(
            &id,
            member.name.as_deref(),
            Some(member.ca.leaf_not_after().as_str()),
            Some(now.max(latest + 1)),
        )
        .await?;
    issuers.refresh().await?;
    Ok(id)
}

/// The root key's path: `--root-key` when given, else `<data-dir>/ca/root.key`.
pub fn root_key_path(data_dir: &Path, explicit: Option<&Path>) -> std::path::PathBuf {
    explicit.map_or_else(|| CaFiles::new(data_dir).root_key(), Path::to_path_buf)
}
