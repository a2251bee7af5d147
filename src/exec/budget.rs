//! The memory budget: every task reserves its buffers before it fetches; reservations block
//! while the budget is exhausted, so the tracked total never exceeds the limit. The chunk
//! cache may grow to its share at any moment after a reservation was granted, so reservations
//! leave room for the whole share, not only for what the cache holds now.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

/// A byte budget shared by all tasks of a session.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: Mutex<u64>,
    cv: Condvar,
    peak: AtomicU64,
    external: AtomicU64,
    /// The most `external` may grow to (the cache's share of the limit).
    external_cap: u64,
    held: AtomicU64,
}

/// A reservation; released on drop.
pub struct Reservation<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Ok(mut u) = self.budget.used.lock() {
            *u -= self.bytes;
        }
        self.budget.cv.notify_all();
    }
}

impl Budget {
    /// A budget of `limit` bytes, of which memory held outside reservations (the chunk cache)
    /// may take up to `external_cap`.
    pub fn new(limit: u64, external_cap: u64) -> Budget {
        Budget {
            limit,
            external_cap,
            used: Mutex::new(0),
            cv: Condvar::new(),
            peak: AtomicU64::new(0),
            external: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }
    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
    /// Reserve `bytes`, waiting until they fit. A request larger than the whole limit is
    /// granted alone (planning rejects such tasks before execution starts).
    pub fn reserve(&self, bytes: u64) -> Reservation<'_> {
        let mut u = self.used.lock().unwrap_or_else(|e| e.into_inner());
        // The planner guarantees one task fits beside the full cache, so the first
        // reservation never waits; the others wait for room.
        while *u > 0 && *u + bytes + self.room_outside() > self.limit {
            u = self.cv.wait(u).unwrap_or_else(|e| e.into_inner());
        }
        *u += bytes;
        self.note_peak(*u);
        Reservation {
            budget: self,
            bytes,
        }
    }
    /// Account memory held outside reservations (the chunk cache).
    pub fn set_external(&self, bytes: u64) {
        self.external.store(bytes, Ordering::Relaxed);
        let u = self.used.lock().map(|u| *u).unwrap_or(0);
        self.note_peak(u);
    }
    /// Account bytes held past a task (persisted chunks kept in memory).
    pub fn add_held(&self, bytes: u64) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        let u = self.used.lock().map(|u| *u).unwrap_or(0);
        self.note_peak(u);
    }
    /// Stop accounting bytes added with [`Budget::add_held`] (their holder let go of them).
    pub fn release_held(&self, bytes: u64) {
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some(h.saturating_sub(bytes))
            });
        self.cv.notify_all();
    }
    /// What reservations must leave free: the cache's whole share and the held bytes.
    fn room_outside(&self) -> u64 {
        self.external.load(Ordering::Relaxed).max(self.external_cap)
            + self.held.load(Ordering::Relaxed)
    }
    fn outside(&self) -> u64 {
        self.external.load(Ordering::Relaxed) + self.held.load(Ordering::Relaxed)
    }
    fn note_peak(&self, used: u64) {
        let total = used + self.outside();
        self.peak.fetch_max(total, Ordering::Relaxed);
    }
    /// Tracked bytes now: reservations, the cache and held results (takes the budget's lock
    /// briefly; for watchers, not for tasks).
    pub fn in_use(&self) -> u64 {
        self.used.lock().map(|u| *u).unwrap_or(0) + self.outside()
    }
    /// High-water mark of reserved + external bytes.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}
