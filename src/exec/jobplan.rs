//! `plan calc … --shards N`: what each worker of a sharded calc will read, write and hold,
//! from the same split the workers use ([`super::job::regions_by_shard`]) and the stored
//! chunks each output chunk needs, without reading a chunk. One pass over the output chunks;
//! only the current shard's stored-chunk list is held.

use super::job::regions_by_shard;
use super::plan::{cache_cap, Demand};
use super::Session;
use crate::graph::{group_by_source, source_chunks, ChunkSource, Node};
use crate::store::jobplan::JobPlan;
use std::collections::HashMap;
use std::sync::Arc;

/// Per shard: the stored chunks it reads, by source.
type Reads = HashMap<usize, (Arc<dyn ChunkSource>, Vec<[u64; 3]>)>;

impl Session {
    /// The plan of writing `outputs` (on one output grid of `chunks`) as a job of `count`
    /// workers: each shard's output chunks and objects (one per output array per region),
    /// decoded bytes written, stored chunks' encoded bytes and requests (each worker fetches a
    /// stored chunk once), PUTs (objects plus the shard's markers) and projected memory.
    pub fn plan_job(
        &self,
        outputs: &[(String, Arc<Node>)],
        chunks: [u64; 3],
        count: u32,
    ) -> JobPlan {
        let mut plan = JobPlan::new("calc", count);
        let Some((_, first)) = outputs.first() else {
            return plan.finish();
        };
        let shape = first.shape;
        let nodes: Vec<&Arc<Node>> = outputs.iter().map(|(_, n)| n).collect();
        // As a worker runs: writing, in row strips where it can.
        let demand = Demand {
            writing: true,
            strips: true,
            ..Demand::default()
        };
        let need = self.plan(&nodes, chunks, demand).map_or(0, |p| p.need);
        let limit = self.config.memory_limit;
        let out_px_bytes: u64 = nodes.iter().map(|n| n.dtype.size() as u64).sum();
        let mut reads: Reads = HashMap::new();
        let mut current: Option<u32> = None;
        let mut regions_in_shard = 0u64;
        let close = |plan: &mut JobPlan, i: u32, reads: &mut Reads, regions: u64| {
            let s = &mut plan.per_shard[i as usize];
            let mut decoded = 0u64;
            for (_, (src, idxs)) in reads.drain() {
                let mut idxs = idxs;
                idxs.sort_unstable();
                idxs.dedup();
                let c = src.read_cost(&idxs);
                s.bytes_read += c.encoded_bytes;
                s.gets += c.requests;
                decoded += idxs.len() as u64
                    * src.chunk_shape().iter().product::<u64>()
                    * src.dtype().size() as u64;
            }
            let conc = (self.threads() as u64).min(regions).max(1);
            s.memory_bytes = conc * need + cache_cap(limit).min(decoded);
            s.puts += 2; // the shard's start note and its finished marker
        };
        for (i, region) in regions_by_shard(shape, chunks, count) {
            if current != Some(i) {
                if let Some(c) = current {
                    close(&mut plan, c, &mut reads, regions_in_shard);
                }
                current = Some(i);
                regions_in_shard = 0;
            }
            regions_in_shard += 1;
            let s = &mut plan.per_shard[i as usize];
            let px: u64 = region.iter().map(|r| r.end - r.start).product();
            s.chunks += nodes.len() as u64;
            s.objects += nodes.len() as u64;
            s.puts += nodes.len() as u64;
            s.bytes_written += px * out_px_bytes;
            for node in &nodes {
                let pairs = source_chunks(node, &region);
                for (src, idxs) in group_by_source(pairs, |s| !s.is_persisted()) {
                    reads
                        .entry(src.uid())
                        .or_insert_with(|| (src.clone(), Vec::new()))
                        .1
                        .extend(idxs);
                }
            }
        }
        if let Some(c) = current {
            close(&mut plan, c, &mut reads, regions_in_shard);
        }
        plan.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::job::{regions_by_shard, shard_regions};
    use crate::store::job::Shard;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// The shards of any grid are disjoint, cover every output chunk, are each one
        /// contiguous run, and are exactly what the workers (`shard_regions`) take.
        #[test]
        fn shards_partition_the_regions(
            shape in prop::array::uniform3(1u64..40),
            chunks in prop::array::uniform3(1u64..12),
            count in 1u32..9,
        ) {
            let all: Vec<_> = crate::graph::regions(shape, chunks).collect();
            let tagged: Vec<_> = regions_by_shard(shape, chunks, count).collect();
            prop_assert_eq!(tagged.len(), all.len());
            // Contiguous and ordered: the shard index never goes down.
            prop_assert!(tagged.windows(2).all(|w| w[0].0 <= w[1].0));
            let mut seen = BTreeSet::new();
            for i in 0..count {
                let mine = shard_regions(shape, chunks, Shard::new(i, count).unwrap());
                let planned: Vec<_> = tagged.iter().filter(|t| t.0 == i).map(|t| t.1.clone()).collect();
                prop_assert_eq!(&mine, &planned);
                for r in mine {
                    prop_assert!(seen.insert(format!("{r:?}")), "region in two shards");
                }
            }
            prop_assert_eq!(seen.len(), all.len());
        }
    }
}
