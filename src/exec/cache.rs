//! A byte-bounded LRU of decoded stored chunks, shared by all tasks, with single-flight
//! loading: concurrent tasks that need the same chunk wait for one decode.

use crate::store::Values;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

type Key = (usize, [u64; 3]);

/// Bytes of bookkeeping per cached chunk (two map entries and their share of spare capacity).
const ENTRY_OVERHEAD: u64 = 256;

enum Slot {
    Loading,
    Ready(Arc<Values>, u64),
}

struct Inner {
    map: HashMap<Key, Slot>,
    bytes: u64,
    tick: u64,
    last_use: HashMap<Key, u64>,
}

/// The decoded-chunk cache.
pub(crate) struct ChunkCache {
    cap: u64,
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl ChunkCache {
    /// A cache holding at most `cap` bytes (0 disables caching but keeps single-flight).
    pub(crate) fn new(cap: u64) -> ChunkCache {
        ChunkCache {
            cap,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                tick: 0,
                last_use: HashMap::new(),
            }),
            cv: Condvar::new(),
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }

    /// Drop everything.
    pub(crate) fn clear(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.map.retain(|_, s| matches!(s, Slot::Loading));
            i.last_use.clear();
            i.bytes = 0;
        }
    }

    /// Get a chunk, loading it with `load` if absent (once, however many tasks ask at once).
    /// A loaded chunk is kept only if `keep` (a scan that never comes back to a chunk would
    /// only push out chunks that may be reused). Returns the values and whether this call
    /// loaded them.
    pub(crate) fn get_or_load<E>(
        &self,
        key: Key,
        keep: bool,
        load: impl FnOnce() -> Result<Arc<Values>, E>,
    ) -> Result<(Arc<Values>, bool), E> {
        {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                match g.map.get(&key) {
                    Some(Slot::Ready(v, _)) => {
                        let v = v.clone();
                        g.tick += 1;
                        let t = g.tick;
                        g.last_use.insert(key, t);
                        return Ok((v, false));
                    }
                    Some(Slot::Loading) => {
                        g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                    }
                    None => {
                        g.map.insert(key, Slot::Loading);
                        break;
                    }
                }
            }
        }
        let r = load();
        #[cfg(test)]
        let _untracked = super::testing::untracked();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let out = match r {
            Ok(v) => {
                // The map entries are counted too, so a cache of tiny chunks stays in its share.
                let n = v.nbytes() as u64 + ENTRY_OVERHEAD;
                if keep && n <= self.cap {
                    g.map.insert(key, Slot::Ready(v.clone(), n));
                    #[cfg(test)]
                    super::testing::note_cached(n);
                    g.bytes += n;
                    g.tick += 1;
                    let t = g.tick;
                    g.last_use.insert(key, t);
                    self.evict(&mut g);
                } else {
                    g.map.remove(&key);
                }
                Ok((v, true))
            }
            Err(e) => {
                g.map.remove(&key);
                Err(e)
            }
        };
        drop(g);
        self.cv.notify_all();
        out
    }

    fn evict(&self, g: &mut Inner) {
        while g.bytes > self.cap {
            let Some((&k, _)) = g.last_use.iter().min_by_key(|(_, t)| **t) else {
                break;
            };
            g.last_use.remove(&k);
            if let Some(Slot::Ready(_, n)) = g.map.remove(&k) {
                g.bytes -= n;
            }
        }
    }
}
