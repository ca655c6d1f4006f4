//! Where plans execute: a tokio runtime of the engine's own, apart from the one that serves
//! requests. DataFusion's operators run CPU-bound between awaits and write spills with blocking
//! calls; on the request runtime a rollup build or a heavy query would hold every worker, and
//! `/healthz`, the catalog status and cached answers would wait behind it. Here they only share
//! the cores, which the kernel divides fairly.
//!
//! A plan runs as a task on this runtime; the caller awaits it through [`run`], and dropping
//! that future (a query past its budget, a build cancelled, a client gone) aborts the task, so
//! its streams are dropped and its memory returns to the pool at once.

use std::future::Future;
use std::sync::OnceLock;

use super::EngineError;

/// One runtime for the process: every data state and service shares the cores anyway.
fn handle() -> &'static tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("kpilens-engine")
                .enable_all()
                .build()
                .expect("the engine's runtime starts")
        })
        .handle()
}

/// Runs `work` on the engine's runtime; dropping the returned future cancels it.
pub(super) async fn run<T: Send + 'static>(
    work: impl Future<Output = Result<T, EngineError>> + Send + 'static,
) -> Result<T, EngineError> {
    let mut task = AbortOnDrop(handle().spawn(work));
    match (&mut task.0).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(EngineError::Failed(format!(
            "the engine's task panicked: {}",
            panic_message(e.into_panic())
        ))),
        Err(e) => Err(EngineError::Failed(format!(
            "the engine's task was cancelled: {e}"
        ))),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// A task that is aborted when its handle is dropped before it finished.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
