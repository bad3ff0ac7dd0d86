//! The deployment's issuing CAs and which one signs: the issuer in the data directory, plus
//! issuers held in the database (made by rotation, `ca install-intermediate`, or the Vault API's
//! `intermediate/set-signed`), whose keys are sealed with the seal key.
//!
//! **Which issuer is the default** is a function of the database and the clock, so every replica
//! reaches the same answer without talking to the others: among the issuers with an activation
//! time in the past, the one activated last (the data directory's issuer counts as activated when
//! it was registered). Making an issuer the default now (`ca activate`, Vault's
//! `config/issuers`) sets its activation time to now; a rotation schedules it. Replicas re-read the
//! issuers every [`POLL`], so they switch within seconds of each other, without a restart.
//!
//! Issuers that are not the default keep signing CRLs for what they issued and stay in the trust
//! bundle until their certificate expires.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ca_store::Store;
use ca_store::issuers::IssuerRow;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::hierarchy::{self, LoadedCa, parse_certs};
use super::{CertificateAuthority, LeafNotAfter, Settings};
use crate::seal::Seal;

/// How often replicas re-read the issuers.
pub const POLL: Duration = Duration::from_secs(5);

/// The setting holding the URLs written through Vault's `config/urls`.
pub const URLS_SETTING: &str = "pki_urls";

/// Where an issuer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Signs what is issued now.
    Default,
    /// Scheduled to become the default (its chain is already published).
    Next,
    /// Neither: a former default (its CRL still served) or one installed but not activated.
    Standby,
}

impl Standing {
    /// Lower-case name for metrics and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Next => "next",
            Self::Standby => "standby",
        }
    }
}

/// One issuer and its bookkeeping.
#[derive(Debug, Clone)]
pub struct Member {
    /// The CA.
    pub ca: Arc<CertificateAuthority>,
    /// Vault `issuer_name`.
    pub name: Option<String>,
    /// When it becomes (or became) the default; None = not scheduled.
    pub activate_at: Option<i64>,
    /// When it was registered.
    pub registered_at: i64,
    /// The issuer a rotation made it to replace.
    pub successor_of: Option<String>,
    /// True for the issuer in the data directory.
    pub in_files: bool,
    /// Where it stands now.
    pub standing: Standing,
}

/// The URLs baked into issued certificates, from Vault's `config/urls` when written there
/// (shared by every replica), else from the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Urls {
    /// authorityInfoAccess caIssuers.
    #[serde(default)]
    pub issuing_certificates: Vec<String>,
    /// CRL distribution points.
    #[serde(default)]
    pub crl_distribution_points: Vec<String>,
}

/// The issuers at one moment.
#[derive(Debug, Clone)]
pub struct IssuerSet {
    members: Vec<Member>,
    default: usize,
}

impl IssuerSet {
    /// The issuer that signs now.
    pub fn default_ca(&self) -> &Arc<CertificateAuthority> {
        &self.members[self.default].ca
    }

    /// The default issuer's entry.
    pub fn default_member(&self) -> &Member {
        &self.members[self.default]
    }

    /// Every issuer, oldest first.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// An issuer by id.
    pub fn by_id(&self, issuer_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.ca.issuer_id() == issuer_id)
    }

    /// An issuer by Vault reference: `default`, an issuer id or an issuer name.
    pub fn resolve(&self, reference: &str) -> Option<&Member> {
        if reference == "default" {
            return Some(self.default_member());
        }
        self.by_id(reference).or_else(|| {
            self.members
                .iter()
                .find(|m| m.name.as_deref() == Some(reference))
        })
    }

    /// The trust anchors to publish: the top of every chain (primary and alternate) of the
    /// default issuer, the next one, and former defaults whose certificate has not expired, each
    /// once, the default's first. An issuer installed but never scheduled publishes nothing yet.
    pub fn roots(&self, now: OffsetDateTime) -> Vec<CertificateDer<'static>> {
        let mut order: Vec<&Member> = vec![self.default_member()];
        order.extend(
            self.members
                .iter()
                .filter(|m| m.standing != Standing::Default && activation(m).is_some()),
        );
        let mut out: Vec<CertificateDer<'static>> = Vec::new();
        for m in order {
            if m.ca.not_after() <= now && m.standing != Standing::Default {
                continue;
            }
            for chain in m.ca.chains() {
                if let Some(top) = chain.last()
                    && !out.contains(top)
                {
                    out.push(top.clone());
                }
            }
        }
        out
    }

    /// A number that grows whenever the set of roots can have changed (an issuer added, or one
    /// expired): the SPIFFE bundle's `spiffe_sequence`.
    pub fn sequence(&self) -> u64 {
        let now = OffsetDateTime::now_utc();
        self.members
            .iter()
            .map(|m| {
                let expired = m.ca.not_after().unix_timestamp();
                if m.ca.not_after() <= now {
                    m.registered_at.max(expired)
                } else {
                    m.registered_at
                }
            })
            .max()
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0)
    }

    /// Issuers whose certificates may still be in use (their own certificate unexpired): they
    /// keep signing CRLs.
    pub fn live(&self, now: OffsetDateTime) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.ca.not_after() > now)
    }
}

/// When an issuer was (or will be) made the default: its activation time, or for the data
/// directory's issuer its registration. None: installed, never activated.
fn activation(m: &Member) -> Option<(i64, bool)> {
    match (m.activate_at, m.in_files) {
        (Some(t), _) => Some((t, true)),
        (None, true) => Some((m.registered_at, false)),
        (None, false) => None,
    }
}

/// Whether an issuer's certificate is valid at `now`.
fn valid_at(m: &Member, now: i64) -> bool {
    m.ca.not_before().unix_timestamp() <= now && now < m.ca.not_after().unix_timestamp()
}

/// The default at `now`: the issuer activated last among those activated already and valid now
/// (an expired or not-yet-valid certificate never signs). Within one second an explicit
/// activation wins over the data directory's implicit one, then the issuer registered later.
fn choose_default(members: &[Member], now: i64) -> usize {
    let pick = |valid_only: bool| {
        members
            .iter()
            .enumerate()
            .filter(|(_, m)| !valid_only || valid_at(m, now))
            .filter_map(|(i, m)| {
                activation(m)
                    .filter(|(t, _)| *t <= now)
                    .map(|(t, explicit)| (t, explicit, m.registered_at, i))
            })
            .max()
            .map(|(_, _, _, i)| i)
    };
    pick(true)
        .or_else(|| pick(false))
        .unwrap_or_else(|| members.iter().position(|m| m.in_files).unwrap_or(0))
}

fn with_standings(mut members: Vec<Member>, now: i64) -> IssuerSet {
    let default = choose_default(&members, now);
    let default_activation = members[default].activate_at.unwrap_or(i64::MIN);
    for (i, m) in members.iter_mut().enumerate() {
        m.standing = if i == default {
            Standing::Default
        } else if m
            .activate_at
            .is_some_and(|t| t > now && t > default_activation)
        {
            Standing::Next
        } else {
            Standing::Standby
        };
    }
    IssuerSet { members, default }
}

/// The data directory's issuer as loaded at start-up.
struct FilesIssuer {
    loaded: LoadedCa,
    pkcs8: Vec<u8>,
}

/// The live issuer set, re-read from the database by [`Issuers::refresh`].
pub struct Issuers {
    current: RwLock<Arc<IssuerSet>>,
    /// What the members were built from; a change rebuilds them.
    source: tokio::sync::Mutex<String>,
    files: FilesIssuer,
    settings: Settings,
    store: Arc<dyn Store>,
    seal: Option<Arc<Seal>>,
}

impl std::fmt::Debug for Issuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuers")
            .field("default", &self.current().default_ca().issuer_id())
            .finish_non_exhaustive()
    }
}

/// The seal purpose of an issuer's key, bound to the issuer's whole material: its id, its
/// certificate, its parents and its alternate chains. A sealed key copied to another row, or a
/// row whose certificate or chains were replaced (an issuer re-parented under another root),
/// does not open.
pub fn key_purpose(row: &IssuerRow) -> String {
    let mut material = Vec::new();
    for part in [
        row.certificate.as_deref().unwrap_or_default(),
        row.parents_pem.as_deref().unwrap_or_default().as_bytes(),
        row.alternates_pem.as_deref().unwrap_or_default().as_bytes(),
    ] {
        material.extend_from_slice(&(part.len() as u64).to_be_bytes());
        material.extend_from_slice(part);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &material);
    format!(
        "ca-issuer-key:{}:{}",
        row.issuer_id,
        super::hierarchy::hex(digest.as_ref())
    )
}

/// The seal purpose of a pending key.
pub fn pending_key_purpose(key_id: &str) -> String {
    format!("ca-pending-key:{key_id}")
}

impl Issuers {
    /// Loads the data directory's issuer and every issuer the database holds.
    pub async fn load(
        files_ca: &CertificateAuthority,
        settings: Settings,
        store: Arc<dyn Store>,
        seal: Option<Arc<Seal>>,
    ) -> Result<Self> {
        let files = FilesIssuer {
            loaded: files_ca.material().clone(),
            pkcs8: files_ca.key_pkcs8(),
        };
        let (rows, urls) = read_source(store.as_ref()).await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let members = build_members(&files, &settings, seal.as_deref(), &rows, &urls)?;
        let set = with_standings(members, now);
        Ok(Self {
            current: RwLock::new(Arc::new(set)),
            source: tokio::sync::Mutex::new(fingerprint(&rows, &urls)),
            files,
            settings,
            store,
            seal,
        })
    }

    /// A set holding only `ca` (tests and one-shot tools without a database).
    pub fn single(ca: CertificateAuthority, store: Arc<dyn Store>) -> Self {
        let files = FilesIssuer {
            loaded: ca.material().clone(),
            pkcs8: ca.key_pkcs8(),
        };
        let settings = ca.settings().clone();
        let member = Member {
            ca: Arc::new(ca),
            name: None,
            activate_at: None,
            registered_at: 0,
            successor_of: None,
            in_files: true,
            standing: Standing::Default,
        };
        Self {
            current: RwLock::new(Arc::new(IssuerSet {
                members: vec![member],
                default: 0,
            })),
            source: tokio::sync::Mutex::new(String::new()),
            files,
            settings,
            store,
            seal: None,
        }
    }

    /// The issuers now.
    pub fn current(&self) -> Arc<IssuerSet> {
        match self.current.read() {
            Ok(set) => Arc::clone(&set),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The configured issuance settings (before per-issuer URL templating).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The database.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The seal key, needed to store or read issuer keys.
    pub fn seal(&self) -> Option<&Arc<Seal>> {
        self.seal.as_ref()
    }

    /// Re-reads the issuers; rebuilds them when the database changed and re-decides the
    /// default from the clock. Returns the default issuer's id when it changed.
    pub async fn refresh(&self) -> Result<Option<String>> {
        // One refresh at a time, each reading the set as the previous one left it: a refresh
        // that read `before` early could otherwise keep stale members under a new fingerprint.
        let mut source = self.source.lock().await;
        let (rows, urls) = read_source(self.store.as_ref()).await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let before = self.current();
        let print = fingerprint(&rows, &urls);
        let members = if *source == print {
            before.members.clone()
        } else {
            let members = build_members(
                &self.files,
                &self.settings,
                self.seal.as_deref(),
                &rows,
                &urls,
            )?;
            *source = print;
            members
        };
        let set = with_standings(members, now);
        let changed = (set.default_ca().issuer_id() != before.default_ca().issuer_id())
            .then(|| set.default_ca().issuer_id().to_owned());
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(changed)
    }

    /// Re-reads the issuers every [`POLL`] (and logs a change of default), until the task is
    /// dropped. A failed read keeps the issuers as they were.
    pub async fn refresh_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(POLL).await;
            match self.refresh().await {
                Ok(Some(id)) => {
                    let set = self.current();
                    tracing::info!(issuer_id = %id, subject = set.default_ca().subject(), "the default issuer changed");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "re-reading the issuers failed; keeping the current ones")
                }
            }
        }
    }
}

async fn read_source(store: &dyn Store) -> Result<(Vec<IssuerRow>, Urls)> {
    let rows = store.issuer_rows().await?;
    let urls = match store.setting(URLS_SETTING).await? {
        Some(bytes) => serde_json::from_slice(&bytes).context("the stored PKI URLs")?,
        None => Urls::default(),
    };
    Ok((rows, urls))
}

fn fingerprint(rows: &[IssuerRow], urls: &Urls) -> String {
    format!("{rows:?}{urls:?}")
}

/// The settings an issuer signs with: the stored URLs, when written, replace the configured ones.
fn settings_with(settings: &Settings, urls: &Urls) -> Settings {
    let mut s = settings.clone();
    if !urls.crl_distribution_points.is_empty() || !urls.issuing_certificates.is_empty() {
        s.crl_urls = urls.crl_distribution_points.clone();
        s.issuing_certificate_urls = urls.issuing_certificates.clone();
    }
    s
}

fn build_members(
    files: &FilesIssuer,
    settings: &Settings,
    seal: Option<&Seal>,
    rows: &[IssuerRow],
    urls: &Urls,
) -> Result<Vec<Member>> {
    let settings = settings_with(settings, urls);
    let mut members = Vec::new();
    let mut files_seen = false;
    for row in rows {
        let leaf = row
            .leaf_not_after_behavior
            .as_deref()
            .and_then(LeafNotAfter::parse)
            .unwrap_or_default();
        let ca = if row.issuer_id == files.loaded.issuer_id {
            files_seen = true;
            let key = key_from_pkcs8(&files.pkcs8)?;
            CertificateAuthority::new(files.loaded.clone(), key, settings.clone(), leaf)?
        } else {
            // One unusable row (altered, foreign, damaged) is left out, loudly; it does not stop
            // the other issuers.
            let built = held_issuer(row, seal).and_then(|held| {
                held.map(|(loaded, key)| {
                    CertificateAuthority::new(loaded, key, settings.clone(), leaf)
                })
                .transpose()
            });
            match built {
                Ok(Some(ca)) => ca,
                Ok(None) => {
                    tracing::error!(issuer_id = %row.issuer_id, "an issuer row without a certificate and sealed key, and not this data directory's issuer: left out");
                    continue;
                }
                Err(e) => {
                    tracing::error!(issuer_id = %row.issuer_id, error = %format!("{e:#}"), "an issuer row that cannot be used: left out");
                    continue;
                }
            }
        };
        members.push(Member {
            ca: Arc::new(ca),
            name: row.name.clone(),
            activate_at: row.activate_at,
            registered_at: row.registered_at,
            successor_of: row.successor_of.clone(),
            in_files: row.issuer_id == files.loaded.issuer_id,
            standing: Standing::Standby,
        });
    }
    if !files_seen {
        // Not registered yet (a one-shot command on a database being set up).
        let key = key_from_pkcs8(&files.pkcs8)?;
        members.insert(
            0,
            Member {
                ca: Arc::new(CertificateAuthority::new(
                    files.loaded.clone(),
                    key,
                    settings.clone(),
                    LeafNotAfter::default(),
                )?),
                name: None,
                activate_at: None,
                registered_at: 0,
                successor_of: None,
                in_files: true,
                standing: Standing::Standby,
            },
        );
    }
    Ok(members)
}

fn key_from_pkcs8(pkcs8: &[u8]) -> Result<rcgen::KeyPair> {
    use rustls::pki_types::PrivatePkcs8KeyDer;
    rcgen::KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8))
        .map_err(|e| anyhow!("the CA key does not load: {e}"))
}

/// An issuer whose material the database holds: its chain, alternates and sealed key.
fn held_issuer(row: &IssuerRow, seal: Option<&Seal>) -> Result<Option<(LoadedCa, rcgen::KeyPair)>> {
    let (Some(cert), Some(sealed)) = (&row.certificate, &row.key_sealed) else {
        return Ok(None);
    };
    let seal = seal.ok_or_else(|| {
        anyhow!(
            "issuer {} is held in the database, sealed, and the seal key is missing",
            row.issuer_id
        )
    })?;
    let pkcs8 = seal
        .open_sealed_bytes(&key_purpose(row), sealed)
        .with_context(|| {
            format!(
                "issuer {}: its key does not open with this seal key for this certificate and \
                 chain (altered or foreign row)",
                row.issuer_id
            )
        })?;
    let key = key_from_pkcs8(&pkcs8)?;
    let mut chain = vec![CertificateDer::from(cert.clone())];
    if let Some(parents) = &row.parents_pem {
        chain.extend(parse_certs(parents)?);
    }
    let alternates: Vec<Vec<CertificateDer<'static>>> = match &row.alternates_pem {
        Some(json) => serde_json::from_str::<Vec<String>>(json)
            .context("issuer alternates")?
            .iter()
            .map(|pem| parse_certs(pem))
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let loaded = LoadedCa::from_chain(chain, &key, alternates)
        .with_context(|| format!("issuer {} in the database", row.issuer_id))?;
    Ok(Some((loaded, key)))
}

/// A new issuer row for checked material and its key, sealed.
pub fn new_row(
    loaded: &LoadedCa,
    key: &rcgen::KeyPair,
    seal: &Seal,
    name: Option<String>,
    activate_at: Option<i64>,
    successor_of: Option<String>,
) -> IssuerRow {
    let parents = hierarchy::to_pem(&loaded.chain[1..]);
    let alternates: Vec<String> = loaded
        .alternates
        .iter()
        .map(|c| hierarchy::to_pem(c))
        .collect();
    let mut row = IssuerRow {
        issuer_id: loaded.issuer_id.clone(),
        subject: loaded.subject.clone(),
        registered_at: OffsetDateTime::now_utc().unix_timestamp(),
        certificate: Some(loaded.chain[0].to_vec()),
        parents_pem: (!parents.is_empty()).then_some(parents),
        alternates_pem: (!alternates.is_empty())
            .then(|| serde_json::to_string(&alternates).unwrap_or_default()),
        key_sealed: None,
        name,
        leaf_not_after_behavior: None,
        activate_at,
        successor_of,
    };
    row.key_sealed = Some(seal.seal_bytes(&key_purpose(&row), &key.serialize_der()));
    row
}
