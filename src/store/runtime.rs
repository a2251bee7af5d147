//! The process-wide tokio runtime that drives object-store I/O (and anything else async in
//! the process), and the adapter that lets sync code block on it.

use std::sync::OnceLock;
use zarrs::storage::storage_adapter::async_to_sync::AsyncToSyncBlockOn;

/// The process-wide tokio runtime (two I/O threads, started on first use).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chunkcube-io")
            .enable_all()
            .build()
            .expect("the tokio runtime must start")
    })
}

/// Blocks a (rayon or main) thread on a future driven by [`runtime`].
#[derive(Clone, Copy)]
pub struct TokioBlockOn;

impl AsyncToSyncBlockOn for TokioBlockOn {
    fn block_on<F: core::future::Future>(&self, future: F) -> F::Output {
        runtime().handle().block_on(future)
    }
}
