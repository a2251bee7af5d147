//! The prefetch layer's bookkeeping: what is announced, in flight, fetched and consumed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};
use zarrs::storage::Bytes;

/// How many recently consumed keys are remembered (and not prefetched again).
const RECENT_KEYS: usize = 8192;

/// Prefetched entries unconsumed for this long are dropped when room is needed.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// A fetch's outcome: the bytes (`None` when the object is absent) or the error message.
pub(super) type Fetched = Result<Option<Bytes>, String>;

/// What an entry holds: a whole object, or one byte range of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Slot {
    pub(super) key: String,
    pub(super) range: Option<(u64, u64)>,
}

impl Slot {
    pub(super) fn whole(key: &str) -> Slot {
        Slot {
            key: key.to_string(),
            range: None,
        }
    }

    pub(super) fn range(key: &str, r: &Range<u64>) -> Slot {
        Slot {
            key: key.to_string(),
            range: Some((r.start, r.end)),
        }
    }
}

pub(super) enum Entry {
    /// A fetch is running; `id` tells it apart from a later fetch of the same key.
    InFlight { id: u64 },
    /// Fetched, not yet consumed.
    Ready { value: Fetched, at: Instant },
}

/// Everything the layer knows, under one lock.
#[derive(Default)]
pub(super) struct State {
    pub(super) entries: HashMap<Slot, Entry>,
    /// Bytes of `Ready` entries.
    pub(super) ready_bytes: u64,
    /// Whole-object fetches running.
    pub(super) in_flight: usize,
    /// Bytes of ranged fetches running (known exactly, unlike whole objects).
    pub(super) in_flight_range_bytes: u64,
    /// Running mean of fetched object sizes (estimates what in-flight fetches will hold).
    pub(super) mean_size: u64,
    pub(super) next_id: u64,
    pub(super) recent: VecDeque<Slot>,
    pub(super) recent_set: HashSet<Slot>,
    /// Array path → whether its chunks are shards (not prefetched).
    pub(super) sharded: HashMap<String, bool>,
}

impl State {
    pub(super) fn remember(&mut self, slot: &Slot) {
        if self.recent_set.insert(slot.clone()) {
            self.recent.push_back(slot.clone());
            if self.recent.len() > RECENT_KEYS {
                if let Some(old) = self.recent.pop_front() {
                    self.recent_set.remove(&old);
                }
            }
        }
    }

    pub(super) fn take_ready(&mut self, slot: &Slot) -> Option<Fetched> {
        if !matches!(self.entries.get(slot), Some(Entry::Ready { .. })) {
            return None;
        }
        match self.entries.remove(slot) {
            Some(Entry::Ready { value, .. }) => {
                self.ready_bytes -= value_len(&value);
                Some(value)
            }
            _ => None,
        }
    }

    /// Store a finished fetch, unless its slot was dropped or re-announced meanwhile (then it
    /// belongs to another fetch `id`). Returns the bytes now held.
    pub(super) fn settle(&mut self, slot: Slot, id: u64, value: Fetched) -> u64 {
        if !matches!(self.entries.get(&slot), Some(Entry::InFlight { id: i }) if *i == id) {
            return 0;
        }
        let n = value_len(&value);
        self.ready_bytes += n;
        self.entries.insert(
            slot,
            Entry::Ready {
                value,
                at: Instant::now(),
            },
        );
        n
    }

    pub(super) fn drop_entry(&mut self, slot: &Slot) {
        if let Some(Entry::Ready { value, .. }) = self.entries.remove(slot) {
            self.ready_bytes -= value_len(&value);
        }
    }

    /// Bytes held or about to be held by prefetches.
    pub(super) fn pending_bytes(&self) -> u64 {
        self.ready_bytes + self.in_flight as u64 * self.mean_size + self.in_flight_range_bytes
    }

    /// Whether a slot is announced, being fetched, or was consumed recently.
    pub(super) fn known(&self, slot: &Slot) -> bool {
        self.entries.contains_key(slot) || self.recent_set.contains(slot)
    }

    /// Drop ready entries nobody consumed for a long time (a cancelled run, a duplicate).
    pub(super) fn drop_stale(&mut self) {
        let now = Instant::now();
        let stale: Vec<Slot> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Ready { at, .. } if now.duration_since(*at) > STALE_AFTER))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.drop_entry(&k);
        }
    }
}

pub(super) fn value_len(v: &Fetched) -> u64 {
    match v {
        Ok(Some(b)) => b.len() as u64,
        _ => 0,
    }
}
