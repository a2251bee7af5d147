//! Running library work from Python: on its own thread with the GIL released, while the
//! calling thread polls for signals (Ctrl-C stops the work: tasks stop, nothing is
//! committed) and reports progress to a Python callback.

use chunkcube::exec::Session;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// How often the caller wakes to check signals and show progress.
const POLL: Duration = Duration::from_millis(100);

/// Run `f` off the GIL. `progress(done, total)` is called from the calling thread while `f`
/// runs, with the tasks of `session` done and planned since the call began.
pub(crate) fn blocking<T, F>(
    py: Python<'_>,
    session: &Arc<Session>,
    progress: Option<&Bound<'_, PyAny>>,
    f: F,
) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let before = session.progress();
    let tick = || -> PyResult<()> {
        if let Some(cb) = progress {
            let p = session.progress();
            cb.call1((p.done - before.done, p.planned - before.planned, false))?;
        }
        Ok(())
    };
    // Ctrl-C: stop the session's runs.
    let result = watch(py, || session.interrupt(), tick, f);
    // The final state, also of runs too quick to have been polled (the callback decides
    // whether a bar that never showed is worth showing).
    let p = session.progress();
    if let (Some(cb), true) = (progress, result.is_ok() && p.planned > before.planned) {
        cb.call1((p.done - before.done, p.planned - before.planned, true))?;
    }
    result
}

/// Run `f` off the GIL, stoppable through `cancel` (which `f` checks): Ctrl-C sets it, waits
/// for `f` to stop and raises `KeyboardInterrupt`. `tick` is called every [`POLL`] while `f`
/// runs (progress).
pub(crate) fn cancellable<T, F>(
    py: Python<'_>,
    cancel: &Arc<AtomicBool>,
    tick: impl FnMut() -> PyResult<()>,
    f: F,
) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    watch(py, || cancel.store(true, Ordering::SeqCst), tick, f)
}

/// Run `f` on a worker thread with the GIL released; every [`POLL`] the calling thread
/// checks for signals and calls `tick`. A signal's exception (or `tick`'s) calls `stop`,
/// waits for `f` to return and is raised.
fn watch<T, F>(
    py: Python<'_>,
    stop: impl Fn(),
    mut tick: impl FnMut() -> PyResult<()>,
    f: F,
) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|sc| {
        let (tx, mut rx) = mpsc::channel();
        let worker = sc.spawn(move || {
            let _ = tx.send(f());
        });
        let result = loop {
            // The receiver goes to the GIL-free closure and back (it is Send, not Sync).
            let (got, back) = py.detach(move || (rx.recv_timeout(POLL), rx));
            rx = back;
            match got {
                Ok(v) => break Ok(v),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(PyRuntimeError::new_err(
                        "chunkcube: a worker thread panicked",
                    ))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Err(e) = py.check_signals().and_then(|_| tick()) {
                stop();
                // What ran stops at its next check; its result (an interruption) goes.
                let _ = py.detach(move || rx.recv());
                break Err(e);
            }
        };
        let _ = worker.join();
        result
    })
}
