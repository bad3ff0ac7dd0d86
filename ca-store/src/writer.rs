//! Group commit: one task owns all certificate inserts.
//!
//! Callers hand a row to [`LedgerWriter::record`] and wait. The task takes every row queued while
//! the previous transaction was committing and writes them in one transaction, so under load many
//! certificates share one fsync, and at low load a lone row is committed at once (no linger).
//! A caller is answered only after *its* row is committed; if a batch fails, its rows are retried
//! one by one so each caller gets its own answer (one duplicate serial does not fail the others).

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
        let task = tokio::spawn(run(ledger, rx));
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
