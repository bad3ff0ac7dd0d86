//! `ca-server serve`: initialise on first run, open the ledger, load the CA, serve HTTPS (and
//! optionally HTTP), renew the serving certificate, and shut down cleanly on SIGTERM or Ctrl-C.

use std::sync::Arc;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ca_store::writer::LedgerWriter;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::http::{self, AppState, listener, tls};
use crate::issuer::hierarchy::CaState;
use crate::issuer::set::Issuers;
use crate::issuer::{CertificateAuthority, Issuance, hierarchy};
use crate::seal::Seal;

/// Everything opened at start-up, shared by `serve` and the one-shot CLI commands.
pub struct Runtime {
    /// Signing and recording.
    pub issuance: Issuance,
    /// The ledger and protocol state.
    pub store: Arc<dyn ca_store::Store>,
    /// The key sealing secrets at rest; None only for CLI commands on a data directory made
    /// before sealing existed (`serve` creates it then).
    pub seal: Option<Arc<Seal>>,
    writer: LedgerWriter,
}

impl Runtime {
    /// Opens an existing deployment: the CA files must be complete and belong to the database.
    /// Never creates CA material.
    pub async fn open(config: &Config) -> Result<Self> {
        let data_dir = &config.data_dir;
        match hierarchy::CaFiles::new(data_dir).state() {
            CaState::Complete => {}
            CaState::Empty => bail!(
                "no CA in {}: run `ca-server init` (or `ca-server serve` on a new deployment), or \
                 pass the --data-dir that holds it",
                data_dir.join("ca").display()
            ),
            CaState::Partial(missing) => bail!(missing_files(&missing)),
        }
        warn_if_exposed(config);
        let store = open_store(config).await?;
        let ca = CertificateAuthority::load(data_dir, config.issuer_settings())
            .context("loading the CA")?;
        check_issuer(store.as_ref(), &ca).await?;
        let seal = match Seal::load(data_dir)? {
            Some(seal) => {
                seal.check_against(store.as_ref(), data_dir).await?;
                Some(Arc::new(seal))
            }
            None => None,
        };
        let issuers = Issuers::load(
            &ca,
            config.issuer_settings(),
            Arc::clone(&store),
            seal.clone(),
        )
        .await
        .context("loading the issuers")?;
        let ledger: Arc<dyn ca_store::Ledger> = store.clone();
        let writer = LedgerWriter::spawn(ledger);
        {
            let set = issuers.current();
            let default = set.default_ca();
            tracing::info!(issuer_id = default.issuer_id(), subject = default.subject(), not_after = %default.not_after(), issuers = set.members().len(), database = ?store.backend(), "CA loaded");
        }
        Ok(Self {
            issuance: Issuance::new(
                Arc::new(issuers),
                writer.clone(),
                crate::metrics::Metrics::new(),
            ),
            store,
            seal,
            writer,
        })
    }

    /// The seal key, required by commands that store or read secrets.
    pub fn seal(&self) -> Result<Arc<Seal>> {
        self.seal.clone().ok_or_else(|| {
            anyhow!(
                "{} is missing: restore it beside the CA keys (or start `ca-server serve` once on \
                 this data directory, which creates it for a database that has none)",
                crate::seal::key_path(Path::new("<data-dir>")).display()
            )
        })
    }

    /// Commits queued ledger writes and closes connections.
    pub async fn close(self) {
        self.writer.close().await;
        self.store.close().await;
    }
}

fn missing_files(missing: &[PathBuf]) -> String {
    let names: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
    format!(
        "the CA material is incomplete: {} missing. Refusing to start rather than create a new CA \
         over it: restore the file(s) (e.g. the item missing from the mounted Secret)",
        names.join(" and ")
    )
}

/// Opens the ledger; for SQLite, the file is created 0600.
async fn open_store(config: &Config) -> Result<Arc<dyn ca_store::Store>> {
    let url = config.database_url();
    ca_store::open(&url)
        .await
        .with_context(|| format!("opening the ledger at {url}"))
}

/// The CA must be one this database knows: a registered issuer, or, for a ledger from before
/// registration, the issuer of every certificate in it.
async fn check_issuer(store: &dyn ca_store::Store, ca: &CertificateAuthority) -> Result<()> {
    let registered = store.issuers().await?;
    if registered.iter().any(|(id, _)| id == ca.issuer_id()) {
        return Ok(());
    }
    if !registered.is_empty() {
        let known: Vec<String> = registered
            .iter()
            .map(|(id, subject)| format!("{subject} ({id})"))
            .collect();
        bail!(
            "this database belongs to the issuing CA {}, not to the CA in the data directory, \
             {} ({}): start with that CA's files, or point --database-url at this CA's own ledger",
            known.join(", "),
            ca.subject(),
            ca.issuer_id()
        );
    }
    let foreign: Vec<String> = store
        .issued_issuer_ids()
        .await?
        .into_iter()
        .filter(|id| id != ca.issuer_id())
        .collect();
    if !foreign.is_empty() {
        bail!(
            "this database holds certificates issued by another CA ({}), not by {} ({})",
            foreign.join(", "),
            ca.subject(),
            ca.issuer_id()
        );
    }
    store
        .register_issuer(
            ca.issuer_id(),
            ca.subject(),
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .await?;
    Ok(())
}

/// True when the database has no issuer and no issued certificate: a new deployment.
async fn database_is_new(store: &dyn ca_store::Store) -> Result<bool> {
    Ok(store.issuers().await?.is_empty() && store.issued_issuer_ids().await?.is_empty())
}

/// Creates the data directory (0700) for a new deployment; an existing one is left as it is.
fn create_data_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Warns about secrets readable beyond the server's user (the server still starts: the
/// operator may have reasons, and must see them).
fn warn_if_exposed(config: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let files = hierarchy::CaFiles::new(&config.data_dir);
    let mut paths: Vec<(PathBuf, u32)> = vec![
        (config.data_dir.clone(), 0o077),
        (files.dir().to_path_buf(), 0o077),
        (files.issuing_key(), 0o077),
        (files.root_key(), 0o077),
        (crate::seal::key_path(&config.data_dir), 0o077),
        (config.data_dir.join("root-token"), 0o077),
    ];
    if let Some(db) = ca_store::sqlite::file_path(&config.database_url())
        .filter(|_| config.database_url().backend().ok() == Some(ca_store::Backend::Sqlite))
    {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            paths.push((PathBuf::from(name), 0o077));
        }
    }
    for (path, forbidden) in paths {
        if let Ok(meta) = std::fs::metadata(&path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & forbidden != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:04o}"),
                    "readable or writable by other users: it holds keys or secrets; chmod go-rwx"
                );
            }
        }
    }
}

/// Sets up a new deployment: when the data directory holds no CA material and the database no
/// issuer and no certificate, creates the root and issuing CA and the seal key. Anything else —
/// part of a CA, or a database that belongs to a CA — is left for [`Runtime::open`] to accept or
/// refuse. Returns whether it created the CA.
pub async fn initialize_if_new(config: &Config) -> Result<bool> {
    create_data_dir(&config.data_dir)?;
    let files = hierarchy::CaFiles::new(&config.data_dir);
    match files.state() {
        CaState::Complete => return Ok(false),
        CaState::Partial(missing) => bail!(missing_files(&missing)),
        CaState::Empty => {}
    }
    let store = open_store(config).await?;
    let new = database_is_new(store.as_ref()).await;
    store.close().await;
    if !new? {
        bail!(
            "the data directory {} has no CA, but the database already belongs to one: copy that \
             CA's files (ca/issuing.crt, ca/issuing.key, ca/chain.pem, ca/seal.key) into it \
             instead of creating a new CA",
            config.data_dir.display()
        );
    }
    hierarchy::generate(&config.data_dir, &hierarchy::GenerateOptions::default())?;
    Seal::create(&config.data_dir)?;
    tracing::info!(data_dir = %config.data_dir.display(), "created a new root and issuing CA");
    Ok(true)
}

/// The first time the Vault API starts on a database, mints the root token and writes it to
/// `<data-dir>/root-token` (0600); only its hash is stored. The database remembers that it was
/// made, so other replicas and later starts never make another (`ca-server token root` does, on
/// purpose).
pub async fn create_root_token_once(config: &Config, auth: &crate::auth::Auth) -> Result<()> {
    let path = config.data_dir.join("root-token");
    let mut marker = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut marker)
        .map_err(|_| anyhow!("no randomness"))?;
    let claimed = auth
        .store
        .setting_or_insert("vault_root_token", &marker)
        .await?;
    if claimed != marker {
        return Ok(());
    }
    if path.exists() {
        // A deployment from before the database kept count: its token file stands.
        return Ok(());
    }
    let (token, _) = auth
        .mint_root()
        .await
        .map_err(|e| anyhow!("creating the root token: {e}"))?;
    crate::issuer::keys::write_secret(&path, format!("{token}\n").as_bytes())?;
    tracing::info!(path = %path.display(), "wrote the initial Vault root token (revoke it once set-up is done)");
    Ok(())
}

/// Runs the server until SIGTERM / Ctrl-C.
pub async fn serve(config: Config) -> Result<()> {
    survive_file_size_limits();
    initialize_if_new(&config).await?;
    let mut runtime = Runtime::open(&config).await?;
    if runtime.seal.is_none() {
        // A data directory from before sealing. Only if the database has recorded no seal key is
        // nothing sealed yet; otherwise the key file is missing, and a new one would open nothing.
        if let Some(id) = runtime.store.setting("seal_key_id").await? {
            bail!(
                "{} is missing, and the database's secrets are sealed with key {}: restore the \
                 file (the same Secret as the CA keys)",
                crate::seal::key_path(&config.data_dir).display(),
                String::from_utf8_lossy(&id)
            );
        }
        let seal = Seal::create(&config.data_dir)?;
        seal.check_against(runtime.store.as_ref(), &config.data_dir)
            .await?;
        tracing::info!(path = %crate::seal::key_path(&config.data_dir).display(), "created the seal key for secrets at rest");
        runtime.seal = Some(Arc::new(seal));
    }
    let seal = runtime.seal()?;
    let (resolver, validity) = tls::initial(&config.tls, &runtime.issuance).await?;
    let renewal = validity.map(|validity| {
        tokio::spawn(tls::renew_forever(
            Arc::clone(&resolver),
            config.tls.clone(),
            runtime.issuance.clone(),
            validity,
        ))
    });
    let tls_config = Arc::new(tls::server_config(resolver)?);
    let crl = http::crl::CrlCache::default();
    let acme = if config.acme.enabled {
        Some(
            crate::acme::AcmeState::new(
                config.acme.clone(),
                Arc::clone(&runtime.store),
                runtime.issuance.clone(),
                crl.clone(),
                Arc::clone(&seal),
            )
            .await?,
        )
    } else {
        None
    };
    let vault = if config.vault.enabled {
        let auth = crate::auth::Auth::new(Arc::clone(&runtime.store), Arc::clone(&seal));
        create_root_token_once(&config, &auth).await?;
        Some(crate::vault::VaultState::new(
            config.vault.clone(),
            auth,
            runtime.issuance.clone(),
            crl.clone(),
        )?)
    } else {
        None
    };
    let mut background = vec![
        tokio::spawn(http::crl::refresh_forever(
            crl.clone(),
            Arc::clone(runtime.issuance.issuers()),
            Arc::clone(&runtime.store),
            config.ca.crl_refresh,
        )),
        tokio::spawn(Arc::clone(runtime.issuance.issuers()).refresh_forever()),
    ];
    if config.trust.enabled() {
        background.push(tokio::spawn(crate::trust::publish_forever(
            Arc::clone(runtime.issuance.issuers()),
            config.trust.clone(),
        )));
    }
    if config.ca.auto_rotate {
        use crate::issuer::rotation;
        let issuers = Arc::clone(runtime.issuance.issuers());
        let key_path =
            rotation::root_key_path(&config.data_dir, config.ca.root_key_file.as_deref());
        let root = match rotation::RootSigner::load(&issuers.current(), &key_path) {
            Ok(root) => root,
            Err(e) => {
                tracing::warn!(path = %key_path.display(), error = %format!("{e:#}"), "the root key cannot be used: automatic rotation is off");
                None
            }
        };
        if root.is_some() {
            tracing::info!(path = %key_path.display(), "automatic rotation of the issuing CA is on: it signs successors with this root key");
        }
        background.push(tokio::spawn(rotation::schedule_forever(
            issuers,
            root.map(Arc::new),
        )));
    }
    if !config.retention.drop_der_after.is_zero() {
        background.push(tokio::spawn(retention_forever(
            Arc::clone(&runtime.store),
            config.retention.clone(),
        )));
    }
    let state = AppState {
        issuance: runtime.issuance.clone(),
        store: Arc::clone(&runtime.store),
        acme,
        vault,
        crl,
        metrics: config.metrics.clone(),
        in_flight: http::limit::InFlight::new(config.limits.max_in_flight),
    };
    let router = http::app(state.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let https = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(address = %https.local_addr()?, scheme = "https", "listening");
    servers.spawn(listener::serve(
        https,
        Some(tls_config),
        router.clone(),
        stop_rx.clone(),
        config.shutdown_grace,
        config.limits.clone(),
    ));
    if let Some(addr) = config.http_listen {
        let plain = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(address = %plain.local_addr()?, scheme = "http", "listening");
        // Plain HTTP serves only public material: tokens and private keys never cross it.
        servers.spawn(listener::serve(
            plain,
            None,
            http::public_app(state),
            stop_rx,
            config.shutdown_grace,
            config.limits.clone(),
        ));
    }

    shutdown_signal().await;
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    if let Some(task) = renewal {
        task.abort();
    }
    for task in background {
        task.abort();
    }
    runtime.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Retention on a schedule: certificates expired for longer than `drop_der_after` lose their DER.
async fn retention_forever(
    store: Arc<dyn ca_store::Store>,
    config: crate::config::RetentionConfig,
) {
    let mut tick = tokio::time::interval(config.interval.max(std::time::Duration::from_secs(60)));
    loop {
        tick.tick().await;
        let cutoff = time::OffsetDateTime::now_utc().unix_timestamp()
            - i64::try_from(config.drop_der_after.as_secs()).unwrap_or(i64::MAX / 2);
        match store.forget_expired_der(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                certificates = n,
                "retention: dropped DER of long-expired certificates"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "retention run failed; retrying at the next interval")
            }
        }
    }
}

/// A write past the process's file-size limit (`RLIMIT_FSIZE`, `ulimit -f`) raises SIGXFSZ, whose
/// default action kills the process. Like PostgreSQL, the server takes the signal instead, so
/// the write fails (`EFBIG`) and the ledger answers "try again" until the limit or the disk has
/// room, as for a full disk. The handler stays installed for the life of the process.
fn survive_file_size_limits() {
    /// SIGXFSZ on Linux x86-64 and ARM (the targets the image is built for).
    const SIGXFSZ: i32 = 25;
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(SIGXFSZ)) {
        Ok(mut signals) => {
            tokio::spawn(async move { while signals.recv().await.is_some() {} });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot take SIGXFSZ; a file-size limit will stop the server")
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
