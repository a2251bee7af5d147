//! The commit point and interrupts. A run interrupted by Ctrl-C or SIGTERM must say truly
//! whether its output was committed: the interrupt handler waits for a commit in progress
//! (writing the group metadata, swapping an overwrite in) to end, then reports what it did.
//! Without the gate a signal arriving just after the swap was reported as "no output cube was
//! committed" while the new cube was in place.

use std::sync::{Mutex, RwLock, RwLockWriteGuard};

/// Held shared by every commit section, exclusively by the interrupt handler.
static GATE: RwLock<()> = RwLock::new(());
/// The outputs this process has committed (URLs).
static COMMITTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Run `commit`, the step that makes the output at `url` complete, so an interrupt waits for it
/// to end; on success `url` is recorded as committed.
pub fn committing<T, E>(url: &str, commit: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let _section = GATE.read().unwrap_or_else(|e| e.into_inner());
    let r = commit();
    if r.is_ok() {
        if let Ok(mut v) = COMMITTED.lock() {
            v.push(url.to_string());
        }
    }
    r
}

/// For the interrupt handler: waits for a commit in progress, keeps any from starting while the
/// guard is held, and returns the outputs this process has committed.
pub fn close() -> (RwLockWriteGuard<'static, ()>, Vec<String>) {
    let g = GATE.write().unwrap_or_else(|e| e.into_inner());
    let done = COMMITTED.lock().map(|v| v.clone()).unwrap_or_default();
    (g, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_successful_commits_are_recorded_and_close_waits_for_a_section() {
        let _: Result<(), ()> = committing("a", || Err(()));
        let _: Result<(), ()> = committing("b", || Ok(()));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            committing::<(), ()>("c", || {
                started_tx.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(100));
                Ok(())
            })
        });
        started_rx.recv().unwrap();
        // Taken while "c" commits: must wait for it and see it.
        let (_g, done) = close();
        assert!(done.contains(&"b".to_string()) && done.contains(&"c".to_string()));
        assert!(!done.contains(&"a".to_string()));
        drop(_g);
        t.join().unwrap().unwrap();
    }
}
