//! One storage conformance suite, run against every storage layer of the crate (in the spirit
//! of object_store's `integration.rs`): what zarrs asks of a store — whole and ranged reads,
//! sizes, writes and overwrites, erasing keys and prefixes, listings — must hold alike for the
//! local directory store, the counting, prefetching and disk-caching layers, the object_store
//! adapter (over `object_store::memory::InMemory`, and over the loopback S3 server when
//! `CHUNKCUBE_TEST_S3_ENDPOINT` is set), and the full layer stack a cube URL opens. Each layer's
//! own promise (counting, serving prefetched bytes, caching on disk) is checked beside it.

use super::counting::{CountingStore, IoCounters};
use super::disk_cache::DiskCacheStore;
use super::local::LocalStore;
use super::prefetch::PrefetchStore;
use super::remote::wrap_object_store;
use super::{Store, StoreOptions};
use object_store::memory::InMemory;
use object_store::ObjectStore;
use std::collections::BTreeSet;
use std::sync::Arc;
use zarrs::storage::byte_range::ByteRange;
use zarrs::storage::storage_adapter::atomic_write::AtomicWriteStorageAdapter;
use zarrs::storage::store::MemoryStore;
use zarrs::storage::{Bytes, ReadableWritableListableStorage, StoreKey, StorePrefix};

fn key(k: &str) -> StoreKey {
    StoreKey::new(k).unwrap()
}

fn prefix(p: &str) -> StorePrefix {
    StorePrefix::new(p).unwrap()
}

/// Deterministic bytes of length `n` that differ per `seed` (so an overwrite is visible).
fn bytes(n: usize, seed: u8) -> Bytes {
    (0..n)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect::<Vec<u8>>()
        .into()
}

fn ranges_of(s: &ReadableWritableListableStorage, k: &str, r: &[ByteRange]) -> Option<Vec<Bytes>> {
    s.get_partial_many(&key(k), Box::new(r.iter().copied()))
        .unwrap_or_else(|e| panic!("get_partial_many {k} {r:?}: {e}"))
        .map(|it| it.collect::<Result<Vec<_>, _>>().unwrap())
}

fn sorted_keys(v: Vec<StoreKey>) -> Vec<String> {
    let mut out: Vec<String> = v.into_iter().map(|k| k.as_str().to_string()).collect();
    out.sort();
    out
}

/// The suite: what every layer must do the same. `name` labels failures.
pub(super) fn conformance(name: &str, s: &ReadableWritableListableStorage) {
    s.erase_prefix(&StorePrefix::root()).unwrap();
    // Absent keys: nothing, not an error.
    assert!(s.get(&key("nothing/here")).unwrap().is_none(), "{name}");
    assert!(
        s.size_key(&key("nothing/here")).unwrap().is_none(),
        "{name}"
    );
    assert!(
        ranges_of(s, "nothing/here", &[ByteRange::FromStart(0, Some(1))]).is_none(),
        "{name}: ranges of an absent key"
    );
    // Whole values of every size, overwritten.
    for (i, n) in [0usize, 1, 1000, 3 << 20].into_iter().enumerate() {
        let k = format!("red/c/0/{i}/0");
        s.set(&key(&k), bytes(n, 1)).unwrap();
        s.set(&key(&k), bytes(n, 2)).unwrap();
        let got = s.get(&key(&k)).unwrap();
        assert_eq!(got.as_deref(), Some(&bytes(n, 2)[..]), "{name}: {k}");
        assert_eq!(
            s.size_key(&key(&k)).unwrap(),
            Some(n as u64),
            "{name}: size of {k}"
        );
    }
    // Byte ranges: bounded, suffix, open-ended, empty, several at once, in any order.
    let v = bytes(5000, 3);
    s.set(&key("red/c/1/0/0"), v.clone()).unwrap();
    let want: Vec<&[u8]> = vec![&v[10..30], &v[4990..], &v[4000..], &v[0..0], &v[0..1]];
    let got = ranges_of(
        s,
        "red/c/1/0/0",
        &[
            ByteRange::FromStart(10, Some(20)),
            ByteRange::Suffix(10),
            ByteRange::FromStart(4000, None),
            ByteRange::FromStart(7, Some(0)),
            ByteRange::FromStart(0, Some(1)),
        ],
    )
    .unwrap_or_else(|| panic!("{name}: ranges of a present key"));
    assert_eq!(got.len(), want.len(), "{name}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(&g[..], *w, "{name}: range {i}");
    }
    // A range past the end is an error or nothing, never short or wrong bytes.
    if let Ok(Some(it)) = s.get_partial_many(
        &key("red/c/1/0/0"),
        Box::new([ByteRange::FromStart(4990, Some(100))].into_iter()),
    ) {
        let parts: Result<Vec<Bytes>, _> = it.collect();
        assert!(
            parts.is_err(),
            "{name}: a range past the end returned {parts:?}"
        );
    }
    // A tree: listings, directory listings, prefix sizes.
    s.erase_prefix(&StorePrefix::root()).unwrap();
    let tree = [
        ("zarr.json", 2usize),
        ("a/zarr.json", 3),
        ("a/c/0/0", 4),
        ("a/c/0/1", 5),
        ("a/c/1/0", 6),
        ("b/zarr.json", 7),
    ];
    for (k, n) in tree {
        s.set(&key(k), bytes(n, 4)).unwrap();
    }
    let all: Vec<String> = tree
        .iter()
        .map(|(k, _)| k.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(sorted_keys(s.list().unwrap()), all, "{name}: list");
    assert_eq!(
        sorted_keys(s.list_prefix(&prefix("a/")).unwrap()),
        vec!["a/c/0/0", "a/c/0/1", "a/c/1/0", "a/zarr.json"],
        "{name}: list_prefix"
    );
    let dir = s.list_dir(&prefix("a/")).unwrap();
    assert_eq!(
        sorted_keys(dir.keys().clone()),
        vec!["a/zarr.json"],
        "{name}: list_dir keys"
    );
    let mut subdirs: Vec<String> = dir
        .prefixes()
        .iter()
        .map(|p| p.as_str().to_string())
        .collect();
    subdirs.sort();
    assert_eq!(subdirs, vec!["a/c/"], "{name}: list_dir prefixes");
    assert_eq!(
        s.size_prefix(&prefix("a/c/")).unwrap(),
        15,
        "{name}: size_prefix"
    );
    // Erasing: a key (twice is fine), then a prefix, leaving its neighbours.
    s.erase(&key("a/c/0/1")).unwrap();
    s.erase(&key("a/c/0/1")).unwrap();
    assert!(
        s.get(&key("a/c/0/1")).unwrap().is_none(),
        "{name}: erased key"
    );
    s.erase_prefix(&prefix("a/")).unwrap();
    assert_eq!(
        sorted_keys(s.list().unwrap()),
        vec!["b/zarr.json", "zarr.json"],
        "{name}: after erase_prefix"
    );
    assert_eq!(
        s.get(&key("b/zarr.json")).unwrap().as_deref(),
        Some(&bytes(7, 4)[..]),
        "{name}"
    );
    // Writers and readers at once: every thread's values land whole.
    std::thread::scope(|sc| {
        for t in 0..4u8 {
            sc.spawn(move || {
                for i in 0..16usize {
                    let k = format!("nir/c/{t}/{i}/0");
                    s.set(&key(&k), bytes(100 + i * 37, t)).unwrap();
                    let back = s.get(&key(&k)).unwrap();
                    assert_eq!(
                        back.as_deref(),
                        Some(&bytes(100 + i * 37, t)[..]),
                        "{name}: {k}"
                    );
                }
            });
        }
    });
    assert_eq!(
        s.list_prefix(&prefix("nir/")).unwrap().len(),
        64,
        "{name}: concurrent writes"
    );
    s.erase_prefix(&StorePrefix::root()).unwrap();
    assert!(s.list().unwrap().is_empty(), "{name}: erase root");
}

fn memory() -> ReadableWritableListableStorage {
    Arc::new(MemoryStore::new())
}

fn in_memory_object_store() -> ReadableWritableListableStorage {
    wrap_object_store(Arc::new(InMemory::new()))
}

#[test]
fn local_directory_stores() {
    let dir = tempfile::tempdir().unwrap();
    for (i, open) in [LocalStore::new, LocalStore::durable, LocalStore::scratch]
        .into_iter()
        .enumerate()
    {
        let root = dir.path().join(format!("mode{i}"));
        std::fs::create_dir_all(&root).unwrap();
        let s: ReadableWritableListableStorage = Arc::new(open(&root).unwrap());
        conformance(&format!("LocalStore mode {i}"), &s);
        // As a cube opens it: writes through temporary files renamed into place.
        let atomic: ReadableWritableListableStorage = Arc::new(AtomicWriteStorageAdapter::new(
            Arc::new(open(&root).unwrap()),
        ));
        conformance(&format!("atomic LocalStore mode {i}"), &atomic);
    }
}

#[test]
fn object_store_adapter_over_memory() {
    conformance("ObjectStoreStorage(InMemory)", &in_memory_object_store());
}

#[test]
fn counting_layer() {
    let counters = Arc::new(IoCounters::default());
    let s: ReadableWritableListableStorage = Arc::new(CountingStore::new(
        in_memory_object_store(),
        counters.clone(),
    ));
    conformance("CountingStore", &s);
    // It counts the band-chunk reads and their bytes, not metadata.
    counters.reset();
    s.set(&key("red/zarr.json"), bytes(10, 1)).unwrap();
    s.set(&key("red/c/0/0/0"), bytes(300, 1)).unwrap();
    s.get(&key("red/zarr.json")).unwrap();
    s.get(&key("red/c/0/0/0")).unwrap();
    s.get(&key("red/c/0/0/0")).unwrap();
    let snap = counters.snapshot();
    assert_eq!(snap.chunk_gets, 2, "{snap:?}");
    assert_eq!((snap.chunk_puts, snap.bytes_written), (1, 300), "{snap:?}");
    assert_eq!(snap.bytes_read, 600, "{snap:?}");
}

#[test]
fn prefetch_layer() {
    for (what, inner) in [
        ("memory", memory()),
        ("object store", in_memory_object_store()),
    ] {
        let p = Arc::new(PrefetchStore::new(inner));
        let s: ReadableWritableListableStorage = p.clone();
        conformance(&format!("PrefetchStore over {what}"), &s);
        // Announced chunks are fetched ahead and served once from the fetched bytes; a write
        // drops what was fetched before it.
        s.set(&key("red/zarr.json"), Bytes::from_static(b"{}"))
            .unwrap();
        let keys: Vec<String> = (0..6).map(|i| format!("red/c/0/{i}/0")).collect();
        for (i, k) in keys.iter().enumerate() {
            s.set(&key(k), bytes(1000 + i, 5)).unwrap();
        }
        p.prefetch(keys.clone());
        let t0 = std::time::Instant::now();
        while p.stats().prefetched < 6 || p.ready_bytes() < 6000 {
            assert!(
                t0.elapsed().as_secs() < 10,
                "{what}: prefetch stalled: {:?}",
                p.stats()
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        s.set(&key(&keys[0]), bytes(77, 9)).unwrap();
        let before = p.stats();
        for (i, k) in keys.iter().enumerate() {
            let want = if i == 0 {
                bytes(77, 9)
            } else {
                bytes(1000 + i, 5)
            };
            assert_eq!(
                s.get(&key(k)).unwrap().as_deref(),
                Some(&want[..]),
                "{what}: {k}"
            );
        }
        let st = p.stats();
        assert_eq!(
            (st.hits - before.hits, st.direct - before.direct),
            (5, 1),
            "{what}: {st:?}"
        );
    }
}

#[test]
fn disk_cache_layer() {
    let cache = tempfile::tempdir().unwrap();
    let remote = Arc::new(InMemory::new());
    let c = DiskCacheStore::new(
        wrap_object_store(remote.clone()),
        cache.path(),
        "conformance",
        "w1",
        1 << 30,
    )
    .unwrap();
    let s: ReadableWritableListableStorage = Arc::new(c);
    conformance("DiskCacheStore", &s);
    // Read-only use: a second store over the same cache directory and write id serves every
    // object it read before from disk, even once the remote lost them.
    let w = wrap_object_store(remote.clone());
    w.set(&key("red/c/0/0/0"), bytes(4000, 6)).unwrap();
    w.set(&key("red/c/0/0/1"), bytes(10, 6)).unwrap();
    let first = DiskCacheStore::new(
        wrap_object_store(remote.clone()),
        cache.path(),
        "conformance",
        "w2",
        1 << 30,
    )
    .unwrap();
    let r = [ByteRange::FromStart(100, Some(50)), ByteRange::Suffix(8)];
    let s1: ReadableWritableListableStorage = Arc::new(first);
    assert_eq!(
        s1.get(&key("red/c/0/0/1")).unwrap().as_deref(),
        Some(&bytes(10, 6)[..])
    );
    let parts = ranges_of(&s1, "red/c/0/0/0", &r).unwrap();
    assert!(s1.get(&key("red/c/9/9/9")).unwrap().is_none());
    w.erase_prefix(&StorePrefix::root()).unwrap();
    let again = DiskCacheStore::new(
        wrap_object_store(remote.clone()),
        cache.path(),
        "conformance",
        "w2",
        1 << 30,
    )
    .unwrap();
    let s2: ReadableWritableListableStorage = Arc::new(again);
    assert_eq!(
        s2.get(&key("red/c/0/0/1")).unwrap().as_deref(),
        Some(&bytes(10, 6)[..])
    );
    assert_eq!(ranges_of(&s2, "red/c/0/0/0", &r).unwrap(), parts);
    let v = bytes(4000, 6);
    assert_eq!(&parts[0][..], &v[100..150]);
    assert_eq!(&parts[1][..], &v[3992..]);
    assert!(
        s2.get(&key("red/c/9/9/9")).unwrap().is_none(),
        "known-absent stays absent"
    );
    // Another write id is another version: nothing of w2 is served for it.
    let other = DiskCacheStore::new(
        wrap_object_store(remote),
        cache.path(),
        "conformance",
        "w3",
        1 << 30,
    )
    .unwrap();
    let s3: ReadableWritableListableStorage = Arc::new(other);
    assert!(s3.get(&key("red/c/0/0/1")).unwrap().is_none());
}

#[test]
fn full_remote_stack_over_memory() {
    // What an s3:// URL opens (counting, prefetch, object store), over an in-memory store;
    // then opened for reading with the disk cache below the prefetch layer.
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let w = Store::from_object_store(
        "s3://conformance/cube",
        mem.clone(),
        true,
        &StoreOptions::default(),
    )
    .unwrap();
    conformance("remote Store (write)", &w.storage());
    w.set("zarr.json", Bytes::from_static(br#"{"zarr_format":3,"node_type":"group","attributes":{"chunkcube":{"write_id":"x1"}}}"#)).unwrap();
    w.set("red/c/0/0/0", bytes(2000, 8)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..StoreOptions::default()
    };
    let r = Store::from_object_store("s3://conformance/cube", mem, false, &opts).unwrap();
    assert_eq!(
        r.get("red/c/0/0/0").unwrap().as_deref(),
        Some(&bytes(2000, 8)[..])
    );
    assert!(
        r.remote().and_then(|x| x.disk_cache.as_ref()).is_some(),
        "the disk cache is in the stack"
    );
    assert_eq!(r.counters().snapshot().chunk_gets, 1);
}

/// The same suite against the real S3-compatible server the test script starts, when it does.
#[test]
fn object_store_adapter_over_loopback_s3() {
    let Some(endpoint) = std::env::var("CHUNKCUBE_TEST_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
    else {
        eprintln!("skipped: CHUNKCUBE_TEST_S3_ENDPOINT is not set (scripts/test.sh sets it)");
        return;
    };
    let bucket = format!("conformance-{}", std::process::id());
    // moto creates a bucket on an unsigned PUT.
    let hostport = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut conn = std::net::TcpStream::connect(&hostport).unwrap();
    use std::io::{Read, Write};
    write!(conn, "PUT /{bucket} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "create bucket: {reply}");
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_allow_http(true)
        .build()
        .unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::prefix::PrefixStore::new(s3, "suite"));
    conformance(
        "ObjectStoreStorage(S3 on loopback)",
        &wrap_object_store(store.clone()),
    );
    let p: ReadableWritableListableStorage = Arc::new(PrefetchStore::new(wrap_object_store(store)));
    conformance("PrefetchStore(S3 on loopback)", &p);
}
