//! Polling instead of sleeping: a test that waits for something to happen asks again until it
//! has, up to a generous deadline, and fails naming what never happened. Deadlines are long
//! (a loaded 2-core CI machine is slow); a passing test returns as soon as the state is reached.

use std::future::Future;
use std::time::{Duration, Instant};

/// Calls `f` every `every` until it returns `Some`, for at most `limit`; panics with `what`.
pub fn until<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(every);
    }
}

/// [`until`] for async checks.
pub async fn until_async<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(every).await;
    }
}
