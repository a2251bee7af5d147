//! Unit tests of the prefetch layer over an in-memory store.

use super::coalesce::{COALESCE_GAP, COALESCE_MAX};
use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use zarrs::storage::store::MemoryStore;

/// A memory store that counts gets and partial gets.
struct Counted {
    inner: MemoryStore,
    gets: AtomicU64,
    partials: AtomicU64,
}
impl ReadableStorageTraits for Counted {
    fn get(&self, key: &StoreKey) -> Result<Option<Bytes>, StorageError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key)
    }
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        r: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.partials.fetch_add(1, Ordering::SeqCst);
        self.inner.get_partial_many(key, r)
    }
    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.inner.size_key(key)
    }
    fn supports_get_partial(&self) -> bool {
        true
    }
}
impl WritableStorageTraits for Counted {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        self.inner.set(key, value)
    }
    fn set_partial_many(&self, key: &StoreKey, v: OffsetBytesIterator) -> Result<(), StorageError> {
        self.inner.set_partial_many(key, v)
    }
    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.inner.erase(key)
    }
    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.inner.erase_prefix(prefix)
    }
    fn supports_set_partial(&self) -> bool {
        false
    }
}
impl ListableStorageTraits for Counted {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.inner.list()
    }
    fn list_prefix(&self, p: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.inner.list_prefix(p)
    }
    fn list_dir(&self, p: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.inner.list_dir(p)
    }
    fn size_prefix(&self, p: &StorePrefix) -> Result<u64, StorageError> {
        self.inner.size_prefix(p)
    }
}

fn setup(n: usize, bound: u64) -> (Arc<Counted>, PrefetchStore) {
    let c = Arc::new(Counted {
        inner: MemoryStore::new(),
        gets: AtomicU64::new(0),
        partials: AtomicU64::new(0),
    });
    let k = |s: &str| StoreKey::new(s).unwrap();
    c.set(&k("red/zarr.json"), Bytes::from_static(b"{\"codecs\":[]}"))
        .unwrap();
    for i in 0..n {
        c.set(
            &k(&format!("red/c/0/0/{i}")),
            Bytes::from(vec![i as u8; 1000]),
        )
        .unwrap();
    }
    let p = PrefetchStore::with_bound(c.clone(), bound);
    (c, p)
}

fn wait_ready(p: &PrefetchStore, n: u64) {
    for _ in 0..500 {
        if p.ready_bytes() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("prefetch did not complete");
}

#[test]
fn serves_prefetched_once_and_fetches_directly_after() {
    let (c, p) = setup(10, 64 << 20);
    let keys: Vec<String> = (0..10).map(|i| format!("red/c/0/0/{i}")).collect();
    p.prefetch(keys.clone());
    wait_ready(&p, 10_000);
    let metadata_gets = 1;
    assert_eq!(c.gets.load(Ordering::SeqCst), 10 + metadata_gets);
    for (i, k) in keys.iter().enumerate() {
        let v = p.get(&StoreKey::new(k).unwrap()).unwrap().unwrap();
        assert_eq!(v.as_ref(), &vec![i as u8; 1000][..]);
    }
    assert_eq!(
        c.gets.load(Ordering::SeqCst),
        11,
        "served from prefetched bytes"
    );
    assert_eq!(p.ready_bytes(), 0);
    // Re-announcing consumed keys does not fetch them again.
    p.prefetch(keys.clone());
    assert_eq!(p.stats().prefetched, 10);
    // A second get of a consumed key fetches directly.
    p.get(&StoreKey::new(&keys[0]).unwrap()).unwrap().unwrap();
    assert_eq!(c.gets.load(Ordering::SeqCst), 12);
    assert_eq!(p.stats().hits, 10);
    assert_eq!(p.stats().direct, 1);
}

#[test]
fn byte_bound_skips_and_absent_keys_are_none() {
    let (_c, p) = setup(10, 2500);
    let keys: Vec<String> = (0..10).map(|i| format!("red/c/0/0/{i}")).collect();
    p.prefetch(keys.clone());
    // The first fetch is estimated at 1 MiB, so it alone fills the bound.
    assert!(p.stats().prefetched < 10);
    assert!(p.stats().skipped > 0);
    for (i, k) in keys.iter().enumerate() {
        let v = p.get(&StoreKey::new(k).unwrap()).unwrap().unwrap();
        assert_eq!(v[0], i as u8);
    }
    p.prefetch(vec!["red/c/9/9/9".into()]);
    assert!(p
        .get(&StoreKey::new("red/c/9/9/9").unwrap())
        .unwrap()
        .is_none());
}

#[test]
fn writes_invalidate_prefetched_entries() {
    let (c, p) = setup(2, 64 << 20);
    p.prefetch(vec!["red/c/0/0/0".into()]);
    wait_ready(&p, 1000);
    let k = StoreKey::new("red/c/0/0/0").unwrap();
    p.set(&k, Bytes::from_static(b"new")).unwrap();
    assert_eq!(p.get(&k).unwrap().unwrap().as_ref(), b"new");
    let _ = c;
}

#[test]
fn coalesce_merges_near_ranges_up_to_the_cap() {
    let far = 30 + COALESCE_GAP;
    let g = coalesce(&[10..20, 0..10, 25..30, far..far + 10, 100..100]);
    assert_eq!(g, vec![vec![0..10, 10..20, 25..30], vec![far..far + 10]]);
    let m = COALESCE_MAX;
    assert_eq!(coalesce(&[0..m - 10, m - 5..m]).len(), 1);
    assert_eq!(coalesce(&[0..m - 10, m - 5..m + 1]).len(), 2);
    let whole = 0..2 * m;
    assert_eq!(coalesce(std::slice::from_ref(&whole)), vec![vec![whole]]);
}

#[test]
fn announced_ranges_are_fetched_together_and_served_once() {
    let (c, p) = setup(0, 64 << 20);
    let key = StoreKey::new("red/c/0/0/0").unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    c.set(&key, Bytes::from(data.clone())).unwrap();
    let far = 400 + COALESCE_GAP;
    p.prefetch_ranges(vec![(
        "red/c/0/0/0".into(),
        vec![0..100, 100..250, 300..400, far..far + 1],
    )]);
    let range = |o: u64, n: u64| -> Vec<u8> {
        let r = ByteRange::FromStart(o, Some(n));
        let mut it = p
            .get_partial_many(&key, Box::new(std::iter::once(r)))
            .unwrap()
            .unwrap();
        it.next().unwrap().unwrap().to_vec()
    };
    // The far range lies beyond the object: its group fails alone, at its own read.
    wait_ready(&p, 350);
    // The failing group runs on its own worker: its request may land after the first group is ready.
    for _ in 0..500 {
        if c.partials.load(Ordering::SeqCst) >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        c.partials.load(Ordering::SeqCst),
        2,
        "two groups, two requests"
    );
    assert_eq!(range(100, 150), data[100..250]);
    assert_eq!(p.ready_bytes(), 200);
    assert_eq!(range(0, 100), data[..100]);
    assert_eq!(range(300, 100), data[300..400]);
    assert_eq!(
        c.partials.load(Ordering::SeqCst),
        2,
        "served from prefetched bytes"
    );
    assert_eq!(p.ready_bytes(), 0);
    let e = p
        .get_partial_many(
            &key,
            Box::new(std::iter::once(ByteRange::FromStart(far, Some(1)))),
        )
        .err()
        .expect("out of bounds")
        .to_string();
    assert!(e.contains("red/c/0/0/0"), "{e}");
    // Consumed: announcing again fetches nothing; reading again fetches directly.
    p.prefetch_ranges(vec![(
        "red/c/0/0/0".into(),
        std::iter::once(0..100).collect(),
    )]);
    assert_eq!(p.stats().range_requests, 2);
    assert_eq!(range(0, 100), data[..100]);
    assert_eq!(c.partials.load(Ordering::SeqCst), 3);
    let s = p.stats();
    // Hits include the failed range: its error was the prefetched entry.
    assert_eq!((s.range_hits, s.range_direct), (4, 1), "{s:?}");
}

#[test]
fn writes_drop_prefetched_ranges() {
    let (c, p) = setup(1, 64 << 20);
    p.prefetch_ranges(vec![(
        "red/c/0/0/0".into(),
        std::iter::once(0..10).collect(),
    )]);
    wait_ready(&p, 10);
    let k = StoreKey::new("red/c/0/0/0").unwrap();
    p.set(&k, Bytes::from(vec![7u8; 1000])).unwrap();
    assert_eq!(p.ready_bytes(), 0);
    let mut it = p
        .get_partial_many(
            &k,
            Box::new(std::iter::once(ByteRange::FromStart(0, Some(10)))),
        )
        .unwrap()
        .unwrap();
    assert_eq!(it.next().unwrap().unwrap().as_ref(), &[7u8; 10]);
    let _ = c;
}
