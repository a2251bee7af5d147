//! How a session runs: threads, memory limit, spill directory, store options; and the
//! allocator tuning that makes the process's memory follow the limit.

use std::path::PathBuf;

/// How a session runs.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// Memory limit in bytes for everything the session tracks.
    pub memory_limit: u64,
    /// No progress bar.
    pub quiet: bool,
    /// Where to spill (default: the system temp dir).
    pub spill_dir: Option<PathBuf>,
    /// Store options for cubes opened in this session (on-disk cache of remote chunks).
    pub store: crate::store::StoreOptions,
    /// Report progress, memory and the task stream here as the session works (`--dashboard`).
    pub live: Option<std::sync::Arc<crate::progress::LiveStatus>>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        // A quarter of RAM, at most 8 GiB: room for the OS, GDAL and the user's other work.
        ExecConfig {
            threads: 0,
            memory_limit: (total_memory() / 4).min(8 << 30),
            quiet: true,
            spill_dir: None,
            store: Default::default(),
            live: None,
        }
    }
}

/// Tune glibc's allocator for chunk work under `limit` (the command line does this once at
/// start, before any thread; a program using the library may do the same). Buffers above an
/// eighth of the limit (4 to 32 MiB) go to mmap and back to the OS when freed, so under a
/// tight limit RSS follows the budget rather than the heap's high-water; under a roomy one
/// chunk-sized buffers are recycled from the heap instead of being page-faulted in afresh by
/// every task (a quarter of the time of a large NDVI).
pub fn tune_allocator(limit: u64) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator (glibc serialises it against allocations).
    unsafe {
        let t = (limit / 8).clamp(4 << 20, 32 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, t as libc::c_int);
        // Setting the threshold also freezes glibc's trim threshold at 128 KiB. Keep up to
        // half the limit (at most 256 MiB) of free heap before giving it back: with less, the
        // frees at the end of each task shrink the heap and every task faults its pages in
        // again (an NDVI under 64 MiB spent 7 s of 17 in page faults with 16 MiB).
        let trim = (limit / 2).clamp(2 * t, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim as libc::c_int);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = limit;
}

/// Total physical memory, from /proc/meminfo (fallback 4 GiB).
pub fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(4 << 30)
}
