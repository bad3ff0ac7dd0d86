//! Bounds that keep memory and latency finite however many clients come: open connections per
//! listener, time to send a request's headers (slow-loris), HTTP/2 streams per connection, and
//! requests being handled at once. Beyond the connection cap a new connection is closed at once;
//! beyond the in-flight cap a protocol request is answered 503 with `Retry-After`, in its own
//! protocol's error form, without being handled.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[limits]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open connections per listener; more are closed as they arrive.
    pub max_connections: usize,
    /// ACME and Vault requests handled at once; more are answered 503 + `Retry-After`.
    pub max_in_flight: usize,
    /// Time a client has to send a request's headers, and the longest an idle keep-alive
    /// connection stays open.
    #[serde(with = "crate::duration::serde_duration")]
    pub header_read_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_in_flight: 512,
            header_read_timeout: Duration::from_secs(10),
            max_concurrent_streams: 128,
        }
    }
}

/// The shared count of protocol requests being handled.
#[derive(Debug, Clone)]
pub struct InFlight(Arc<Semaphore>);

impl InFlight {
    /// Room for `max` requests at once.
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max.max(1))))
    }

    fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.0).try_acquire_owned().ok()
    }
}

/// What a protocol answers when the server is full.
pub type Busy = fn() -> Response;

/// Middleware: handles the request if there is room, else answers `busy` at once.
pub async fn shed(
    State((limit, busy)): State<(InFlight, Busy)>,
    request: Request,
    next: Next,
) -> Response {
    match limit.try_enter() {
        Some(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        None => {
            tracing::debug!(path = %request.uri().path(), "server busy: request shed");
            busy()
        }
    }
}
