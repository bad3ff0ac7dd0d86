//! The embedded SQLite ledger: one file in the data directory, WAL mode.
//!
//! All writes share one write lease, so they queue here instead of contending for SQLite's write
//! lock (a second writer sleeps in the busy handler while the first commits). The lease lends
//! the sqlx writer connection; the ACME protocol writes and the certificate inserts use the
//! rusqlite connections of [`crate::sqlite_inline`] while holding it.
//! Protocol state (orders, tokens…) commits with `synchronous=NORMAL`: in WAL mode that
//! skips the fsync. Certificate rows commit on a connection kept at `synchronous=FULL`, and
//! revocations switch the sqlx connection to FULL for their statement, so they are on disk
//! before a certificate leaves the process — and that fsync of the WAL persists every earlier
//! protocol-state commit too. A few read-only connections run beside the writer, and the
//! hottest reads run on the calling thread ([`crate::sqlite_inline`]).
//!
//! Connections are lent out by [`Connections`], not by an sqlx pool: the pool pings a
//! connection each time it is returned, a round trip to the connection's worker thread that
//! doubled the cost of every query, and a connection to a local file has nothing to detect.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{Backend, DatabaseUrl, Error};

/// How many read-only connections serve queries beside the writer.
const READERS: usize = 4;

/// How long a query waits for a connection before it is answered "try again".
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a statement waits for a lock another process holds (a backup, a CLI command) before
/// the request is answered "try again". The server's own write connections take turns under one
/// write lease, so this waits on others, or briefly on the rollback a cancelled sqlx write left
/// queued on its connection's worker thread.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// SQLite-backed ledger.
#[derive(Debug)]
pub struct SqliteLedger {
    writer: Connections,
    readers: Connections,
    /// The hottest reads, on the calling thread ([`crate::sqlite_inline`]); none for an in-memory
    /// database, which other connections cannot see.
    inline: Option<crate::sqlite_inline::InlineReads>,
    /// The ACME protocol writes, on the calling thread under the writer lease.
    inline_writes: Option<crate::sqlite_inline::InlineWrites>,
    /// Certificate inserts, on the group-commit writer's own thread under the writer lease.
    certificate_writes: Option<crate::sqlite_inline::InlineWrites>,
}

impl SqliteLedger {
    /// Opens (creating if needed) the database file and applies migrations. A new file is
    /// created readable by its owner only (0600); SQLite gives its `-wal` and `-shm` files the
    /// same mode.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str(url.expose())?;
        create_private(options.get_filename())?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            // Checkpoint every ~40 MB of WAL instead of 4 MB: index pages rewritten by many
            // commits are copied to the database file once per checkpoint, not once per 4 MB.
            .pragma("wal_autocheckpoint", "10000")
            .foreign_keys(true);
        // One write lease for every write connection: two writers at once would contend for
        // SQLite's write lock, and the loser sleeps in the busy handler for milliseconds. This
        // connection commits with `synchronous=NORMAL` and switches to FULL around a revocation
        // ([`SqliteLedger::begin_durable`]); certificates commit on their own FULL connection;
        // each fsync of the WAL persists every earlier commit too.
        let mut writer = options
            .clone()
            .synchronous(SqliteSynchronous::Normal)
            .connect()
            .await?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&mut writer)
            .await?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(options.clone().read_only(true).connect().await?);
        }
        // The file SQLite actually opened (an in-memory database has none, and other
        // connections could not see it): the inline reads open exactly that file.
        let (file,): (String,) =
            sqlx::query_as("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&mut writer)
                .await?;
        let (inline, inline_writes, certificate_writes) = if file.is_empty() {
            (None, None, None)
        } else {
            use crate::sqlite_inline::{Commits, InlineReads, InlineWrites};
            let file = std::path::Path::new(&file);
            (
                Some(InlineReads::open(file)?),
                Some(InlineWrites::open(file, Commits::Protocol)?),
                Some(InlineWrites::open(file, Commits::Certificates)?),
            )
        };
        Ok(Self {
            writer: Connections::new(vec![writer])
                .replaced_after_failures(options.synchronous(SqliteSynchronous::Normal)),
            readers: Connections::new(readers),
            inline,
            inline_writes,
            certificate_writes,
        })
    }
}

/// Creates the database file with mode 0600 if it does not exist (the process umask would
/// otherwise decide, typically 0644, and the file holds secrets).
fn create_private(path: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") || path.exists() {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Database(sqlx::Error::Io(e))),
    }
}

/// The database file an `sqlite://` URL names (for permission checks).
pub fn file_path(url: &DatabaseUrl) -> Option<std::path::PathBuf> {
    SqliteConnectOptions::from_str(url.expose())
        .ok()
        .map(|o| o.get_filename().to_path_buf())
}

impl SqliteLedger {
    async fn write_conn(&self) -> Result<Lease<'_>, Error> {
        self.writer.acquire().await
    }

    async fn read_conn(&self) -> Result<Lease<'_>, Error> {
        self.readers.acquire().await
    }

    fn inline_reads(&self) -> Option<&crate::sqlite_inline::InlineReads> {
        self.inline.as_ref()
    }

    /// Only while holding [`Self::write_conn`]'s lease.
    fn inline_writes(&self) -> Option<&crate::sqlite_inline::InlineWrites> {
        self.inline_writes.as_ref()
    }

    /// Only while holding [`Self::write_conn`]'s lease, and off the runtime: each call fsyncs.
    fn certificate_writes(&self) -> Option<&crate::sqlite_inline::InlineWrites> {
        self.certificate_writes.as_ref()
    }

    /// Certificate writes must be on disk when they commit: FULL for the next statement.
    async fn begin_durable(&self, conn: &mut SqliteConnection) -> Result<(), Error> {
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// [`Self::begin_durable`] and [`Self::end_durable`] as statements to run before and after
    /// one statement, in the same query: sqlx runs them in order on the connection's worker
    /// thread, one round trip instead of three. If the statement fails, the switch back does not
    /// run and the caller calls [`Self::end_durable`]; if the caller is cancelled in between,
    /// the connection stays FULL: slower, safe.
    fn durable_statements(&self) -> (&'static str, &'static str) {
        (
            "PRAGMA synchronous = FULL; ",
            "; PRAGMA synchronous = NORMAL",
        )
    }

    /// Back to NORMAL for protocol state. If this fails the connection stays FULL: slower, safe.
    async fn end_durable(&self, conn: &mut SqliteConnection) {
        let _ = sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await;
    }

    async fn close_pools(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

/// A fixed set of open connections, each lent to one task at a time.
#[derive(Debug)]
struct Connections {
    idle: Mutex<Vec<SqliteConnection>>,
    permits: Semaphore,
    size: u32,
    /// For the writer: how to open a replacement, and the [`crate::FAILURES`] count when the
    /// connection was last known clean.
    replace: Option<(SqliteConnectOptions, AtomicU64)>,
}

impl Connections {
    fn new(connections: Vec<SqliteConnection>) -> Self {
        let size = connections.len();
        Self {
            idle: Mutex::new(connections),
            permits: Semaphore::new(size),
            size: u32::try_from(size).unwrap_or(u32::MAX),
            replace: None,
        }
    }

    /// After any database failure, the next lend closes the connection it would have lent (which
    /// rolls back whatever transaction it was left in) and lends a fresh one. Without this, a
    /// transaction stranded by a full disk swallowed every later write: statements "succeeded"
    /// inside it, uncommitted, and were lost.
    fn replaced_after_failures(mut self, options: SqliteConnectOptions) -> Self {
        let seen = crate::FAILURES.load(Ordering::Acquire);
        self.replace = Some((options, AtomicU64::new(seen)));
        self
    }

    /// Waits for a free connection; a long wait is a transient error (`PoolTimedOut`).
    async fn acquire(&self) -> Result<Lease<'_>, Error> {
        let permit = match tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(Error::Database(sqlx::Error::PoolClosed)),
            Err(_) => return Err(Error::Database(sqlx::Error::PoolTimedOut)),
        };
        // A permit guarantees an idle connection (leases push theirs back before releasing),
        // except for a writer whose replacement could not be opened last time.
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match (&self.replace, idle) {
            (None, idle) => idle.ok_or(Error::Database(sqlx::Error::PoolClosed))?,
            (Some((options, clean)), idle) => {
                let seen = crate::FAILURES.load(Ordering::Acquire);
                match idle {
                    Some(conn) if seen == clean.load(Ordering::Acquire) => conn,
                    stale => {
                        if let Some(conn) = stale {
                            // Closing rolls back a transaction left open; a close that fails
                            // drops the connection anyway.
                            let _ = conn.close().await;
                            tracing::warn!(
                                "replacing the ledger's write connection after a database error"
                            );
                        }
                        // On failure the permit goes back with no connection idle: the next
                        // acquire tries to open one again.
                        let fresh = options.connect().await?;
                        clean.store(seen, Ordering::Release);
                        fresh
                    }
                }
            }
        };
        Ok(Lease {
            conn: Some(conn),
            set: self,
            _permit: permit,
        })
    }

    /// Waits for every lease to come back, then closes the connections; later acquires fail.
    async fn close(&self) {
        let Ok(all) = self.permits.acquire_many(self.size).await else {
            return;
        };
        self.permits.close();
        let connections = std::mem::take(
            &mut *self
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        drop(all);
        for conn in connections {
            let _ = conn.close().await;
        }
    }
}

/// A connection lent by [`Connections`]; it goes back when the lease is dropped. A transaction
/// left open by a cancelled task has already queued its rollback on the connection's worker
/// (sqlx does that on drop), so the next borrower starts clean.
struct Lease<'a> {
    conn: Option<SqliteConnection>,
    set: &'a Connections,
    _permit: SemaphorePermit<'a>,
}

impl Deref for Lease<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        // Present from creation until drop.
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.set
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(conn);
        }
        // The permit is released after this, so an acquirer always finds the connection.
    }
}

crate::query::impl_ledger!(SqliteLedger, sqlx::Sqlite, Backend::Sqlite);
crate::acme::impl_acme_store!(SqliteLedger, sqlx::Sqlite);
crate::vault::impl_vault_store!(SqliteLedger, sqlx::Sqlite);
crate::issuers::impl_issuer_store!(SqliteLedger, sqlx::Sqlite);
