//! Group commit: one task owns all certificate inserts ([`LedgerWriter`]); another batches ACME
//! nonce redemptions on PostgreSQL ([`NonceRedeemer`]; the embedded database redeems them in
//! memory).
//!
//! Callers hand a row to [`LedgerWriter::record`] and wait. The task takes every row queued while
//! the previous transaction was committing and writes them in one transaction, so under load many
//! certificates share one fsync, and at low load a lone row is committed at once (the embedded
//! database's writer lingers briefly only after a batch of several rows, see [`LINGER`]).
//! A caller is answered only after *its* row is committed. If a batch fails for a reason of its
//! own rows (a duplicate serial), they are retried one by one so each caller gets its own answer;
//! if it fails because the database is unavailable, every caller gets that transient error at
//! once (retrying row by row would hold the single writer, and every caller queued behind it, for
//! one timeout per row).

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{Error, Ledger, NewCertificate};

/// Largest batch committed in one transaction.
const MAX_BATCH: usize = 2_000;
/// Queue depth before callers wait (back-pressure instead of unbounded memory).
const QUEUE_DEPTH: usize = 8_192;

enum Message {
    Record(Box<NewCertificate>, oneshot::Sender<Result<(), Error>>),
    Close,
}

/// Handle to the group-commit task. Cheap to clone.
#[derive(Clone)]
pub struct LedgerWriter {
    tx: mpsc::Sender<Message>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for LedgerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerWriter").finish_non_exhaustive()
    }
}

impl LedgerWriter {
    /// Starts the writer task on the current Tokio runtime.
    pub fn spawn(ledger: Arc<dyn Ledger>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = match ledger.backend() {
            // SQLite answers through its own worker thread; a writer task queued behind
            // CPU-bound requests on the shared runtime would add milliseconds to every commit.
            // The writer gets a thread and a small runtime of its own.
            crate::Backend::Sqlite => {
                let (finished, wait) = oneshot::channel::<()>();
                let spawned = std::thread::Builder::new()
                    .name("ledger-writer".into())
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(runtime) => runtime.block_on(run(ledger, rx)),
                            Err(e) => tracing::error!(error = %e, "ledger writer runtime failed"),
                        }
                        let _ = finished.send(());
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "starting the ledger writer thread failed");
                }
                tokio::spawn(async move {
                    let _ = wait.await;
                })
            }
            crate::Backend::Postgres => tokio::spawn(run(ledger, rx)),
        };
        Self {
            tx,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Records one certificate; returns once it is durably committed.
    pub async fn record(&self, certificate: NewCertificate) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Message::Record(Box::new(certificate), done))
            .await
            .map_err(|_| Error::WriterClosed)?;
        wait.await.map_err(|_| Error::WriterClosed)?
    }

    /// Commits everything already queued, then stops the task. Later `record` calls fail with
    /// [`Error::WriterClosed`].
    pub async fn close(&self) {
        let _ = self.tx.send(Message::Close).await;
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// How long the embedded database's writer waits for more rows before a commit, when the
/// previous batch had company (more than one row): PostgreSQL's `commit_delay` with
/// `commit_siblings`. Without it, 64 concurrent signers still made batches of only ~4 rows, each
/// paying an fsync and the wake-ups around it; with it the writer thread blocks a third less
/// often and a signing costs ~4 % less CPU (docs/benchmarks.md), p50 unchanged. One caller at a
/// time makes one-row batches, so it never waits, nor does the first row after a pause.
const LINGER: std::time::Duration = std::time::Duration::from_micros(300);

/// A wait for the first row longer than this is a pause in the load, not part of it: the
/// lingering stops until a batch of several rows comes again. Under the load that lingering
/// serves, rows arrive every few hundred microseconds at most.
const IDLE: std::time::Duration = std::time::Duration::from_millis(5);

async fn run(ledger: Arc<dyn Ledger>, mut rx: mpsc::Receiver<Message>) {
    // Only where the writer has a thread of its own (it sleeps on it); PostgreSQL's writer is a
    // task on the shared runtime.
    let may_linger = matches!(ledger.backend(), crate::Backend::Sqlite);
    let mut linger = false;
    let mut rows = Vec::with_capacity(64);
    let mut waiters = Vec::with_capacity(64);
    let mut closing = false;
    while !closing {
        let waiting = std::time::Instant::now();
        let Some(first) = rx.recv().await else { break };
        // Linger (once) only under continuous load: after an idle pause the next row is
        // committed at once, whatever the batch before the pause held.
        let mut wait_once = linger && waiting.elapsed() <= IDLE;
        let mut next = Some(first);
        loop {
            let Some(message) = next.take() else {
                if !wait_once || rows.len() >= MAX_BATCH || closing {
                    break;
                }
                wait_once = false;
                std::thread::sleep(LINGER);
                next = rx.try_recv().ok();
                continue;
            };
            match message {
                Message::Record(row, done) => {
                    rows.push(*row);
                    waiters.push(done);
                }
                Message::Close => {
                    closing = true;
                    rx.close();
                }
            }
            if rows.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !rows.is_empty() {
            linger = may_linger && rows.len() > 1;
            commit(ledger.as_ref(), &mut rows, &mut waiters).await;
        }
    }
    // Drain anything that raced with Close so no caller waits forever.
    while let Ok(message) = rx.try_recv() {
        if let Message::Record(row, done) = message {
            rows.push(*row);
            waiters.push(done);
        }
    }
    if !rows.is_empty() {
        commit(ledger.as_ref(), &mut rows, &mut waiters).await;
    }
}

async fn commit(
    ledger: &dyn Ledger,
    rows: &mut Vec<NewCertificate>,
    waiters: &mut Vec<oneshot::Sender<Result<(), Error>>>,
) {
    match ledger.insert_certificates(rows).await {
        Ok(()) => {
            for done in waiters.drain(..) {
                let _ = done.send(Ok(()));
            }
        }
        Err(e) if rows.len() == 1 => {
            if let Some(done) = waiters.pop() {
                let _ = done.send(Err(e));
            }
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, rows = rows.len(), "batch insert failed: database unavailable");
            let message = e.to_string();
            for done in waiters.drain(..) {
                let _ = done.send(Err(Error::BatchFailed {
                    transient: true,
                    message: message.clone(),
                }));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, rows = rows.len(), "batch insert failed; retrying rows one by one");
            for (row, done) in rows.iter().zip(waiters.drain(..)) {
                let result = ledger.insert_certificates(std::slice::from_ref(row)).await;
                let _ = done.send(result);
            }
        }
    }
    rows.clear();
}

/// Redemptions queued while the previous batch was being written go in one statement.
const NONCE_BATCH: usize = 1_000;

type Redemption = (String, i64, oneshot::Sender<Result<bool, Error>>);

/// Batches ACME nonce redemptions (PostgreSQL, where replicas share them): every JWS request
/// redeems one nonce, so under load one
/// `INSERT … ON CONFLICT DO NOTHING RETURNING` serves many requests instead of one write each.
/// Same rules as [`LedgerWriter`] on PostgreSQL: no linger, each caller answered after its batch
/// commits.
#[derive(Clone)]
pub struct NonceRedeemer {
    tx: mpsc::Sender<Redemption>,
}

impl std::fmt::Debug for NonceRedeemer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceRedeemer").finish_non_exhaustive()
    }
}

impl NonceRedeemer {
    /// Starts the batching task on the current Tokio runtime.
    pub fn spawn(store: Arc<dyn crate::acme::AcmeStore>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Redemption>(QUEUE_DEPTH);
        tokio::spawn(async move {
            let mut batch: Vec<Redemption> = Vec::with_capacity(64);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < NONCE_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                let items: Vec<(String, i64)> =
                    batch.iter().map(|(n, e, _)| (n.clone(), *e)).collect();
                match store.redeem_nonces(&items).await {
                    Ok(fresh) => {
                        for ((_, _, done), ok) in batch.drain(..).zip(fresh) {
                            let _ = done.send(Ok(ok));
                        }
                    }
                    Err(e) => {
                        let (transient, message) = (e.is_transient(), e.to_string());
                        for (_, _, done) in batch.drain(..) {
                            let _ = done.send(Err(Error::BatchFailed {
                                transient,
                                message: message.clone(),
                            }));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Marks `nonce` used until `expires_at`; false if it was used before.
    pub async fn redeem(&self, nonce: &str, expires_at: i64) -> Result<bool, Error> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((nonce.to_owned(), expires_at, done))
            .await
            .map_err(|_| Error::WriterClosed)?;
        wait.await.map_err(|_| Error::WriterClosed)?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use async_trait::async_trait;

    use super::*;
    use crate::{
        Backend, CertificateRecord, ExpiryQuery, LedgerSummary, MetricsSnapshot, ObserveOutcome,
        ObservedCertificate, Protocol, Requester, SnapshotQuery,
    };

    /// A ledger that fails a whole batch holding a serial it already has (as the real ones do:
    /// one transaction, all or nothing), or every batch with a transient error when `down`.
    #[derive(Default)]
    struct Fake {
        serials: StdMutex<Vec<Vec<u8>>>,
        calls: StdMutex<Vec<usize>>,
        down: bool,
    }

    #[async_trait]
    impl Ledger for Fake {
        fn backend(&self) -> Backend {
            Backend::Postgres
        }
        async fn insert_certificates(&self, batch: &[NewCertificate]) -> Result<(), Error> {
            self.calls.lock().expect("lock").push(batch.len());
            if self.down {
                return Err(Error::Database(sqlx::Error::PoolTimedOut));
            }
            let mut serials = self.serials.lock().expect("lock");
            let mut seen = serials.clone();
            for c in batch {
                if seen.contains(&c.serial) {
                    return Err(Error::AlreadyExists);
                }
                seen.push(c.serial.clone());
            }
            *serials = seen;
            Ok(())
        }
        async fn record_observed(
            &self,
            _: &[ObservedCertificate],
            _: i64,
        ) -> Result<ObserveOutcome, Error> {
            unimplemented!("not used by the writer")
        }
        async fn summary(&self, _: i64) -> Result<LedgerSummary, Error> {
            unimplemented!("not used by the writer")
        }
        async fn metrics_snapshot(&self, _: &SnapshotQuery) -> Result<MetricsSnapshot, Error> {
            unimplemented!("not used by the writer")
        }
        async fn certificate_by_serial(
            &self,
            _: &[u8],
        ) -> Result<Option<CertificateRecord>, Error> {
            unimplemented!("not used by the writer")
        }
        async fn expiring(&self, _: &ExpiryQuery) -> Result<Vec<CertificateRecord>, Error> {
            unimplemented!("not used by the writer")
        }
        async fn revoke(&self, _: &[u8], _: i64, _: i32) -> Result<bool, Error> {
            unimplemented!("not used by the writer")
        }
        async fn forget_expired_der(&self, _: i64) -> Result<u64, Error> {
            unimplemented!("not used by the writer")
        }
        async fn ping(&self) -> Result<(), Error> {
            Ok(())
        }
        async fn issuers(&self) -> Result<Vec<(String, String)>, Error> {
            Ok(Vec::new())
        }
        async fn register_issuer(&self, _: &str, _: &str, _: i64) -> Result<(), Error> {
            Ok(())
        }
        async fn issued_issuer_ids(&self) -> Result<Vec<String>, Error> {
            Ok(Vec::new())
        }
        async fn snapshot_to(&self, _: &std::path::Path) -> Result<(), Error> {
            unreachable!()
        }
        async fn close(&self) {}
    }

    fn row(serial: u8) -> NewCertificate {
        NewCertificate {
            serial: vec![0x42, serial],
            issuer_id: "i".into(),
            profile: "tls-server".into(),
            subject: String::new(),
            common_name: None,
            dns_names: vec![],
            ip_addresses: vec![],
            uris: vec![],
            emails: vec![],
            spiffe_id: None,
            key_algorithm: "ECDSA-P256".into(),
            not_before: 0,
            not_after: 1,
            requester: Requester::new(Protocol::Cli, "test"),
            request_id: String::new(),
            created_at: 0,
            der: vec![0x30],
            crl_shard: None,
            workload_namespace: None,
        }
    }

    /// Commits `serials` as one batch; returns each caller's answer.
    async fn batch(ledger: &Fake, serials: &[u8]) -> Vec<Result<(), Error>> {
        let mut rows: Vec<NewCertificate> = serials.iter().map(|s| row(*s)).collect();
        let (mut waiters, mut answers) = (Vec::new(), Vec::new());
        for _ in serials {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            answers.push(rx);
        }
        commit(ledger, &mut rows, &mut waiters).await;
        assert!(rows.is_empty() && waiters.is_empty());
        let mut out = Vec::new();
        for a in answers {
            out.push(a.await.expect("every caller is answered"));
        }
        out
    }

    #[tokio::test]
    async fn a_duplicate_fails_alone_and_the_rest_of_its_batch_is_recorded() {
        let ledger = Fake::default();
        assert!(batch(&ledger, &[1]).await.iter().all(Result::is_ok));
        let answers = batch(&ledger, &[2, 1, 3]).await;
        assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
        assert!(
            matches!(answers[1], Err(Error::AlreadyExists)),
            "{answers:?}"
        );
        assert_eq!(
            *ledger.calls.lock().expect("lock"),
            vec![1, 3, 1, 1, 1],
            "the failed batch, then each row on its own"
        );
        let mut stored = ledger.serials.lock().expect("lock").clone();
        stored.sort();
        assert_eq!(stored, vec![vec![0x42, 1], vec![0x42, 2], vec![0x42, 3]]);
    }

    #[tokio::test]
    async fn an_unavailable_database_fails_the_batch_at_once() {
        let ledger = Fake {
            down: true,
            ..Fake::default()
        };
        let answers = batch(&ledger, &[1, 2, 3]).await;
        assert!(
            answers.iter().all(|a| matches!(
                a,
                Err(Error::BatchFailed {
                    transient: true,
                    ..
                })
            )),
            "{answers:?}"
        );
        assert!(
            answers
                .iter()
                .all(|a| a.as_ref().is_err_and(Error::is_transient))
        );
        assert_eq!(
            *ledger.calls.lock().expect("lock"),
            vec![3],
            "no row-by-row retry, one timeout for everyone"
        );
    }
}
