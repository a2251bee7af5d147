//! Local directories as stores. zarrs' `FilesystemStore` syncs every file it writes to disk
//! before returning, so each chunk costs a wait on the disk (a third of a large NDVI's write
//! time). This layer chooses per store: a resumable ingest keeps that (a resumed run trusts the
//! chunks it finds); results written from scratch start each file's writeback and are synced
//! once, just before their commit point (so a committed cube never has chunks lost to a
//! crash); scratch data, which dies with the process, is never synced.

use std::path::{Path, PathBuf};
use zarrs::filesystem::FilesystemStore;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    AtomicRenameStorageTraits, Bytes, ListableStorageTraits, MaybeBytesIterator,
    OffsetBytesIterator, ReadableStorageTraits, StorageError, StoreKey, StoreKeys,
    StoreKeysPrefixes, StorePrefix, WritableStorageTraits,
};

/// A filesystem store whose writes are durable only after [`LocalStore::sync`].
#[derive(Debug)]
pub struct LocalStore {
    fs: FilesystemStore,
    root: PathBuf,
    /// What a write does beyond the page cache.
    mode: WriteMode,
}

/// How durable a write is when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteMode {
    /// Synced to disk (as zarrs' `FilesystemStore` does).
    Durable,
    /// Writeback started, not waited for; durable after [`LocalStore::sync`].
    Deferred,
    /// Left to the kernel (scratch data, usually deleted before it would reach the disk).
    Scratch,
}

impl LocalStore {
    /// A store for a cube rooted at `dir`, durable once [`LocalStore::sync`] returns.
    pub fn new(dir: &Path) -> Result<LocalStore, StorageError> {
        Self::open(dir, WriteMode::Deferred)
    }

    /// A store whose every write is on disk when it returns.
    pub fn durable(dir: &Path) -> Result<LocalStore, StorageError> {
        Self::open(dir, WriteMode::Durable)
    }

    /// A store for scratch data rooted at `dir`.
    pub fn scratch(dir: &Path) -> Result<LocalStore, StorageError> {
        Self::open(dir, WriteMode::Scratch)
    }

    fn open(dir: &Path, mode: WriteMode) -> Result<LocalStore, StorageError> {
        let fs = FilesystemStore::new(dir).map_err(|e| StorageError::Other(e.to_string()))?;
        Ok(LocalStore {
            fs,
            root: dir.to_path_buf(),
            mode,
        })
    }

    /// Flush everything written so far to disk: one `syncfs` of the filesystem holding the
    /// store, instead of one `fsync` per chunk while workers wait.
    pub fn sync(&self) -> Result<(), StorageError> {
        sync_dir(&self.root)
    }
}

/// Start writing a file's pages back now, without waiting, so the sync before a commit finds
/// little left to flush.
pub(crate) fn start_writeback(f: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor; the call only schedules writeback of its pages.
        unsafe {
            libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}

/// Ask the kernel to read the files `keys` under `root` into the page cache now, without
/// waiting (`POSIX_FADV_WILLNEED`), so workers that read them next find them there instead of
/// waiting on the disk one chunk at a time. Missing files are left for their read to report.
/// On a thread of its own: opening a cold file waits for its inode, and queueing the reads
/// can wait for the disk's queue, which would stall the worker that announced them (one
/// worker ran 1.5x the other's time in issue 18's `max:time` when it advised inline).
pub(crate) fn advise_willneed(root: &Path, keys: Vec<String>) {
    #[cfg(target_os = "linux")]
    {
        let root = root.to_path_buf();
        let _ = std::thread::Builder::new()
            .name("chunkcube-readahead".into())
            .spawn(move || {
                use std::os::fd::AsRawFd;
                for key in keys {
                    if let Ok(f) = std::fs::File::open(root.join(key)) {
                        // SAFETY: a valid descriptor for the call; the advice only schedules
                        // reads into the page cache.
                        unsafe {
                            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED);
                        }
                    }
                }
            });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (root, keys);
}

/// Flush the filesystem holding `dir` to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let f = std::fs::File::open(dir)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs takes a valid open descriptor, which `f` holds for the call.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    #[cfg(not(target_os = "linux"))]
    f.sync_all()?;
    Ok(())
}

impl ReadableStorageTraits for LocalStore {
    fn get(&self, key: &StoreKey) -> Result<Option<Bytes>, StorageError> {
        self.fs.get(key)
    }
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.fs.get_partial_many(key, byte_ranges)
    }
    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.fs.size_key(key)
    }
    fn supports_get_partial(&self) -> bool {
        self.fs.supports_get_partial()
    }
}

impl WritableStorageTraits for LocalStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let path = self.fs.key_to_fspath(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if self.mode == WriteMode::Durable {
            return self.fs.set(key, value);
        }
        let mut f = std::fs::File::create(&path)?;
        std::io::Write::write_all(&mut f, &value)?;
        if self.mode == WriteMode::Deferred {
            start_writeback(&f);
        }
        Ok(())
    }
    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        self.fs.set_partial_many(key, offset_values)
    }
    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.fs.erase(key)
    }
    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.fs.erase_prefix(prefix)
    }
    fn supports_set_partial(&self) -> bool {
        self.fs.supports_set_partial()
    }
}

impl ListableStorageTraits for LocalStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.fs.list()
    }
    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.fs.list_prefix(prefix)
    }
    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.fs.list_dir(prefix)
    }
    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.fs.size_prefix(prefix)
    }
}

impl AtomicRenameStorageTraits for LocalStore {
    fn rename(&self, source: &StoreKey, destination: &StoreKey) -> Result<(), StorageError> {
        self.fs.rename(source, destination)
    }
}
