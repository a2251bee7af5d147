//! Writing results as a new cube, chunk by chunk, committed last (as ingest does).

use super::eval::Float;
use super::job::{calc_job, plan_fingerprint, prepare_shard, shard_regions, WriteReport};
use super::path::{task_path, TaskPath};
use super::plan::{computes_f64, Caps, Demand};
use super::{ExecError, Session};
use crate::geo::{GeoBox, Time};
use crate::graph::{Node, Op, ReduceOp};
use crate::store::job::Shard;
use crate::store::layout::{self, Codecs};
use crate::store::replace::Staging;
use crate::store::Element;
use crate::store::{self, Store};
use ndarray::{ArrayD, IxDyn, SliceInfoElem};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Prepare an output location: refuse an existing cube or other content unless `overwrite`.
/// With it, a committed cube is replaced in isolation: the result is written beside it
/// (the [`Staging`] returned, under `write_id`) and switched in once committed; other content
/// is cleared first. Without it, what a failed or interrupted one-process write left (no
/// group metadata, this writer's job marker) is replaced, saying so on stderr. The job marker
/// of `job` is put down before anything else is written, so the next run can tell.
pub(crate) fn prepare_output(
    url: &str,
    overwrite: bool,
    write_id: &str,
    job: &store::job::JobMarker,
    opts: &crate::store::StoreOptions,
) -> Result<(Store, Option<Staging>), ExecError> {
    // A result interrupted is redone from scratch, so its chunks need not be synced one by one:
    // the cube is synced once before it is committed.
    let opts = crate::store::StoreOptions {
        deferred_sync: true,
        ..opts.clone()
    };
    let store = Store::open_with(url, true, &opts)?;
    let has_any = !store.list_sizes("")?.is_empty();
    if has_any {
        let staged = if overwrite {
            store::replace::stage(url, write_id, &opts)?
        } else {
            refuse_unless_leftover(&store, url)?;
            None
        };
        if let Some(st) = staged {
            let s = st.store().clone();
            store::job::write_job(&s, job)?;
            return Ok((s, Some(st)));
        }
        layout::uncommit(&store)?;
        store.erase_prefix("")?;
    }
    store::job::write_job(&store, job)?;
    Ok((store, None))
}

/// Refuse an existing output (without `--overwrite`) unless it is what a failed or
/// interrupted one-process `calc --out` / `load --out` left: no group metadata and a job
/// marker of one calc shard (the writer's first object). That is replaced, with a note.
fn refuse_unless_leftover(store: &Store, url: &str) -> Result<(), ExecError> {
    if store.get("zarr.json")?.is_some() {
        return Err(ExecError::Exists(url.to_string()));
    }
    // An unreadable marker is not ours to judge: refused as other content.
    let job = store::job::read_job(store).ok().flatten();
    match job {
        Some(j) if j.kind == "calc" && j.shards == 1 => {
            eprintln!("note: replacing {url}: an unfinished result left by a failed or interrupted chunkcube run (no group metadata)");
            Ok(())
        }
        Some(j) => Err(ExecError::Occupied {
            url: url.to_string(),
            what: format!(
                "holds an unfinished {} job of {} shards (finish it: run its missing workers, then `chunkcube commit`)",
                j.kind, j.shards
            ),
        }),
        None => Err(ExecError::Occupied {
            url: url.to_string(),
            what: "is not empty and is not a chunkcube cube or result".into(),
        }),
    }
}

/// What `run_tasks` calls a run that writes its results (the dashboard adds a write layer).
pub(crate) const WRITING: &str = "writing";

impl Session {
    /// Compute `outputs` (name, node; all on one grid) and write them as a cube at `url`,
    /// one task per output chunk computing every output for that chunk. `time_bounds` (one
    /// `[first, last]` per step) are the CF bounds of steps that stand for reduced ranges;
    /// reductions are named in each variable's `cell_methods`.
    #[allow(clippy::too_many_arguments)]
    pub fn write_cube(
        &self,
        outputs: &[(String, Arc<Node>)],
        chunks: [u64; 3],
        times: &[Time],
        time_bounds: Option<&[[Time; 2]]>,
        geobox: &GeoBox,
        url: &str,
        overwrite: bool,
    ) -> Result<(), ExecError> {
        self.write_cube_shard(
            outputs,
            chunks,
            times,
            time_bounds,
            geobox,
            url,
            overwrite,
            None,
        )
        .map(|_| ())
    }

    /// [`Session::write_cube`] for one worker of a job (`shard`: `Some`): only this shard's
    /// output chunks are computed (those an earlier run of it wrote whole are kept), then
    /// the arrays' metadata and the shard's marker are written, never the group metadata:
    /// [`crate::store::job::commit`] does that once every shard finished. `None`: the whole
    /// cube, committed at the end (an existing output is replaced only with `overwrite`).
    #[allow(clippy::too_many_arguments)]
    pub fn write_cube_shard(
        &self,
        outputs: &[(String, Arc<Node>)],
        chunks: [u64; 3],
        times: &[Time],
        time_bounds: Option<&[[Time; 2]]>,
        geobox: &GeoBox,
        url: &str,
        overwrite: bool,
        shard: Option<Shard>,
    ) -> Result<WriteReport, ExecError> {
        let first = outputs
            .first()
            .ok_or_else(|| ExecError::Invalid("nothing to write".into()))?;
        let shape = first.1.shape;
        for (n, node) in outputs {
            if node.shape != shape {
                return Err(ExecError::Invalid(format!(
                    "'{n}' has shape {:?} but '{}' has {:?}; write them to separate cubes",
                    node.shape, first.0, shape
                )));
            }
            layout::validate_band_name(n).map_err(ExecError::Invalid)?;
        }
        let nodes: Vec<&Arc<Node>> = outputs.iter().map(|(_, n)| n).collect();
        check_not_an_input(&nodes, url)?;
        let remote = matches!(
            crate::store::Location::parse(url),
            Ok(crate::store::Location::S3 { .. })
        );
        let demand = Demand {
            writing: true,
            remote,
            strips: true,
            ..Demand::default()
        };
        let plan = self.plan(&nodes, chunks, demand)?;
        let caps: Caps = plan.caps(self.threads(), &nodes);
        let fingerprint = plan_fingerprint(outputs, chunks, times, geobox);
        let mut report = WriteReport {
            fingerprint: fingerprint.clone(),
            ..WriteReport::default()
        };
        let write_id = layout::new_write_id();
        // One writer per output; the workers of a job share theirs by design (the job's
        // fingerprint keeps other plans out).
        let _lock = match shard {
            None => Some(store::lock::acquire(url)?),
            Some(_) => None,
        };
        let mut staging = None;
        let (store, job, regions, rerun) = match shard {
            None => {
                let marker = calc_job(&fingerprint, 1, geobox.has_crs());
                let (store, st) =
                    prepare_output(url, overwrite, &write_id, &marker, &self.config.store)?;
                staging = st;
                self.note_written(store.counters());
                (
                    store,
                    None,
                    crate::graph::regions(shape, chunks).collect(),
                    false,
                )
            }
            Some(sh) => {
                if overwrite {
                    return Err(ExecError::Invalid("--overwrite cannot be combined with --shard (each worker would erase the others' chunks); clear the output once before submitting the job".into()));
                }
                let opts = crate::store::StoreOptions {
                    deferred_sync: true,
                    ..self.config.store.clone()
                };
                let store = Store::open_with(url, true, &opts)?;
                self.note_written(store.counters());
                let job = calc_job(&fingerprint, sh.count, geobox.has_crs());
                if !prepare_shard(&store, &job)? || store::job::finished(&store, &job, sh.index)? {
                    report.up_to_date = true;
                    return Ok(report);
                }
                let rerun = store::job::start_shard(&store, sh)?;
                (store, Some(job), shard_regions(shape, chunks, sh), rerun)
            }
        };
        report.chunks = (regions.len() * outputs.len()) as u64;
        let skipped = std::sync::atomic::AtomicU64::new(0);
        // Results are written bytes → zstd → crc32c (the chunk writer streams the same).
        let codecs = Codecs::default();
        let mut arrays = Vec::new();
        for (name, node) in outputs {
            // Results are float32 (NaN = missing) unless cast; casts keep nodata 0.
            let nodata = Some(result_nodata(node));
            let mut attrs = passed_through(node);
            attrs.extend(provenance(node));
            // A count is CF's sum of presence: say so, as CF's `number_of_observations`
            // modifier does, and that it is dimensionless.
            if let Op::Reduce {
                op: ReduceOp::Count,
                axis,
                ..
            } = &node.op
            {
                let long = format!(
                    "number_of_observations of {name} over {}",
                    crate::store::DIMS[*axis]
                );
                attrs.insert("long_name".into(), serde_json::json!(long));
                attrs.insert("units".into(), serde_json::json!("1"));
            }
            let b = layout::band_builder(
                node.dtype,
                nodata,
                shape,
                chunks,
                None,
                codecs,
                &attrs,
                geobox.has_crs(),
            );
            let a = b
                .build(store.storage(), &format!("/{name}"))
                .map_err(|e| ExecError::write(format!("{name}/zarr.json"), e))?;
            arrays.push(a);
        }
        self.run_regions(&nodes, chunks, regions, plan, WRITING, |r| {
            let idx: [u64; 3] = std::array::from_fn(|i| r[i].start / chunks[i]);
            // A re-run of a shard keeps the chunks an earlier run wrote whole (all outputs).
            if rerun && whole_already(&store, &arrays, idx, codecs)? {
                skipped.fetch_add(arrays.len() as u64, Ordering::Relaxed);
                return Ok(());
            }
            let node = &outputs[0].1;
            match task_path(&nodes, r, chunks, caps, demand, plan) {
                TaskPath::Streamed => {
                    let key = arrays[0].chunk_key(&idx).to_string();
                    if computes_f64(&[node]) {
                        self.write_streamed::<f64>(&store, &key, node, r, chunks, codecs)?;
                    } else {
                        self.write_streamed::<f32>(&store, &key, node, r, chunks, codecs)?;
                    }
                    self.stats.chunks_written.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                TaskPath::Strips(rows) => {
                    let keys: Vec<String> = arrays
                        .iter()
                        .map(|a| a.chunk_key(&idx).to_string())
                        .collect();
                    let wide = computes_f64(&nodes);
                    if wide {
                        self.write_strips::<f64>(&store, &keys, &nodes, r, chunks, rows, codecs)?;
                    } else {
                        self.write_strips::<f32>(&store, &keys, &nodes, r, chunks, rows, codecs)?;
                    }
                    return Ok(());
                }
                TaskPath::Whole => {}
            }
            for ((_, node), arr) in outputs.iter().zip(&arrays) {
                let res = if computes_f64(&[node]) {
                    store_result(arr, idx, node, pad(self.eval::<f64>(node, r)?, chunks, r))
                } else {
                    store_result(arr, idx, node, pad(self.eval::<f32>(node, r)?, chunks, r))
                };
                res.map_err(|e| ExecError::write(arr.chunk_key(&idx).to_string(), e))?;
                self.stats.chunks_written.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })?;
        // One writer per object: in a job, shard 0 writes the coordinates and metadata.
        if shard.is_none_or(|s| s.index == 0) {
            layout::write_coords(&store, geobox, times, time_bounds)?;
            for ((name, _), a) in outputs.iter().zip(&arrays) {
                a.store_metadata()
                    .map_err(|e| ExecError::write(format!("{name}/zarr.json"), e))?;
            }
        }
        report.skipped = skipped.load(Ordering::Relaxed);
        report.written = report.chunks - report.skipped;
        if let (Some(job), Some(sh)) = (&job, shard) {
            let marker = store::job::ShardMarker {
                fingerprint: fingerprint.clone(),
                index: sh.index,
                count: sh.count,
                chunks: report.chunks,
                skipped: report.skipped,
                bytes: report.chunks * chunks.iter().product::<u64>() * 4,
            };
            store::job::finish_shard(&store, job, &marker)?;
            return Ok(report);
        }
        // The same group metadata a sharded job's commit writes.
        let job = calc_job(&fingerprint, 1, geobox.has_crs());
        store::gate::committing(url, || -> Result<(), ExecError> {
            layout::write_group(&store, &job.product, &write_id, job.attributes)?;
            // Committed: the marker that said whose unfinished result this was goes.
            store::job::clear(&store, 1)?;
            if let Some(st) = staging {
                st.swap()?;
            }
            Ok(())
        })?;
        Ok(report)
    }
}

/// Whether every output's chunk `idx` is in the store and whole (its checksums hold).
fn whole_already<S: ?Sized>(
    store: &Store,
    arrays: &[zarrs::array::Array<S>],
    idx: [u64; 3],
    codecs: Codecs,
) -> Result<bool, ExecError> {
    for a in arrays {
        let key = a.chunk_key(&idx).to_string();
        match store.get(&key)? {
            Some(b) if store::job::verify_object(&b, codecs.crc32c, None) => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

impl Session {
    /// Compute and write the chunk of `node` over `r` strip by strip (see `TaskPlan::streamed`).
    fn write_streamed<F: Float + bytemuck::Pod>(
        &self,
        store: &Store,
        key: &str,
        node: &Arc<Node>,
        r: &[Range<u64>; 3],
        chunks: [u64; 3],
        codecs: Codecs,
    ) -> Result<(), ExecError> {
        let region = [0, 1, 2].map(|i| r[i].end - r[i].start);
        let mut w = crate::store::ChunkWriter::new(store, key, codecs, chunks, region, F::nan())?;
        self.median_streamed::<F>(node, r, &mut w)?;
        w.finish()?;
        Ok(())
    }
}

/// CF `cell_methods` of a result: what its sources already were (a band of a reduced cube
/// says `time: median`), then its reductions in the order applied (`time: median time: mean`
/// is a mean of medians, legal CF), or `None` when nothing was ever reduced. Only CF's method
/// names (CF 1.11 Appendix E): a count is `sum` (of the presence of a value), with `long_name`
/// `number_of_observations of …` saying it counts (see where the attributes are written).
fn cell_methods(node: &Node) -> Option<String> {
    let parts: Vec<String> = node.fold(|n, kids: &[Vec<String>]| {
        // Operands combined elementwise (`mean(nir) - mean(red)`) are said once: an entry is
        // kept as many times as one operand has it, never once per operand.
        let mut v: Vec<String> = Vec::new();
        for k in kids {
            for (i, s) in k.iter().enumerate() {
                let in_k = k[..=i].iter().filter(|x| *x == s).count();
                if v.iter().filter(|x| *x == s).count() < in_k {
                    v.push(s.clone());
                }
            }
        }
        match &n.op {
            Op::Source { src, .. } => {
                let stored = src.attributes().and_then(|a| a.get("cell_methods"));
                let stored = stored.and_then(serde_json::Value::as_str).map(str::trim);
                v.extend(stored.filter(|s| !s.is_empty()).map(String::from));
            }
            // Applied to what its input already is: appended, never merged away.
            Op::Reduce { op, axis, .. } => v.push(format!(
                "{}: {}",
                crate::store::DIMS[*axis],
                match op {
                    ReduceOp::Mean => "mean",
                    ReduceOp::Median => "median",
                    ReduceOp::Min => "minimum",
                    ReduceOp::Max => "maximum",
                    ReduceOp::Sum => "sum",
                    ReduceOp::Count => "sum",
                    ReduceOp::Std => "standard_deviation",
                }
            )),
            _ => {}
        }
        v
    });
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// What a result's values are, carried by anything computed from it (a persisted
/// intermediate included): its `cell_methods`.
pub(crate) fn provenance(node: &Node) -> serde_json::Map<String, serde_json::Value> {
    let mut attrs = serde_json::Map::new();
    if let Some(cm) = cell_methods(node) {
        attrs.insert("cell_methods".into(), serde_json::json!(cm));
    }
    attrs
}

/// The descriptive attributes a band keeps when it is written as it is (`load --out`, a
/// selection, `calc --expr v=nir`): its values, dtype and nodata are the source's, so its
/// name, units and flags still hold. Packing is never among them: a packed band is read,
/// and so written, decoded (see [`passed_through`]).
/// Anything computed drops them: whether `nir * 2` keeps `units` (or `nir / red` means
/// anything in them) is not knowable here, and a wrong unit is worse than none.
const PASSED_THROUGH: [&str; 11] = [
    "long_name",
    "standard_name",
    "units",
    "description",
    "comment",
    "flag_values",
    "flag_masks",
    "flag_meanings",
    "valid_min",
    "valid_max",
    "valid_range",
];

/// [`PASSED_THROUGH`] attributes of a result that is a stored band as it is, else none.
/// A packed band (`scale_factor`/`add_offset`, xarray-written) is read decoded, and so is
/// written decoded: float64 with NaN, as `--print` and xarray show it. Keeping the raw
/// integers and their packing instead would be the one place chunkcube handed out stored
/// values rather than the values it computes with (a `--isel` selection and `v=nir*1` would
/// then differ in dtype and values); so the attributes that only hold for the raw values
/// ([`crate::store::packing::RAW_DOMAIN`]: packing, valid ranges, flags) are dropped, names
/// and units kept.
fn passed_through(node: &Node) -> serde_json::Map<String, serde_json::Value> {
    match &node.op {
        Op::Source { src, .. } if !src.is_persisted() => {
            let attrs = src.attributes().cloned().unwrap_or_default();
            let packed = crate::store::packing::is_packed(&attrs);
            attrs
                .into_iter()
                .filter(|(k, _)| PASSED_THROUGH.contains(&k.as_str()))
                .filter(|(k, _)| {
                    !packed || !crate::store::packing::RAW_DOMAIN.contains(&k.as_str())
                })
                .collect()
        }
        _ => serde_json::Map::new(),
    }
}

impl Session {
    /// Compute the output chunks of `nodes` over `r` in strips of `rows` rows, each strip
    /// encoded as it comes; the chunks read are verified before any output chunk is committed.
    #[allow(clippy::too_many_arguments)]
    fn write_strips<F: Float + bytemuck::Pod>(
        &self,
        store: &Store,
        keys: &[String],
        nodes: &[&Arc<Node>],
        r: &[Range<u64>; 3],
        chunks: [u64; 3],
        rows: u64,
        codecs: Codecs,
    ) -> Result<(), ExecError> {
        let region = [0, 1, 2].map(|i| r[i].end - r[i].start);
        let mut writers = Vec::new();
        for (node, key) in nodes.iter().zip(keys) {
            let nd = result_nodata(node);
            let w = crate::with_dtype!(node.dtype, T => crate::store::ChunkWriter::new(
                store, key, codecs, chunks, region, <T as Element>::from_f64(nd),
            ))?;
            writers.push(w);
        }
        self.run_strips::<F>(nodes, r, rows, &mut |i, _, v| {
            let (node, w) = (nodes[i], &mut writers[i]);
            push_strip(w, node, v).map_err(|e| ExecError::write(keys[i].clone(), e))
        })?;
        for w in writers {
            w.finish()?;
            self.stats.chunks_written.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Push a strip computed in `F` as the node's dtype (missing values become its nodata).
fn push_strip<F: Float + bytemuck::Pod>(
    w: &mut crate::store::ChunkWriter<'_>,
    node: &Node,
    v: ArrayD<F>,
) -> Result<(), crate::store::StoreError> {
    if node.dtype == F::DTYPE {
        if let Some(flat) = v.as_slice() {
            return w.push_rows(flat, F::nan());
        }
        let flat: Vec<F> = v.iter().copied().collect();
        return w.push_rows(&flat, F::nan());
    }
    let nd = result_nodata(node);
    crate::with_dtype!(node.dtype, T => {
        let typed: Vec<T> = v.iter().map(|&x| {
            <T as Element>::from_f64(if x.is_nan() { nd } else { <F as Element>::to_f64(x) })
        }).collect();
        w.push_rows(&typed, <T as Element>::from_f64(nd))
    })
}

/// The nodata of a result: a loaded band keeps its own; other results are NaN (floats) or 0.
pub fn result_nodata(node: &Node) -> f64 {
    match &node.op {
        Op::Source { src, .. } if !src.is_persisted() => src.nodata().unwrap_or(0.0),
        _ if node.dtype.is_float() => f64::NAN,
        _ => 0.0,
    }
}

/// Store one output chunk computed in `F` as the node's dtype (missing values become the
/// result's nodata).
fn store_result<F: Float, S>(
    arr: &zarrs::array::Array<S>,
    idx: [u64; 3],
    node: &Node,
    full: ArrayD<F>,
) -> Result<(), zarrs::array::ArrayError>
where
    S: ?Sized
        + zarrs::storage::WritableStorageTraits
        + zarrs::storage::ReadableStorageTraits
        + 'static,
{
    if node.dtype == F::DTYPE {
        return arr.store_chunk(&idx, full);
    }
    let nd = result_nodata(node);
    crate::with_dtype!(node.dtype, T => {
        let typed: ArrayD<T> = full.mapv(|x| {
            <T as Element>::from_f64(if x.is_nan() { nd } else { <F as Element>::to_f64(x) })
        });
        arr.store_chunk(&idx, typed)
    })
}

/// Pad an edge chunk to the full chunk shape with NaN.
fn pad<F: Float>(a: ArrayD<F>, chunks: [u64; 3], r: &[Range<u64>; 3]) -> ArrayD<F> {
    let full: Vec<usize> = chunks.iter().map(|c| *c as usize).collect();
    if a.shape() == full.as_slice() {
        return a;
    }
    let mut p = ArrayD::<F>::from_elem(IxDyn(&full), F::nan());
    let sl: Vec<SliceInfoElem> = (0..3)
        .map(|i| SliceInfoElem::Slice {
            start: 0,
            end: Some((r[i].end - r[i].start) as isize),
            step: 1,
        })
        .collect();
    p.slice_mut(sl.as_slice()).assign(&a);
    p
}

/// Refuse an output that is, contains or lies inside a cube the graph reads (it would be
/// erased or overwritten while read).
fn check_not_an_input(nodes: &[&Arc<Node>], url: &str) -> Result<(), ExecError> {
    let target = crate::store::Location::parse(url)?;
    let bad = nodes.iter().find_map(|n| {
        n.fold(|node, kids: &[Option<String>]| match &node.op {
            crate::graph::Op::Source { src, .. }
                if src.location().is_some_and(|l| l.overlaps(&target)) =>
            {
                Some(src.name().to_string())
            }
            _ => kids.iter().find_map(|k| k.clone()),
        })
    });
    match bad {
        Some(band) => Err(ExecError::Invalid(format!(
            "cannot write to {url}: it is, contains or lies inside the cube that band '{band}' is read from; write the result somewhere else"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::cell_methods;
    use crate::exec::testing::Synthetic;
    use crate::exec::{ExecConfig, Session};
    use crate::graph::{BinaryOp, Node, Op, ReduceOp};
    use crate::store::DType;
    use std::sync::Arc;

    fn reduce(op: ReduceOp, axis: usize, input: &Arc<Node>) -> Arc<Node> {
        let (mut shape, mut present) = (input.shape, input.present);
        shape[axis] = 1;
        present[axis] = false;
        let input = input.clone();
        let op = Op::Reduce {
            op,
            axis,
            input,
            offset: [0; 3],
        };
        Node::new(op, shape, present, DType::F32)
    }

    fn add(a: &Arc<Node>, b: &Arc<Node>) -> Arc<Node> {
        let op = Op::Binary(BinaryOp::Add, a.clone(), b.clone());
        Node::new(op, a.shape, a.present, DType::F32)
    }

    /// Reductions are said in the order applied (repeats: tests/it/reduced.rs);
    /// operands that say the same are said once; a persisted result still says it.
    #[test]
    fn cell_methods_keep_order_merge_operands_and_survive_persist() {
        let a = Synthetic::new("a", [4, 8, 8], [2, 4, 4], DType::U16, 1, false).node();
        let m = reduce(ReduceOp::Mean, 0, &a);
        assert_eq!(cell_methods(&a), None);
        assert_eq!(cell_methods(&m).as_deref(), Some("time: mean"));
        assert_eq!(cell_methods(&add(&m, &m)).as_deref(), Some("time: mean"));
        let s = Session::new(ExecConfig::default()).unwrap();
        let p = s.persist(&m, [1, 4, 4]).unwrap();
        assert!(matches!(&p.op, Op::Source { .. }));
        assert_eq!(cell_methods(&p).as_deref(), Some("time: mean"));
        let then = reduce(ReduceOp::Max, 1, &add(&p, &m));
        assert_eq!(
            cell_methods(&then).as_deref(),
            Some("time: mean y: maximum")
        );
        let mm = reduce(ReduceOp::Median, 2, &reduce(ReduceOp::Mean, 1, &m));
        let both = add(&mm, &m);
        assert_eq!(
            cell_methods(&both).as_deref(),
            Some("time: mean y: mean x: median")
        );
        // A persisted result of no reduction says none.
        let b = Synthetic::new("b", [4, 8, 8], [2, 4, 4], DType::U16, 2, false).node();
        let pb = s.persist(&b, [2, 4, 4]).unwrap();
        assert_eq!(cell_methods(&pb), None);
    }
}
