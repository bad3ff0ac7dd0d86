//! The embedded ledger's hottest reads and protocol writes, run on the calling thread.
//!
//! sqlx gives each SQLite connection a worker thread of its own, and every query is a message to
//! that thread and back. On two cores those hand-offs (a wake-up, a context switch, another
//! wake-up) cost more CPU than the query itself: a read of a few pages already in SQLite's cache
//! takes microseconds. The reads the ACME protocol repeats on every request — an order with its
//! authorizations, an authorization, a certificate by serial — therefore run here, through
//! rusqlite on read-only connections of the same database file, on the thread that asks.
//!
//! The ACME protocol writes of every issuance ([`InlineWrites`], [`Commits::Protocol`]) run here
//! too, on a read-write connection used only under the ledger's single writer lease, so writes
//! still queue one at a time instead of contending for SQLite's write lock, and no caller thread
//! sleeps in SQLite's busy handler waiting for another connection's commit. Certificates have a
//! write connection of their own ([`Commits::Certificates`]), used under the same lease by the
//! group-commit writer on its own thread, where the fsync of each durable commit blocks nobody
//! else. WAL mode lets the readers run beside the writers: each statement sees the last committed
//! state, which includes every write the caller has already been answered for. PostgreSQL has no
//! such path: a network round trip is inherent.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use crate::Error;
use crate::acme::{AUTHZ_COLUMNS, AuthorizationRow, ORDER_COLUMNS, OrderRow};

/// Idle connections kept open; more are opened when more threads read at once (one per thread
/// of the runtime in practice, since a read never yields).
const KEEP_IDLE: usize = 8;

/// How long a statement here waits on a lock another process holds (a CLI command's write, a
/// WAL recovery, a `VACUUM`) before it is answered "try again". It waits on a runtime thread, so
/// this is kept short; the server's own writes never contend (one writer lease).
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Read-only connections to the ledger file, lent for one statement at a time.
#[derive(Debug)]
pub(crate) struct InlineReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl InlineReads {
    /// Reads of the database file at `path`, which the caller has already opened (and migrated)
    /// through sqlx. One connection is opened now, so a file that cannot be read fails here.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let reads = Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        };
        let first = reads.connect()?;
        reads.give_back(first);
        Ok(reads)
    }

    fn connect(&self) -> Result<Connection, Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(embedded)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(embedded)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < KEEP_IDLE {
            idle.push(conn);
        }
    }

    /// Runs `read` on an idle connection (opening one if none is idle).
    fn with<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, Error> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = read(&conn).map_err(embedded);
        self.give_back(conn);
        result
    }

    /// See [`crate::acme::AcmeStore::authorization`].
    pub(crate) fn authorization(&self, id: &str) -> Result<Option<AuthorizationRow>, Error> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!("SELECT {AUTHZ_COLUMNS} FROM acme_authorizations WHERE id = ?1")
        });
        self.with(|conn| {
            conn.prepare_cached(&SQL)?
                .query_row([id], |row| authorization(row, 0))
                .optional()
        })
    }

    /// See [`crate::acme::AcmeStore::order_with_authorizations`].
    pub(crate) fn order_with_authorizations(
        &self,
        id: &str,
    ) -> Result<Option<(OrderRow, Vec<AuthorizationRow>)>, Error> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let order = ORDER_COLUMNS.split(',').map(|c| format!("o.{}", c.trim()));
            let authz = AUTHZ_COLUMNS.split(',').map(|c| format!("a.{}", c.trim()));
            format!(
                "SELECT {} FROM acme_orders o LEFT JOIN acme_authorizations a \
                 ON a.order_id = o.id WHERE o.id = ?1 ORDER BY a.id",
                order.chain(authz).collect::<Vec<_>>().join(", ")
            )
        });
        let order_columns = ORDER_COLUMNS.split(',').count();
        self.with(|conn| {
            let mut statement = conn.prepare_cached(&SQL)?;
            let mut rows = statement.query([id])?;
            let mut found: Option<(OrderRow, Vec<AuthorizationRow>)> = None;
            while let Some(row) = rows.next()? {
                let (_, authzs) = match &mut found {
                    Some(found) => found,
                    None => found.insert((order(row)?, Vec::new())),
                };
                // A LEFT JOIN row with no authorization has NULL in its columns.
                if row.get::<_, Option<String>>(order_columns)?.is_some() {
                    authzs.push(authorization(row, order_columns)?);
                }
            }
            Ok(found)
        })
    }

    /// See [`crate::Ledger::certificate_by_serial`].
    pub(crate) fn certificate_by_serial(
        &self,
        serial: &[u8],
    ) -> Result<Option<crate::CertificateRecord>, Error> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {} FROM certificates WHERE origin = 'issued' AND serial = ?1",
                crate::model::SELECT_COLUMNS
            )
        });
        let raw = self.with(|conn| {
            conn.prepare_cached(&SQL)?
                .query_row([serial], crate::model::RawRow::from_rusqlite)
                .optional()
        })?;
        raw.map(crate::model::RawRow::into_record).transpose()
    }
}

/// Writes on a read-write connection of their own, on the calling thread: the ACME protocol
/// writes of every issuance (an order with its authorizations, a validation result, an order's
/// status) or the certificate inserts of the group-commit writer, as [`Commits`] says.
///
/// The caller must hold the ledger's writer lease while calling: that lease is the one permit to
/// write, shared with the sqlx writer connection, so the connections never contend for SQLite's
/// write lock (no caller thread sleeps in the busy handler) and writes stay in one queue.
#[derive(Debug)]
pub(crate) struct InlineWrites {
    path: PathBuf,
    kind: Commits,
    conn: Mutex<Option<Connection>>,
}

/// What an [`InlineWrites`] connection commits, which sets how it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commits {
    /// Protocol state, on runtime threads: `synchronous=NORMAL` (no fsync), and the WAL
    /// checkpointed only at ~160 MB, a bound for a load of protocol writes alone (the certificate
    /// commits normally checkpoint first, off the runtime).
    Protocol,
    /// Certificates, on the group-commit writer's own thread: `synchronous=FULL`, so the WAL is
    /// fsynced before a commit returns (which also persists every earlier protocol commit), and
    /// the WAL checkpointed at ~40 MB.
    Certificates,
}

impl InlineWrites {
    /// A write connection to the database file at `path`, for the commits of `kind`.
    pub(crate) fn open(path: &Path, kind: Commits) -> Result<Self, Error> {
        let writes = Self {
            path: path.to_path_buf(),
            kind,
            conn: Mutex::new(None),
        };
        let first = writes.connect()?;
        *writes.lock() = Some(first);
        Ok(writes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn connect(&self) -> Result<Connection, Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(embedded)?;
        // The certificate writer has a thread of its own and may wait as long as the sqlx
        // connections do; protocol writes wait on a runtime thread.
        let busy_timeout = match self.kind {
            Commits::Protocol => BUSY_TIMEOUT,
            Commits::Certificates => crate::sqlite::BUSY_TIMEOUT,
        };
        conn.busy_timeout(busy_timeout).map_err(embedded)?;
        conn.execute_batch(match self.kind {
            Commits::Protocol => {
                "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                 PRAGMA wal_autocheckpoint = 40000;"
            }
            Commits::Certificates => {
                "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                 PRAGMA wal_autocheckpoint = 10000;"
            }
        })
        .map_err(embedded)?;
        Ok(conn)
    }

    /// Runs `write` on the connection. A connection left inside a transaction (a rollback that
    /// failed) is dropped, which rolls it back, and the next write opens a new one; so is one
    /// after a failure other than a duplicate key or another process's lock.
    fn with<T>(
        &self,
        write: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
        let mut guard = self.lock();
        let conn = match guard.as_mut() {
            Some(conn) => conn,
            None => guard.insert(self.connect()?),
        };
        let result = write(conn).map_err(|e| (busy(&e), embedded(e)));
        let stranded = !conn.is_autocommit();
        match result {
            Ok(value) if !stranded => Ok(value),
            Ok(_) => {
                *guard = None;
                Err(Error::Embedded {
                    transient: true,
                    message: "a write left its transaction open".into(),
                })
            }
            Err((busy, error)) => {
                if stranded || !(busy || matches!(error, Error::AlreadyExists)) {
                    *guard = None;
                    crate::FAILURES.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                Err(error)
            }
        }
    }

    /// See [`crate::acme::AcmeStore::insert_order`]: both inserts in one transaction.
    pub(crate) fn insert_order(
        &self,
        o: &OrderRow,
        authzs: &[AuthorizationRow],
    ) -> Result<(), Error> {
        static ORDER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "INSERT INTO acme_orders ({ORDER_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            )
        });
        static AUTHZ: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "INSERT INTO acme_authorizations ({AUTHZ_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            )
        });
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.prepare_cached(&ORDER)?.execute(rusqlite::params![
                o.id,
                o.account_id,
                o.status,
                o.expires,
                o.identifiers,
                o.profile,
                o.not_before,
                o.not_after,
                o.error,
                o.certificate_serial,
                o.replaces,
                o.created_at,
            ])?;
            {
                let mut insert = tx.prepare_cached(&AUTHZ)?;
                for a in authzs {
                    insert.execute(rusqlite::params![
                        a.id,
                        a.order_id,
                        a.account_id,
                        a.identifier_type,
                        a.identifier_value,
                        a.wildcard,
                        a.status,
                        a.expires,
                        a.challenges,
                    ])?;
                }
            }
            tx.commit()
        })
    }

    /// See [`crate::Ledger::insert_certificates`]: every row in one transaction, on disk when
    /// this returns. Only on a [`Commits::Certificates`] connection.
    pub(crate) fn insert_certificates(
        &self,
        rows: &[crate::query::InsertRow<'_>],
    ) -> Result<(), Error> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let columns = crate::model::INSERT_COLUMNS;
            let placeholders = (1..=columns.split(',').count())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("INSERT INTO certificates ({columns}) VALUES ({placeholders})")
        });
        debug_assert_eq!(self.kind, Commits::Certificates);
        self.with(|conn| {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(&SQL)?;
                for row in rows {
                    insert_certificate(&mut insert, row)?;
                }
            }
            tx.commit()
        })
    }

    /// See [`crate::acme::AcmeStore::update_order`].
    pub(crate) fn update_order(&self, o: &OrderRow, expected: &str) -> Result<bool, Error> {
        self.with(|conn| {
            conn.prepare_cached(
                "UPDATE acme_orders SET status = ?1, error = ?2, certificate_serial = ?3 \
                 WHERE id = ?4 AND status = ?5",
            )?
            .execute(rusqlite::params![
                o.status,
                o.error,
                o.certificate_serial,
                o.id,
                expected
            ])
            .map(|changed| changed == 1)
        })
    }

    /// See [`crate::acme::AcmeStore::update_authorization`].
    pub(crate) fn update_authorization(
        &self,
        a: &AuthorizationRow,
        expected: &str,
    ) -> Result<bool, Error> {
        self.with(|conn| {
            conn.prepare_cached(
                "UPDATE acme_authorizations SET status = ?1, challenges = ?2 \
                 WHERE id = ?3 AND status = ?4",
            )?
            .execute(rusqlite::params![a.status, a.challenges, a.id, expected])
            .map(|changed| changed == 1)
        })
    }
}

/// Binds one row in [`crate::model::INSERT_COLUMNS`] order and runs the insert.
fn insert_certificate(
    insert: &mut rusqlite::CachedStatement<'_>,
    row: &crate::query::InsertRow<'_>,
) -> rusqlite::Result<()> {
    use crate::model::to_json;
    let c = row.certificate;
    insert.execute(rusqlite::params![
        c.serial,
        c.issuer_id,
        c.profile,
        c.subject,
        c.common_name,
        to_json(&c.dns_names),
        to_json(&c.ip_addresses),
        to_json(&c.uris),
        to_json(&c.emails),
        c.spiffe_id,
        c.key_algorithm,
        c.not_before,
        c.not_after,
        c.requester.protocol.as_str(),
        c.requester.identity,
        c.requester.namespace,
        c.requester.service_account,
        to_json(&c.requester.detail),
        c.request_id,
        c.created_at,
        c.der,
        row.origin.as_str(),
        row.source,
        row.name,
        crate::model::fingerprint(&c.der),
        row.lineage,
        row.observed_at,
        c.crl_shard.map(i64::from),
        c.workload_namespace,
    ])?;
    Ok(())
}

/// The order in the first [`ORDER_COLUMNS`] of `row`.
fn order(row: &Row<'_>) -> rusqlite::Result<OrderRow> {
    Ok(OrderRow {
        id: row.get(0)?,
        account_id: row.get(1)?,
        status: row.get(2)?,
        expires: row.get(3)?,
        identifiers: row.get(4)?,
        profile: row.get(5)?,
        not_before: row.get(6)?,
        not_after: row.get(7)?,
        error: row.get(8)?,
        certificate_serial: row.get(9)?,
        replaces: row.get(10)?,
        created_at: row.get(11)?,
    })
}

/// The authorization in the [`AUTHZ_COLUMNS`] of `row` starting at column `at`.
fn authorization(row: &Row<'_>, at: usize) -> rusqlite::Result<AuthorizationRow> {
    Ok(AuthorizationRow {
        id: row.get(at)?,
        order_id: row.get(at + 1)?,
        account_id: row.get(at + 2)?,
        identifier_type: row.get(at + 3)?,
        identifier_value: row.get(at + 4)?,
        wildcard: row.get(at + 5)?,
        status: row.get(at + 6)?,
        expires: row.get(at + 7)?,
        challenges: row.get(at + 8)?,
    })
}
// Both decoders are checked column for column against what was written, on this path and on
// PostgreSQL's, by `acme_orders_round_trip` in `ca-store/tests/ledger.rs`.

/// Another process holds the lock: nothing wrong with this connection.
fn busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// A rusqlite error as the ledger's: a unique-key violation is [`Error::AlreadyExists`]; what may
/// pass — a busy or locked database, a full disk, an I/O error, no file descriptor or memory to
/// open a connection — is transient (the caller answers "try again"); anything else is not.
fn embedded(e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::{
        CannotOpen, ConstraintViolation, DatabaseBusy, DatabaseLocked, DiskFull,
        FileLockingProtocolFailed, OutOfMemory, SystemIoFailure,
    };
    if let rusqlite::Error::SqliteFailure(failure, _) = &e
        && failure.code == ConstraintViolation
        && matches!(
            failure.extended_code,
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    {
        return Error::AlreadyExists;
    }
    let transient = matches!(
        e.sqlite_error_code(),
        Some(
            DatabaseBusy
                | DatabaseLocked
                | DiskFull
                | SystemIoFailure
                | CannotOpen
                | OutOfMemory
                | FileLockingProtocolFailed
        )
    );
    Error::Embedded {
        transient,
        message: e.to_string(),
    }
}
