//! Running library work from Python: on its own thread with the GIL released, while the
//! calling thread polls for signals (Ctrl-C interrupts the session: tasks stop, nothing is
//! committed) and reports progress to a Python callback.

use chunkcube::exec::Session;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
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
            if let Err(e) = py.check_signals() {
                // Ctrl-C: stop the session's runs, wait for the running tasks to end.
                session.interrupt();
                let _ = py.detach(move || rx.recv());
                break Err(e);
            }
            if let Some(cb) = progress {
                let p = session.progress();
                if let Err(e) = cb.call1((p.done - before.done, p.planned - before.planned, false))
                {
                    session.interrupt();
                    let _ = py.detach(move || rx.recv());
                    break Err(e);
                }
            }
        };
        let _ = worker.join();
        // The final state, also of runs too quick to have been polled (the callback decides
        // whether a bar that never showed is worth showing).
        let p = session.progress();
        if let (Some(cb), true) = (progress, result.is_ok() && p.planned > before.planned) {
            cb.call1((p.done - before.done, p.planned - before.planned, true))?;
        }
        result
    })
}
