//! Where plans execute: a tokio runtime of the engine's own, apart from the one that serves
//! requests. DataFusion's operators run CPU-bound between awaits and write spills with blocking
//! calls; on the request runtime a rollup build or a heavy query would hold every worker, and
//! `/healthz`, the catalog status and cached answers would wait behind it. Here they only share
//! the cores, and the engine's threads give way: they run at a lower priority (see
//! [`give_way`]).
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
                .on_thread_start(give_way)
                .enable_all()
                .build()
                .expect("the engine's runtime starts")
        })
        .handle()
}

/// Lowers the calling thread's priority to nice 10: under Linux's fair scheduler its weight is
/// about a tenth of a default thread's, so while a build holds every core the request runtime's
/// threads (`/healthz`, the status, cached answers) still run at once, and the engine keeps the
/// cores nobody else wants. Lowering one's own priority needs no privilege.
fn give_way() {
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value is per thread, and `who = 0` is the calling thread.
        // SAFETY: setpriority takes plain integers and touches no memory of ours.
        let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
        if done != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "the engine thread keeps its priority");
        }
    }
}

/// Runs `work` on the engine's runtime; dropping the returned future cancels it.
pub(super) async fn run<T: Send + 'static>(
    work: impl Future<Output = Result<T, EngineError>> + Send + 'static,
) -> Result<T, EngineError> {
    let mut task = AbortOnDrop(handle().spawn(work));
    (&mut task.0).await.map_err(unfinished)?
}

/// Runs CPU-bound work that is not a plan (encoding an export) on the engine's blocking threads,
/// which give way to the request runtime as its workers do.
pub async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EngineError> {
    handle().spawn_blocking(work).await.map_err(unfinished)
}

/// Why an engine task gave no result: it panicked (with its message) or was cancelled.
fn unfinished(e: tokio::task::JoinError) -> EngineError {
    if !e.is_panic() {
        return EngineError::failed(format!("the engine's task was cancelled: {e}"));
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    EngineError::failed(format!("the engine's task panicked: {message}"))
}

/// A task that is aborted when its handle is dropped before it finished.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
