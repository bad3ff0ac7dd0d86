//! Backup and restore of a deployment: the CA material (`ca/`: issuing certificates and keys,
//! chains, the seal key, alternate chains, the root key when it is kept here) and, for the
//! embedded SQLite ledger, a consistent copy of the database taken while the server runs. A
//! PostgreSQL ledger is backed up with `pg_dump`; its backup here holds the CA material only.
//!
//! A backup is a directory (mode 0700) with a `manifest.json` naming every file and its SHA-256;
//! restore checks them before copying anything, refuses a data directory that holds CA material
//! or a ledger already, and finishes by opening the restored deployment the way `serve` does
//! (issuer registered, seal key matching). The root token file is not copied: it is a secret the
//! operator was told to keep elsewhere; `ca-server token root` makes another.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::issuer::hierarchy::{self, CaFiles, CaState};
use crate::server::Runtime;

/// The manifest of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// When it was taken, RFC 3339.
    pub created_at: String,
    /// The server version that took it.
    pub server_version: String,
    /// `sqlite` (the ledger is in the backup) or `postgres` (it is not).
    pub database: String,
    /// The issuers the ledger knows: id and subject.
    pub issuers: Vec<(String, String)>,
    /// Each file, relative to the backup directory, with its hex SHA-256.
    pub files: Vec<(String, String)>,
}

const MANIFEST: &str = "manifest.json";
const LEDGER: &str = "ledger.db";

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hierarchy::hex(
        ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref(),
    ))
}

fn private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Copies a regular file, keeping it private (0600).
fn copy_private(from: &Path, to: &Path) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    crate::issuer::keys::write_secret(to, &bytes)
}

/// The regular files of `ca/`, by name.
fn ca_files(ca_dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(ca_dir).with_context(|| format!("reading {}", ca_dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Takes a backup of the deployment `config` names into `out`, which must not exist yet.
pub async fn backup(config: &Config, out: &Path) -> Result<Manifest> {
    ensure!(
        !out.exists(),
        "{} exists: a backup goes into a new directory",
        out.display()
    );
    let runtime = Runtime::open(config).await?;
    let result = async {
        private_dir(&out.join("ca"))?;
        let ca_dir = CaFiles::new(&config.data_dir).dir().to_path_buf();
        let mut files = Vec::new();
        for name in ca_files(&ca_dir)? {
            let rel = format!("ca/{name}");
            copy_private(&ca_dir.join(&name), &out.join(&rel))?;
            files.push((rel.clone(), sha256_file(&out.join(&rel))?));
        }
        let database = match runtime.store.backend() {
            ca_store::Backend::Sqlite => {
                let target = out.join(LEDGER);
                runtime
                    .store
                    .snapshot_to(&target)
                    .await
                    .context("copying the ledger")?;
                fs::set_permissions(&target, fs::Permissions::from_mode(0o600))?;
                files.push((LEDGER.to_owned(), sha256_file(&target)?));
                "sqlite"
            }
            ca_store::Backend::Postgres => "postgres",
        };
        let manifest = Manifest {
            format: 1,
            created_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            database: database.to_owned(),
            issuers: runtime.store.issuers().await?,
            files,
        };
        let text = serde_json::to_string_pretty(&manifest)?;
        crate::issuer::keys::write_secret(&out.join(MANIFEST), text.as_bytes())?;
        Ok(manifest)
    }
    .await;
    runtime.close().await;
    if result.is_err() {
        // A partial backup is worse than none: it looks like one.
        let _ = fs::remove_dir_all(out);
    }
    result
}

/// Restores the backup in `from` into the deployment `config` names: an empty data directory,
/// and for SQLite no ledger file yet (for PostgreSQL, restore the database with `pg_restore`
/// first). Returns the manifest.
pub async fn restore(config: &Config, from: &Path) -> Result<Manifest> {
    let text = fs::read_to_string(from.join(MANIFEST))
        .with_context(|| format!("{} is not a backup (no {MANIFEST})", from.display()))?;
    let manifest: Manifest = serde_json::from_str(&text).context("reading the manifest")?;
    ensure!(
        manifest.format == 1,
        "unknown backup format {}",
        manifest.format
    );
    for (rel, digest) in &manifest.files {
        ensure!(
            !rel.contains("..") && !rel.starts_with('/'),
            "the manifest names a file outside the backup: {rel}"
        );
        let actual = sha256_file(&from.join(rel))?;
        ensure!(
            &actual == digest,
            "{rel} does not match the manifest (damaged or altered backup)"
        );
    }
    let files = CaFiles::new(&config.data_dir);
    if files.state() != CaState::Empty {
        bail!(
            "{} already holds CA material; restore into an empty data directory",
            files.dir().display()
        );
    }
    let url = config.database_url();
    let backend = url.backend()?;
    let sqlite_target: Option<PathBuf> = match (manifest.database.as_str(), backend) {
        ("sqlite", ca_store::Backend::Sqlite) => {
            let path = ca_store::sqlite::file_path(&url).context("the SQLite ledger's path")?;
            ensure!(
                !path.exists(),
                "{} exists already; restore into a new deployment",
                path.display()
            );
            Some(path)
        }
        ("sqlite", ca_store::Backend::Postgres) => bail!(
            "this backup holds a SQLite ledger and --database-url names PostgreSQL: restore to \
             SQLite (no --database-url)"
        ),
        ("postgres", ca_store::Backend::Sqlite) => bail!(
            "this backup's ledger is in PostgreSQL (pg_dump): give the restored database's \
             --database-url"
        ),
        _ => None,
    };
    private_dir(&config.data_dir)?;
    private_dir(files.dir())?;
    for (rel, _) in &manifest.files {
        if let Some(name) = rel.strip_prefix("ca/") {
            copy_private(&from.join(rel), &files.dir().join(name))?;
        }
    }
    if let Some(target) = &sqlite_target {
        copy_private(&from.join(LEDGER), target)?;
    }
    // Open it as `serve` would: the issuer must be the ledger's and the seal key its own.
    let runtime = Runtime::open(config)
        .await
        .context("the restored deployment does not open")?;
    if let Some(seal) = &runtime.seal {
        seal.check_against(runtime.store.as_ref(), &config.data_dir)
            .await?;
    }
    runtime.close().await;
    Ok(manifest)
}
