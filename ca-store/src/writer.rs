//! Group commit: one task owns all certificate inserts ([`LedgerWriter`]); another batches ACME
//! nonce redemptions ([`NonceRedeemer`]).
//!
//! Callers hand a row to [`LedgerWriter::record`] and wait. The task takes every row queued while
//! the previous transaction was committing and writes them in one transaction, so under load many
//! certificates share one fsync, and at low load a lone row is committed at once (no linger).
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

async fn run(ledger: Arc<dyn Ledger>, mut rx: mpsc::Receiver<Message>) {
    let mut rows = Vec::with_capacity(64);
    let mut waiters = Vec::with_capacity(64);
    let mut closing = false;
    while !closing {
        let Some(first) = rx.recv().await else { break };
        let mut next = Some(first);
        while let Some(message) = next.take() {
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

/// Batches ACME nonce redemptions: every JWS request redeems one nonce, so under load one
/// `INSERT … ON CONFLICT DO NOTHING RETURNING` serves many requests instead of one write each.
/// Same rules as [`LedgerWriter`]: no linger, each caller answered after its batch commits.
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
