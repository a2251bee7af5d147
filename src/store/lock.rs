//! One writer per output: a lock object beside the cube, created only if absent.
//!
//! Two runs writing one `--out` at once would interleave chunks of two different results and
//! the later commit would declare the mix complete. The lock is `<out>.chunkcube-lock` (a
//! sibling, so clearing the cube for `--overwrite` never removes it): created with `O_EXCL`
//! locally (written whole, then hard-linked into place) and with a conditional put (`If-None-Match: *`) on S3. It records host, pid and
//! start time, and is refreshed every [`HEARTBEAT`] while held; a lock whose process is gone
//! (same host) or whose refresh is older than [`STALE_AFTER`] is stale and taken over, saying so.
//! Released (deleted) when the guard drops.

use super::{Location, StoreError};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often a held lock is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// A lock not refreshed for this long belongs to a dead writer.
pub const STALE_AFTER: Duration = Duration::from_secs(300);
const SUFFIX: &str = ".chunkcube-lock";

enum Target {
    Local(PathBuf),
    S3(Arc<dyn ObjectStore>, ObjectPath),
}

impl Target {
    /// Which lock object this is (for sharing it within a thread).
    fn name(&self) -> String {
        match self {
            Target::Local(p) => p.display().to_string(),
            Target::S3(s, k) => format!("{s}/{k}"),
        }
    }
}

/// A held writer lock; dropping it releases the lock. Taken again by the thread holding it
/// (the command line locks before planning, the library writer it calls locks again), the
/// same lock is shared and released when the last guard drops.
pub struct WriterLock {
    held: Arc<Held>,
}

struct Held {
    target: Arc<Target>,
    url: String,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriterLock({})", self.held.url)
    }
}

/// The locks this process holds: (lock object, holding thread).
type HeldLocks = Vec<(String, std::thread::ThreadId, std::sync::Weak<Held>)>;
static HELD: std::sync::Mutex<HeldLocks> = std::sync::Mutex::new(Vec::new());

/// This machine's host name as the kernel reports it (empty if unknown). Shared with the
/// spill directories' names, which mark their owner the same way.
pub(crate) fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    }
}

/// Whether process `pid` exists on this machine.
pub(crate) fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn body() -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    serde_json::to_vec(&serde_json::json!({
        "host": host(), "pid": std::process::id(), "started": now,
    }))
    .unwrap_or_default()
}

/// Why an existing lock is stale, or None if its writer may still be running.
fn stale(content: &[u8], age: Duration) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(content).unwrap_or_default();
    let pid = v.get("pid").and_then(|p| p.as_u64());
    let same_host = v.get("host").and_then(|h| h.as_str()) == Some(host().as_str());
    match pid {
        Some(pid) if same_host && !alive(pid as u32) => Some(format!("its process {pid} is gone")),
        _ if age > STALE_AFTER => Some(format!("it was last refreshed {} s ago", age.as_secs())),
        None => Some("it is unreadable".into()),
        _ => None,
    }
}

impl Target {
    /// Create the lock if absent: Ok(true) created, Ok(false) it exists.
    fn create(&self) -> std::io::Result<bool> {
        match self {
            Target::Local(p) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                // Written whole beside it, then linked into place: link(2) fails if the lock
                // exists (as O_EXCL), and a reader never sees a lock without its content.
                let tmp = PathBuf::from(format!("{}.{}.tmp", p.display(), std::process::id()));
                std::fs::write(&tmp, body())?;
                let r = std::fs::hard_link(&tmp, p);
                let _ = std::fs::remove_file(&tmp);
                match r {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Target::S3(store, key) => {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                match super::runtime().block_on(store.put_opts(key, body().into(), opts)) {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::AlreadyExists { .. })
                    | Err(object_store::Error::Precondition { .. }) => Ok(false),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                }
            }
        }
    }

    /// The existing lock's content and age.
    fn read(&self) -> std::io::Result<Option<(Vec<u8>, Duration)>> {
        match self {
            Target::Local(p) => match std::fs::read(p) {
                Ok(b) => {
                    let age = std::fs::metadata(p)?
                        .modified()?
                        .elapsed()
                        .unwrap_or_default();
                    Ok(Some((b, age)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            Target::S3(store, key) => {
                let r = super::runtime().block_on(async {
                    let g = store.get(key).await?;
                    let modified = g.meta.last_modified;
                    let b = g.bytes().await?;
                    Ok::<_, object_store::Error>((b.to_vec(), modified))
                });
                match r {
                    Ok((b, m)) => {
                        let age = (chrono_now() - m.timestamp()).max(0) as u64;
                        Ok(Some((b, Duration::from_secs(age))))
                    }
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                }
            }
        }
    }

    /// Refresh (heartbeat) or remove.
    fn write(&self) {
        match self {
            Target::Local(p) => {
                let _ = std::fs::write(p, body());
            }
            Target::S3(store, key) => {
                let _ = super::runtime().block_on(store.put(key, body().into()));
            }
        }
    }
    fn remove(&self) {
        match self {
            Target::Local(p) => {
                let _ = std::fs::remove_file(p);
            }
            Target::S3(store, key) => {
                let _ = super::runtime().block_on(store.delete(key));
            }
        }
    }
}

fn chrono_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Take the writer lock of output `url`, or fail naming the writer that holds it.
pub fn acquire(url: &str) -> Result<WriterLock, StoreError> {
    let target = match Location::parse(url)? {
        Location::Local(p) => {
            let p = PathBuf::from(p.to_string_lossy().trim_end_matches('/').to_string());
            Target::Local(PathBuf::from(format!("{}{SUFFIX}", p.display())))
        }
        Location::S3 { bucket, prefix } => {
            let store = super::remote::s3::object_store_for(url, &bucket)?;
            Target::S3(
                store,
                ObjectPath::from(format!("{}{SUFFIX}", prefix.trim_end_matches('/'))),
            )
        }
    };
    let name = target.name();
    let me = std::thread::current().id();
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    held.retain(|(_, _, w)| w.strong_count() > 0);
    if let Some(h) = held
        .iter()
        .find(|(n, t, _)| *n == name && *t == me)
        .and_then(|(_, _, w)| w.upgrade())
    {
        return Ok(WriterLock { held: h });
    }
    let io = |e: std::io::Error| StoreError::Io {
        url: url.to_string(),
        key: SUFFIX.trim_start_matches('.').to_string(),
        msg: e.to_string(),
    };
    for _ in 0..3 {
        if target.create().map_err(io)? {
            let target = Arc::new(target);
            let stop = Arc::new(AtomicBool::new(false));
            let (t, s) = (target.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut slept = Duration::ZERO;
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    slept += Duration::from_millis(200);
                    if slept >= HEARTBEAT && !s.load(Ordering::Relaxed) {
                        t.write();
                        slept = Duration::ZERO;
                    }
                }
            });
            let h = Arc::new(Held {
                target,
                url: url.to_string(),
                stop,
            });
            held.push((name, me, Arc::downgrade(&h)));
            return Ok(WriterLock { held: h });
        }
        let Some((content, age)) = target.read().map_err(io)? else {
            continue; // released meanwhile: try again
        };
        match stale(&content, age) {
            Some(why) => {
                eprintln!("note: removing the stale writer lock of {url} ({why})");
                target.remove();
            }
            None => {
                let v: serde_json::Value = serde_json::from_slice(&content).unwrap_or_default();
                return Err(StoreError::Locked {
                    url: url.to_string(),
                    holder: format!(
                        "pid {} on {}",
                        v.get("pid").and_then(|p| p.as_u64()).unwrap_or(0),
                        v.get("host").and_then(|h| h.as_str()).unwrap_or("?")
                    ),
                });
            }
        }
    }
    Err(StoreError::Locked {
        url: url.to_string(),
        holder: "another writer (the lock keeps reappearing)".into(),
    })
}

/// Release the local locks this process holds (for the interrupt handler, which exits without
/// running destructors): the next run then starts without a stale-lock note. Locks on S3 are
/// left to go stale: a network call could hold up the exit.
pub fn release_local() {
    let held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    for h in held.iter().filter_map(|(_, _, w)| w.upgrade()) {
        if let Target::Local(_) = *h.target {
            h.stop.store(true, Ordering::Relaxed);
            h.target.remove();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.target.remove();
    }
}
