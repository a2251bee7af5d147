//! A local store for scratch data (spilled intermediates). zarrs' `FilesystemStore` syncs every
//! write to disk; scratch data dies with the process, so that flush buys nothing and costs a
//! disk round trip per chunk. This layer writes plain files and delegates everything else.

use std::path::Path;
use zarrs::filesystem::FilesystemStore;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, WritableStorageTraits,
};

/// A filesystem store without durability, for data that lives only as long as the process.
#[derive(Debug)]
pub struct ScratchStore {
    fs: FilesystemStore,
}

impl ScratchStore {
    /// A scratch store rooted at `dir`.
    pub fn new(dir: &Path) -> Result<ScratchStore, StorageError> {
        let fs = FilesystemStore::new(dir).map_err(|e| StorageError::Other(e.to_string()))?;
        Ok(ScratchStore { fs })
    }
}

impl ReadableStorageTraits for ScratchStore {
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

impl WritableStorageTraits for ScratchStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let path = self.fs.key_to_fspath(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &value)?;
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

impl ListableStorageTraits for ScratchStore {
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
