//! `ca-server serve`: initialise on first run, open the ledger, load the CA, serve HTTPS (and
//! optionally HTTP), renew the serving certificate, and shut down cleanly on SIGTERM or Ctrl-C.

use std::sync::Arc;

use anyhow::{Context, Result};
use ca_store::writer::LedgerWriter;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::http::{self, AppState, listener, tls};
use crate::issuer::{CertificateAuthority, Issuance, hierarchy};

/// Everything opened at start-up, shared by `serve` and the one-shot CLI commands.
pub struct Runtime {
    /// Signing and recording.
    pub issuance: Issuance,
    /// The ledger and protocol state.
    pub store: Arc<dyn ca_store::Store>,
    writer: LedgerWriter,
}

impl Runtime {
    /// Creates the CA on an empty data directory, opens the ledger, loads the CA.
    pub async fn open(config: &Config) -> Result<Self> {
        let files = hierarchy::CaFiles::new(&config.data_dir);
        if !files.exists() {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
            hierarchy::generate(&config.data_dir, &hierarchy::GenerateOptions::default())?;
            tracing::info!(data_dir = %config.data_dir.display(), "created a new root and issuing CA");
        }
        let url = config.database_url();
        let store = ca_store::open(&url)
            .await
            .with_context(|| format!("opening the ledger at {url}"))?;
        let ledger: Arc<dyn ca_store::Ledger> = store.clone();
        let writer = LedgerWriter::spawn(ledger);
        let ca = CertificateAuthority::load(&config.data_dir, config.issuer_settings())
            .context("loading the CA")?;
        tracing::info!(issuer_id = ca.issuer_id(), subject = ca.subject(), not_after = %ca.not_after(), database = ?store.backend(), "CA loaded");
        Ok(Self {
            issuance: Issuance::new(Arc::new(ca), writer.clone(), crate::metrics::Metrics::new()),
            store,
            writer,
        })
    }

    /// Commits queued ledger writes and closes connections.
    pub async fn close(self) {
        self.writer.close().await;
        self.store.close().await;
    }
}

/// Runs the server until SIGTERM / Ctrl-C.
pub async fn serve(config: Config) -> Result<()> {
    let runtime = Runtime::open(&config).await?;
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
            )
            .await?,
        )
    } else {
        None
    };
    let vault = if config.vault.enabled {
        let state = crate::vault::VaultState::new(
            config.vault.clone(),
            Arc::clone(&runtime.store),
            runtime.issuance.clone(),
            crl.clone(),
        );
        ensure_root_token(&config, &state).await?;
        Some(state)
    } else {
        None
    };
    let mut background = vec![tokio::spawn(http::crl::refresh_forever(
        crl.clone(),
        Arc::clone(runtime.issuance.ca()),
        Arc::clone(&runtime.store),
        config.ca.crl_refresh,
    ))];
    if !config.retention.drop_der_after.is_zero() {
        background.push(tokio::spawn(retention_forever(
            Arc::clone(&runtime.store),
            config.retention.clone(),
        )));
    }
    let router = http::app(AppState {
        issuance: runtime.issuance.clone(),
        store: Arc::clone(&runtime.store),
        acme,
        vault,
        crl,
        metrics: config.metrics.clone(),
    });

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
    ));
    if let Some(addr) = config.http_listen {
        let plain = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(address = %plain.local_addr()?, scheme = "http", "listening");
        servers.spawn(listener::serve(
            plain,
            None,
            router,
            stop_rx,
            config.shutdown_grace,
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

/// On first start, mints a root token for the Vault API and writes it to `<data-dir>/root-token`
/// (mode 0600). Only its hash is stored in the database.
async fn ensure_root_token(config: &Config, state: &crate::vault::VaultState) -> Result<()> {
    let path = config.data_dir.join("root-token");
    if path.exists() {
        return Ok(());
    }
    let (token, _) =
        crate::vault::auth::mint(state, vec!["root".into()], "root", Default::default(), None)
            .await
            .map_err(|e| anyhow::anyhow!("creating the root token: {:?}", e.errors))?;
    crate::issuer::keys::write_secret(&path, format!("{token}\n").as_bytes())?;
    tracing::info!(path = %path.display(), "wrote the initial Vault root token");
    Ok(())
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
