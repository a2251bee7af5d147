//! Persisted intermediates: chunks kept in memory up to a byte cap, the rest spilled to a
//! scratch Zarr store in a temporary directory that is removed when the session ends (also
//! after errors; the temporary directory is deleted on drop).

use super::eval::Float;
use super::ExecError;
use crate::graph::{ChunkSource, ReadError};
use crate::store::LocalStore;
use crate::store::{DType, Values, ValuesOf};
use ndarray::{ArrayD, IxDyn, SliceInfoElem};
use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use zarrs::array::codec::ZstdCodec;
use zarrs::array::{Array, ArrayBuilder};
use zarrs::metadata::ChunkKeySeparator;

/// The session's scratch area, created on first use.
pub(crate) struct SpillArea {
    parent: Option<PathBuf>,
    dir: OnceLock<Result<tempfile::TempDir, String>>,
    next: AtomicU64,
}

impl SpillArea {
    pub(crate) fn new(parent: Option<PathBuf>) -> SpillArea {
        SpillArea {
            parent,
            dir: OnceLock::new(),
            next: AtomicU64::new(0),
        }
    }
    fn dir(&self) -> Result<PathBuf, ExecError> {
        let d = self.dir.get_or_init(|| {
            let parent = self.parent.clone().unwrap_or_else(std::env::temp_dir);
            remove_stale(&parent);
            let prefix = format!("{SPILL_PREFIX}{}-{}-", host(), std::process::id());
            let b = tempfile::Builder::new().prefix(&prefix).tempdir_in(&parent);
            let t = b.map_err(|e| e.to_string())?;
            register(t.path());
            Ok(t)
        });
        match d {
            Ok(t) => Ok(t.path().to_path_buf()),
            Err(e) => Err(ExecError::spill(
                self.parent
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| std::env::temp_dir().display().to_string()),
                e.clone(),
            )),
        }
    }
    /// The scratch directory, if created.
    pub(crate) fn path(&self) -> Option<PathBuf> {
        self.dir
            .get()
            .and_then(|d| d.as_ref().ok())
            .map(|t| t.path().to_path_buf())
    }
}

/// Spill directories are named `chunkcube-spill-<host>-<pid>-<random>`, so a later run can
/// tell those whose process died (killed with SIGKILL, which no handler sees) and remove them.
const SPILL_PREFIX: &str = "chunkcube-spill-";

/// This machine's host name, made safe for a file name.
fn host() -> String {
    let name: String = crate::store::lock::host()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

use crate::store::lock::alive;

/// Remove the spill directories under `parent` left by processes of this host that are gone,
/// saying so on stderr (directories of other hosts, on a shared file system, are left alone).
pub(crate) fn remove_stale(parent: &std::path::Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    let mine = format!("{SPILL_PREFIX}{}-", host());
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(&mine) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) && std::fs::remove_dir_all(e.path()).is_ok() {
            eprintln!(
                "removed the spill directory {} left by process {pid}, which is gone",
                e.path().display()
            );
        }
    }
}

impl Drop for SpillArea {
    fn drop(&mut self) {
        if let Some(p) = self.path() {
            unregister(&p);
        }
    }
}

/// Held shared by every spill write and exclusively by the interrupt handler, so it deletes
/// spill directories only when no write is in flight and none can start after.
static SPILL_WRITES: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Spill directories alive in this process, removed by the interrupt handler.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn register(p: &std::path::Path) {
    if let Ok(mut v) = LIVE.lock() {
        v.push(p.to_path_buf());
    }
}

fn unregister(p: &std::path::Path) {
    if let Ok(mut v) = LIVE.lock() {
        v.retain(|x| x != p);
    }
}

/// Remove every live spill directory (called on SIGINT/SIGTERM before exiting).
pub fn remove_live_spill_dirs() {
    let dirs = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Make Ctrl-C and SIGTERM remove spill directories before the process exits: the signals are
/// blocked in every thread and waited for by one thread, which cleans up and exits with 130.
/// Call once at the start of `main`, before other threads start.
pub fn install_interrupt_cleanup() {
    // SAFETY: plain libc calls on a local signal set; sigwait runs in its own thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        std::thread::spawn(move || {
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&set, &mut sig) == 0 {
                // A commit in progress ends first, so what is said below is true.
                let (_no_commit, committed) = crate::store::gate::close();
                let _no_more_writes = SPILL_WRITES.write();
                remove_live_spill_dirs();
                crate::store::lock::release_local();
                if committed.is_empty() {
                    eprintln!(
                        "interrupted: spill directories removed; no output cube was committed"
                    );
                } else {
                    eprintln!(
                        "interrupted after {} was committed (it is complete); spill directories removed",
                        committed.join(", ")
                    );
                }
                libc::_exit(130);
            }
        });
    }
}

/// A persisted intermediate: a chunk grid `chunks` over `shape`, in float32 (float64 for a
/// graph computed in float64), kept in memory up to a byte cap and spilled past it; read back
/// as a [`ChunkSource`] (missing values are NaN).
pub(crate) struct Persisted {
    shape: [u64; 3],
    chunks: [u64; 3],
    dtype: DType,
    mem: Mutex<HashMap<[u64; 3], Arc<Values>>>,
    mem_bytes: AtomicU64,
    mem_cap: u64,
    spill: Mutex<Option<Array<LocalStore>>>,
    spill_area_dir: Result<PathBuf, String>,
    id: u64,
    uid: usize,
    name: String,
    /// What the persisted result's values are (its `cell_methods`): a result written from
    /// it still says which reductions made it.
    attributes: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for Persisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Persisted({:?} in {:?})", self.shape, self.chunks)
    }
}

impl Persisted {
    pub(crate) fn new(
        area: &SpillArea,
        shape: [u64; 3],
        chunks: [u64; 3],
        dtype: DType,
        mem_cap: u64,
    ) -> Result<Persisted, ExecError> {
        let id = area.next.fetch_add(1, Ordering::Relaxed);
        Ok(Persisted {
            shape,
            chunks,
            dtype,
            mem: Mutex::new(HashMap::new()),
            mem_bytes: AtomicU64::new(0),
            mem_cap,
            spill: Mutex::new(None),
            spill_area_dir: area.dir().map_err(|e| e.to_string()),
            id,
            uid: crate::graph::next_uid(),
            name: format!("persisted {id}"),
            attributes: serde_json::Map::new(),
        })
    }

    /// The same, saying what its values are (see [`ChunkSource::attributes`]).
    pub(crate) fn with_attributes(
        mut self,
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> Persisted {
        self.attributes = attributes;
        self
    }

    fn idx(&self, r: &[Range<u64>; 3]) -> [u64; 3] {
        std::array::from_fn(|i| r[i].start / self.chunks[i])
    }

    fn spill_array(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, Option<Array<LocalStore>>>, ExecError> {
        let mut g = self.spill.lock().map_err(|_| ExecError::Cancelled)?;
        if g.is_none() {
            let dir = self
                .spill_area_dir
                .clone()
                .map_err(|m| ExecError::spill("(temp)", m))?;
            let err = |e: String| ExecError::spill(dir.display(), e);
            let store = Arc::new(LocalStore::scratch(&dir).map_err(|e| err(e.to_string()))?);
            let mut b = if self.dtype == DType::F64 {
                ArrayBuilder::new(
                    self.shape.to_vec(),
                    self.chunks.to_vec(),
                    zarrs::array::data_type::float64(),
                    f64::NAN,
                )
            } else {
                ArrayBuilder::new(
                    self.shape.to_vec(),
                    self.chunks.to_vec(),
                    zarrs::array::data_type::float32(),
                    f32::NAN,
                )
            };
            b.bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(1, false))]);
            // Flat chunk files: no directory per chunk row to create and remove.
            b.chunk_key_encoding_default_separator(ChunkKeySeparator::Dot);
            let a = b
                .build(store, &format!("/p{}", self.id))
                .map_err(|e| err(e.to_string()))?;
            *g = Some(a);
        }
        Ok(g)
    }

    /// Store one whole chunk (region aligned to the chunk grid). Returns bytes spilled.
    /// `F` must be this array's element type.
    pub(crate) fn put<F: Float>(
        &self,
        r: &[Range<u64>; 3],
        a: ArrayD<F>,
    ) -> Result<u64, ExecError> {
        if F::DTYPE != self.dtype {
            return Err(ExecError::Invalid(format!(
                "persisting {:?} values into a {:?} array",
                F::DTYPE,
                self.dtype
            )));
        }
        let idx = self.idx(r);
        let n = (a.len() * std::mem::size_of::<F>()) as u64;
        if self.mem_bytes.fetch_add(n, Ordering::Relaxed) + n <= self.mem_cap {
            self.mem
                .lock()
                .map_err(|_| ExecError::Cancelled)?
                .insert(idx, Arc::new(F::wrap(a)));
            return Ok(0);
        }
        self.mem_bytes.fetch_sub(n, Ordering::Relaxed);
        // Pad edge chunks to the full chunk shape, as Zarr stores them.
        let full: Vec<usize> = self.chunks.iter().map(|c| *c as usize).collect();
        let mut padded = ArrayD::<F>::from_elem(IxDyn(&full), F::nan());
        let sl: Vec<SliceInfoElem> = a
            .shape()
            .iter()
            .map(|n| SliceInfoElem::Slice {
                start: 0,
                end: Some(*n as isize),
                step: 1,
            })
            .collect();
        padded.slice_mut(sl.as_slice()).assign(&a);
        let _writing = SPILL_WRITES.read();
        let g = self.spill_array()?;
        let arr = g.as_ref().expect("created");
        arr.store_chunk(&idx, padded)
            .map_err(|e| ExecError::spill("(spill)", e))?;
        Ok(n)
    }
}

impl ChunkSource for Persisted {
    fn attributes(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        Some(&self.attributes)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn shape(&self) -> [u64; 3] {
        self.shape
    }
    fn chunk_shape(&self) -> [u64; 3] {
        self.chunks
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn nodata(&self) -> Option<f64> {
        None
    }
    fn uid(&self) -> usize {
        self.uid
    }
    fn chunk_key(&self, idx: [u64; 3]) -> String {
        format!("p{}/c.{}.{}.{}", self.id, idx[0], idx[1], idx[2])
    }
    /// A chunk kept in memory (an edge chunk only as large as the array), or read back from
    /// the spill store (full chunk shape).
    fn read_chunk(&self, idx: [u64; 3]) -> Result<Arc<Values>, ReadError> {
        let fail = |e: String| ReadError::new("persisted result", self.chunk_key(idx), e);
        if let Some(a) = self
            .mem
            .lock()
            .map_err(|_| fail("poisoned".into()))?
            .get(&idx)
        {
            return Ok(a.clone());
        }
        let g = self.spill_array().map_err(|e| fail(e.to_string()))?;
        let arr = g.as_ref().expect("created");
        let v = if self.dtype == DType::F64 {
            arr.retrieve_chunk::<ArrayD<f64>>(&idx).map(Values::from)
        } else {
            arr.retrieve_chunk::<ArrayD<f32>>(&idx).map(Values::from)
        };
        v.map(Arc::new).map_err(|e| fail(e.to_string()))
    }
    fn is_persisted(&self) -> bool {
        true
    }
}

/// A scratch array in the spill area for one rechunking (e.g. the time stacks of a median),
/// removed when dropped.
pub(crate) struct ScratchArray {
    array: Array<LocalStore>,
    dir: PathBuf,
}

impl SpillArea {
    /// A new scratch array of `T` of `shape` in `chunks`.
    pub(crate) fn scratch<T: ValuesOf>(
        &self,
        shape: [u64; 3],
        chunks: [u64; 3],
    ) -> Result<ScratchArray, ExecError> {
        let base = self.dir()?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("s{n}"));
        let err = |m: String| ExecError::spill(dir.display(), m);
        std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
        let store = Arc::new(LocalStore::scratch(&dir).map_err(|e| err(e.to_string()))?);
        // Every chunk is written whole, so the fill value is never read back.
        let mut b = ArrayBuilder::new(
            shape.to_vec(),
            chunks.to_vec(),
            T::DTYPE.to_zarrs(),
            zarrs::array::FillValue::new(vec![0u8; std::mem::size_of::<T>()]),
        );
        b.chunk_key_encoding_default_separator(ChunkKeySeparator::Dot);
        // Uncompressed: spill data is read back once, soon, usually from the page cache.
        let array = b.build(store, "/a").map_err(|e| err(e.to_string()))?;
        Ok(ScratchArray { array, dir })
    }
}

impl ScratchArray {
    /// Store the chunk at `idx` from its values in C order (an edge chunk is padded with
    /// `pad` to the full chunk shape). Returns the bytes written (decoded size).
    pub(crate) fn put_chunk<T: crate::store::Element>(
        &self,
        idx: [u64; 3],
        mut v: Vec<T>,
        pad: T,
    ) -> Result<u64, ExecError> {
        let shape = self
            .array
            .chunk_shape(&idx)
            .map_err(|e| ExecError::spill(self.dir.display(), e))?;
        let shape: Vec<usize> = shape.iter().map(|v| v.get() as usize).collect();
        v.resize(shape.iter().product(), pad);
        let n = (v.len() * std::mem::size_of::<T>()) as u64;
        let a = ArrayD::from_shape_vec(IxDyn(&shape), v)
            .map_err(|e| ExecError::Invalid(e.to_string()))?;
        let _writing = SPILL_WRITES.read();
        self.array
            .store_chunk(&idx, a)
            .map_err(|e| ExecError::spill(self.dir.display(), e))?;
        Ok(n)
    }

    /// Read a block back.
    pub(crate) fn get<T: crate::store::Element>(
        &self,
        r: &[Range<u64>; 3],
    ) -> Result<ArrayD<T>, ExecError> {
        let subset = zarrs::array::ArraySubset::new_with_ranges(r);
        self.array
            .retrieve_array_subset::<ArrayD<T>>(&subset)
            .map_err(|e| ExecError::spill(self.dir.display(), e))
    }
}

impl Drop for ScratchArray {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
