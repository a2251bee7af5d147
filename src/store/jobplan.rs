//! What a job split over N workers will do, told before it runs (`chunkcube plan ingest|calc
//! … --shards N --json`): per shard the chunks, bytes read and written, requests and memory,
//! and the job's totals, so a user can size the job and its S3 request bill before
//! submitting it. The planners stream over the output objects once, in the order and split
//! the workers use ([`crate::store::job::Splitter`]), holding one shard's figures at a time.

use serde::Serialize;

/// One worker's share of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShardPlan {
    /// The shard (0-based).
    pub index: u32,
    /// Output chunks written (every output array counted; inner chunks of storage shards).
    pub chunks: u64,
    /// Objects written (chunks, or storage shards of a sharded array): one PUT each.
    pub objects: u64,
    /// Encoded bytes read: stored chunks' sizes (calc) or the tiles' file bytes in proportion
    /// to the pixels read from them (ingest).
    pub bytes_read: u64,
    /// Decoded bytes written (before compression).
    pub bytes_written: u64,
    /// Read requests: GETs or ranged GETs of stored chunks (calc); for remote tiles, the
    /// scan of every tile's header that each worker makes (one GET of the saved scan
    /// instead, after `ingest --scan-only`), one header read per tile the
    /// shard touches and one ranged read per tile window (ingest; local tiles: 0). GDAL's
    /// cache can serve small tiles' windows from the header read: an upper bound for them.
    pub gets: u64,
    /// Write requests: the objects plus the shard's markers.
    pub puts: u64,
    /// Projected peak memory of the worker (tracked tasks and caches).
    pub memory_bytes: u64,
}

/// The whole job: its shards and their totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobPlan {
    /// `ingest` or `calc`.
    pub kind: String,
    /// Workers (N of `--shard I/N`).
    pub shards: u32,
    /// The totals over every shard (`index` is N; `memory_bytes` the largest).
    pub total: ShardPlan,
    /// The most decoded bytes written by one shard over the mean (1.0: perfectly balanced).
    pub imbalance: f64,
    /// Per shard, in index order.
    pub per_shard: Vec<ShardPlan>,
}

impl JobPlan {
    /// A plan of `count` empty shards.
    pub fn new(kind: &str, count: u32) -> JobPlan {
        JobPlan {
            kind: kind.into(),
            shards: count,
            per_shard: (0..count)
                .map(|index| ShardPlan {
                    index,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Sum the shards into the totals (after the planner filled them).
    pub fn finish(mut self) -> JobPlan {
        let mut t = ShardPlan {
            index: self.shards,
            ..Default::default()
        };
        for s in &self.per_shard {
            t.chunks += s.chunks;
            t.objects += s.objects;
            t.bytes_read += s.bytes_read;
            t.bytes_written += s.bytes_written;
            t.gets += s.gets;
            t.puts += s.puts;
            t.memory_bytes = t.memory_bytes.max(s.memory_bytes);
        }
        let max = self
            .per_shard
            .iter()
            .map(|s| s.bytes_written)
            .max()
            .unwrap_or(0);
        let mean = t.bytes_written as f64 / self.shards.max(1) as f64;
        self.imbalance = if mean > 0.0 { max as f64 / mean } else { 1.0 };
        self.total = t;
        self
    }

    /// A few lines for a terminal: the totals and the largest shard.
    pub fn describe(&self) -> String {
        use crate::store::format_bytes as b;
        let t = &self.total;
        let big = self
            .per_shard
            .iter()
            .max_by_key(|s| s.bytes_written)
            .cloned()
            .unwrap_or_default();
        format!(
            "{} job in {} shards: {} chunks in {} objects, {} read, {} written (decoded), {} GETs, {} PUTs\n\
             largest shard {}: {} chunks, {} read, {} written; imbalance {:.3}; memory per worker {}\n",
            self.kind,
            self.shards,
            t.chunks,
            t.objects,
            b(t.bytes_read),
            b(t.bytes_written),
            t.gets,
            t.puts,
            big.index,
            big.chunks,
            b(big.bytes_read),
            b(big.bytes_written),
            self.imbalance,
            b(t.memory_bytes)
        )
    }
}
