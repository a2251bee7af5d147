//! Write the planned cube: whole chunks in parallel, resumable, committed last.

use super::jobplan::{object_bytes, shard_objects};
use super::output::prepare_output;
use super::plan::{plan_mosaic, MosaicPlan};
use super::scan::{discover, read_manifest, scan_tile, TileInfo, TileSource};
use super::IngestError;
use crate::store::job::{self, JobMarker, Shard, ShardMarker};
use crate::store::layout::{self, Codecs};
use crate::store::replace::Staging;
use crate::store::{gate, ChunkSpec, Store, StoreOptions};
use crate::with_dtype;
use rayon::prelude::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Where the tiles come from.
#[derive(Debug, Clone)]
pub enum Sources {
    /// A `path,band,time` CSV.
    Manifest(PathBuf),
    /// GeoTIFF files or folders (or `s3://`, `http(s)://` URLs) named the DE Africa way.
    Paths(Vec<PathBuf>),
    /// A STAC ItemCollection JSON file (`--stac`): asset keys are bands, `datetime` the time.
    Stac(PathBuf),
}

/// Options of an ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Chunk shape (`--chunks`; default time=1,y=1024,x=1024).
    pub chunks: ChunkSpec,
    /// Shard shape (`--shards`); dimensions left out take the chunk size.
    pub shards: Option<ChunkSpec>,
    /// Codecs (`--compression`).
    pub codecs: Codecs,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Replace an existing, different cube.
    pub overwrite: bool,
    /// Product name stored in the group attributes.
    pub product: String,
    /// No progress bar.
    pub quiet: bool,
    /// Ingest a mosaic even when its size looks absurd for its tiles (`--allow-huge`; see
    /// [`check_plan_size`]).
    pub allow_huge: bool,
    /// Report progress and throughput here as the ingest works (`--dashboard`).
    pub live: Option<std::sync::Arc<crate::progress::LiveStatus>>,
    /// Write only this shard of the job (`--shard I/N`) and leave the commit to
    /// [`crate::store::job::commit`] once every shard finished; `None`: the whole job,
    /// committed at its end.
    pub shard: Option<Shard>,
    /// Set it to stop the ingest early (Ctrl-C in a notebook): the tiles being read finish,
    /// nothing is committed and the ingest returns [`IngestError::Interrupted`]; a re-run
    /// resumes from the chunks written.
    pub cancel: Option<std::sync::Arc<AtomicBool>>,
    /// Only scan the tiles and save the scan in the output for the workers of a job
    /// (`--scan-only`; see [`super::savedscan`]); nothing else is written.
    pub scan_only: bool,
}

/// Test hook: ingests stop with an error after this many chunks (0: never), so tests can
/// interrupt one at a known point and check that re-running resumes.
static STOP_AFTER_CHUNKS: AtomicU64 = AtomicU64::new(0);

/// Make every later ingest in this process stop with an error after `n` chunks (`None`: run
/// to the end). A test hook (the command line's hidden `--stop-after-chunks`), not an option.
#[doc(hidden)]
pub fn stop_after_chunks(n: Option<u64>) {
    STOP_AFTER_CHUNKS.store(n.unwrap_or(0), Ordering::SeqCst);
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            chunks: ChunkSpec::Dims([Some(1), Some(1024), Some(1024)]),
            shards: None,
            codecs: Codecs::default(),
            threads: None,
            overwrite: false,
            product: "gm_s2_annual".into(),
            quiet: false,
            allow_huge: false,
            live: None,
            shard: None,
            cancel: None,
            scan_only: false,
        }
    }
}

/// What an ingest did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IngestReport {
    /// Tiles scanned.
    pub tiles: usize,
    /// Chunks written now.
    pub chunks_written: u64,
    /// Chunks found complete from an earlier, interrupted run.
    pub chunks_skipped: u64,
    /// Whether the cube was already complete (nothing done).
    pub up_to_date: bool,
    /// Decoded pixel bytes produced.
    pub pixel_bytes: u64,
    /// Wall time.
    pub elapsed_s: f64,
}

pub(crate) fn fnv64(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Mosaics up to this many pixels are never called absurd.
const PLAIN_MOSAIC_PIXELS: u64 = 1 << 28;

/// Refuse, before anything is written, a mosaic whose size is absurd for its tiles: mostly
/// empty (the tiles cover under 1/16 of it: a tile far from the others, a wrong CRS) or far
/// larger decoded than the files holding it (over 1000x: sparse or corrupt headers claiming
/// huge rasters). Either would run for hours writing nodata. `--allow-huge` insists.
pub fn check_plan_size(plan: &MosaicPlan, infos: &[TileInfo]) -> Result<(), IngestError> {
    let g = &plan.geobox;
    let mosaic = g.width.saturating_mul(g.height);
    if mosaic <= PLAIN_MOSAIC_PIXELS {
        return Ok(());
    }
    // Coverage of the best-covered (band, time): the tiles' own pixels.
    let covered = plan
        .bands
        .iter()
        .flat_map(|b| b.tiles.iter())
        .map(|ts| ts.iter().map(|t| t.width * t.height).sum::<u64>())
        .max()
        .unwrap_or(0);
    let file_bytes: u64 = infos
        .iter()
        .map(|t| {
            if super::remote::is_remote_path(&t.source.path) {
                super::remote::stat(&t.source.path).map_or(0, |s| s.0)
            } else {
                std::fs::metadata(&t.source.path).map_or(0, |m| m.len())
            }
        })
        .sum();
    let decoded: u64 = plan
        .bands
        .iter()
        .map(|b| mosaic.saturating_mul(b.dtype.size() as u64))
        .sum::<u64>()
        .saturating_mul(plan.times.len() as u64);
    let gpx = |v: u64| match v {
        0..1_000_000 => format!("{v} px"),
        1_000_000..1_000_000_000 => format!("{:.1} Mpx", v as f64 / 1e6),
        _ => format!("{:.2} Gpx", v as f64 / 1e9),
    };
    let extent = format!(
        "the mosaic is {} x {} px ({}, {:.0} x {:.0} km)",
        g.width,
        g.height,
        gpx(mosaic),
        g.width as f64 * g.transform[1].abs() / 1e3,
        g.height as f64 * g.transform[5].abs() / 1e3
    );
    if covered.saturating_mul(16) < mosaic {
        return Err(IngestError::Implausible(format!(
                "{extent} but its tiles cover only {} of it (a tile far from the others, or in another CRS?); check the tiles' bounds with gdalinfo, or pass --allow-huge to ingest it anyway",
                gpx(covered)
            )));
    }
    if decoded > file_bytes.saturating_mul(1000) {
        return Err(IngestError::Implausible(format!(
                "{extent}, {:.1} GB decoded, from {:.1} MB of files (sparse or corrupt tiles?); pass --allow-huge to ingest it anyway",
                decoded as f64 / 1e9,
                file_bytes as f64 / 1e6
            )));
    }
    Ok(())
}

/// What makes a tile the same input to a resumed ingest: its canonical path (sources are
/// canonicalised when read), size and modification time, and a sample of its bytes (the head
/// and tail, where a GeoTIFF keeps its header and the last strips), so a tile rewritten in
/// place is a different input even within the file system's time resolution.
pub(crate) fn tile_identity(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    if super::remote::is_remote_path(path) {
        return super::remote::identity(path);
    }
    let m = std::fs::metadata(path).ok();
    let len = m.as_ref().map(|m| m.len()).unwrap_or(0);
    let mtime = m
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut sample = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        const PART: u64 = 64 << 10;
        let _ = (&mut f).take(PART).read_to_end(&mut sample);
        if len > 2 * PART && f.seek(SeekFrom::Start(len - PART)).is_ok() {
            let _ = f.take(PART).read_to_end(&mut sample);
        }
    }
    format!(
        "{}:{len}:{mtime}:{:08x}",
        path.display(),
        crc32c::crc32c(&sample)
    )
}

/// Resolve `--chunks` and `--shards` against the planned shape.
pub(crate) fn chunk_shapes(
    plan: &MosaicPlan,
    opts: &IngestOptions,
) -> Result<([u64; 3], Option<[u64; 3]>), IngestError> {
    let shape = [
        plan.times.len() as u64,
        plan.geobox.height,
        plan.geobox.width,
    ];
    // As dask_chunks: -1 or a dimension left out means the whole dimension.
    let requested: [u64; 3] = match &opts.chunks {
        ChunkSpec::Dims(d) => std::array::from_fn(|i| d[i].unwrap_or(shape[i]).max(1)),
        _ => {
            return Err(IngestError::BadOption {
                flag: "--chunks".into(),
                msg: "ingest needs pixel sizes such as time=1,y=1024,x=1024".into(),
            })
        }
    };
    let chunks: [u64; 3] = std::array::from_fn(|i| requested[i].min(shape[i].max(1)));
    let limit = 1u64 << 31;
    if chunks.iter().product::<u64>() > limit {
        return Err(IngestError::BadOption {
            flag: "--chunks".into(),
            msg: format!("{chunks:?} is more than 2^31 pixels per chunk"),
        });
    }
    let shards = match &opts.shards {
        None => None,
        Some(ChunkSpec::Dims(d)) => {
            let mut s = [0u64; 3];
            for i in 0..3 {
                // Shards must hold whole requested chunks; both are then clipped to the array
                // (a shard never needs to be larger than the chunks covering the array).
                let req = d[i].unwrap_or(requested[i]);
                if req % requested[i] != 0 {
                    return Err(IngestError::BadOption {
                        flag: "--shards".into(),
                        msg: format!(
                            "shard size {} along {} is not a multiple of the chunk size {}",
                            req,
                            crate::store::DIMS[i],
                            requested[i]
                        ),
                    });
                }
                s[i] = req.min(shape[i].max(1).div_ceil(chunks[i]) * chunks[i]);
            }
            if s.iter().product::<u64>() > limit {
                return Err(IngestError::BadOption {
                    flag: "--shards".into(),
                    msg: format!("{s:?} is more than 2^31 pixels per shard"),
                });
            }
            Some(s)
        }
        Some(_) => {
            return Err(IngestError::BadOption {
                flag: "--shards".into(),
                msg: "expected y=N,x=N".into(),
            })
        }
    };
    Ok((chunks, shards))
}

/// The tiles the sources name.
pub(crate) fn read_sources(sources: &Sources) -> Result<Vec<TileSource>, IngestError> {
    match sources {
        Sources::Manifest(m) => read_manifest(m),
        Sources::Paths(p) => discover(p),
        Sources::Stac(f) => super::stac::read_stac(f),
    }
}

/// Scan, plan and write a cube at `out`.
pub fn ingest(
    sources: &Sources,
    out: &str,
    opts: &IngestOptions,
) -> Result<IngestReport, IngestError> {
    let start = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .map_err(|e| IngestError::BadOption {
            flag: "--threads".into(),
            msg: e.to_string(),
        })?;
    // One writer per output, held until the ingest returns; the workers of a job share
    // theirs by design (the job's fingerprint keeps other plans out).
    let _lock = match opts.shard {
        None => Some(crate::store::lock::acquire(out)?),
        Some(_) => None,
    };
    pool.install(|| ingest_in_pool(sources, out, opts, start))
}

fn ingest_in_pool(
    sources: &Sources,
    out: &str,
    opts: &IngestOptions,
    start: Instant,
) -> Result<IngestReport, IngestError> {
    // GDAL's block cache defaults to 5% of RAM; every tile window is read once, so keep it
    // small unless the user chose otherwise.
    if std::env::var_os("GDAL_CACHEMAX").is_none() {
        let _ = gdal::config::set_config_option("GDAL_CACHEMAX", "64");
    }
    let srcs = read_sources(sources)?;
    // A worker of a job plans from the scan saved by `--scan-only`, when it is of these tiles.
    let reused = match opts.shard {
        Some(_) => super::savedscan::load_matching(&Store::open(out, true)?, &srcs)?,
        None => None,
    };
    let saved = reused.is_some();
    let (infos, identities) = match reused {
        Some(r) => {
            eprintln!(
                "{out}: planning from the saved scan of {} tiles ({}); no tile headers read",
                r.infos.len(),
                job::SCAN_KEY
            );
            (r.infos, r.identities)
        }
        None => {
            let infos = scan_all(&srcs, opts)?;
            let plan = plan_mosaic(&infos)?;
            if !opts.allow_huge {
                check_plan_size(&plan, &infos)?;
            }
            let ids: Vec<String> = infos
                .par_iter()
                .map(|t| tile_identity(&t.source.path))
                .collect();
            if opts.scan_only {
                let bytes: Vec<u64> = infos
                    .par_iter()
                    .map(|t| super::jobplan::file_bytes(&t.source.path))
                    .collect();
                let store = Store::open(out, true)?;
                // Beside a cube or a job's objects only, never into someone else's files.
                if store.get("zarr.json")?.is_none()
                    && store
                        .list_sizes("")?
                        .iter()
                        .any(|(k, _)| !k.ends_with(".tmp") && !job::is_job_key(k))
                    && job::read_job(&store)?.is_none()
                {
                    return Err(IngestError::OutputExists {
                        url: store.url().to_string(),
                        msg: "is not empty and is not a chunkcube cube (--scan-only saves the scan where the workers will write)".into(),
                    });
                }
                super::savedscan::save(&store, &srcs, &infos, &ids, &bytes)?;
                return Ok(IngestReport {
                    tiles: infos.len(),
                    elapsed_s: start.elapsed().as_secs_f64(),
                    ..Default::default()
                });
            }
            (infos, ids)
        }
    };
    let plan = plan_mosaic(&infos)?;
    let (chunks, shards) = chunk_shapes(&plan, opts)?;
    let checks = super::tilecheck::TileChecks::new(&infos, &identities, saved);

    let fingerprint = fnv64(&format!(
        "{:?}|{:?}|{:?}|{:?}|{}|{}",
        plan,
        chunks,
        shards,
        opts.codecs,
        opts.product,
        identities.join(",")
    ));

    let shard = opts.shard.unwrap_or(Shard::WHOLE);
    if opts.shard.is_some() && opts.overwrite {
        return Err(IngestError::BadOption {
            flag: "--overwrite".into(),
            msg: "cannot be combined with --shard (each worker would erase the others' chunks); clear the output once before submitting the job".into(),
        });
    }
    let mut attrs = serde_json::Map::new();
    attrs.insert("ingest_fingerprint".into(), json!(fingerprint));
    attrs.insert(
        "crs".into(),
        json!(plan
            .geobox
            .epsg
            .map(|e| format!("EPSG:{e}"))
            .unwrap_or_default()),
    );
    if plan.geobox.has_crs() {
        attrs.insert("grid_mapping".into(), json!("spatial_ref"));
    }
    let job = JobMarker {
        fingerprint: fingerprint.clone(),
        shards: shard.count,
        kind: "ingest".into(),
        product: opts.product.clone(),
        write_id: Some(fingerprint.clone()),
        attributes: attrs,
    };

    // With crc32c (the default) a resumed run verifies every chunk it finds, so chunks need
    // not be synced one by one: the shard marker's sync makes them durable before any commit.
    let sopts = StoreOptions {
        deferred_sync: opts.codecs.crc32c,
        ..Default::default()
    };
    let mut store = Store::open_with(out, true, &sopts)?;
    // Over a committed cube, the new one is written beside it and switched in at the end
    // (a resumed overwrite finds its chunks again: the staging is named by the fingerprint).
    let staging = match opts.overwrite {
        true => crate::store::replace::stage(out, &fingerprint, &sopts)?,
        false => None,
    };
    if let Some(st) = &staging {
        store = st.store().clone();
    }
    let mut report = IngestReport {
        tiles: infos.len(),
        ..Default::default()
    };
    if !prepare_output(&store, &job, opts.overwrite, opts.shard.is_some())? {
        report.up_to_date = true;
        report.elapsed_s = start.elapsed().as_secs_f64();
        return Ok(report);
    }
    if job::finished(&store, &job, shard.index)? {
        // Killed between this shard's marker and the commit: only the commit is left.
        if opts.shard.is_none() {
            commit(out, &store, staging)?;
        }
        report.up_to_date = true;
        report.elapsed_s = start.elapsed().as_secs_f64();
        return Ok(report);
    }
    let rerun = job::start_shard(&store, shard)?;

    let shape = [
        plan.times.len() as u64,
        plan.geobox.height,
        plan.geobox.width,
    ];
    let outer = shards.unwrap_or(chunks);
    let inner = shards.map(|s| (0..3).map(|i| s[i] / chunks[i]).product::<u64>());
    let mut arrays = Vec::new();
    for b in &plan.bands {
        let builder = layout::band_builder(
            b.dtype,
            b.nodata,
            shape,
            chunks,
            shards,
            opts.codecs,
            &serde_json::Map::new(),
            !plan.geobox.wkt.is_empty(),
        );
        let arr = builder
            .build(store.storage(), &format!("/{}", b.name))
            .map_err(|e| IngestError::Write {
                key: format!("{}/zarr.json", b.name),
                msg: e.to_string(),
            })?;
        arrays.push(arr);
    }

    let tasks = shard_objects(&plan, shape, outer, shard);
    let pb = crate::progress::bar(tasks.len() as u64, "ingesting chunks", opts.quiet);
    let done = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let live = opts
        .live
        .as_ref()
        .map(|l| live_writes(l, &store, &plan, &tasks));
    let write_start = Instant::now();
    let stop_after = STOP_AFTER_CHUNKS.load(Ordering::SeqCst);
    tasks.par_iter().try_for_each(|&(bi, idx)| {
        let band = &plan.bands[bi];
        let arr = &arrays[bi];
        // A re-run keeps what an earlier run of this shard wrote whole.
        if rerun {
            let key = arr.chunk_key(&idx).to_string();
            if let Some(b) = store.get(&key)? {
                if job::verify_object(&b, opts.codecs.crc32c, inner) {
                    skipped.fetch_add(1, Ordering::Relaxed);
                    if let Some(l) = &live {
                        l.add(bi, 1);
                    }
                    pb.inc(1);
                    return Ok(());
                }
            }
        }
        if cancelled(opts) {
            return Err(IngestError::Interrupted);
        }
        if stop_after > 0 && done.load(Ordering::SeqCst) >= stop_after {
            return Err(IngestError::Stopped(stop_after));
        }
        let t0 = live.as_ref().map(|l| l.status().now_us());
        let chunk_bytes = outer.iter().product::<u64>() * band.dtype.size() as u64;
        if let Some(l) = &live {
            l.status()
                .gauges()
                .memory_in_use
                .fetch_add(chunk_bytes, Ordering::Relaxed);
        }
        let n = with_dtype!(band.dtype, T => super::chunk::write_chunk::<T>(&checks, band, arr, idx, outer, shape));
        if let (Some(l), Some(t0)) = (&live, t0) {
            let g = l.status().gauges();
            g.memory_in_use.fetch_sub(chunk_bytes, Ordering::Relaxed);
            if let Ok(n) = &n {
                g.bytes_read.fetch_add(*n, Ordering::Relaxed);
                l.add(bi, 1);
                l.task_done(rayon::current_thread_index().unwrap_or(0), t0);
            }
        }
        let n = n?;
        bytes.fetch_add(n, Ordering::Relaxed);
        done.fetch_add(1, Ordering::SeqCst);
        pb.inc(1);
        let mb = bytes.load(Ordering::Relaxed) as f64
            / 1e6
            / write_start.elapsed().as_secs_f64().max(1e-6);
        pb.set_message(format!("{mb:.0} MB/s"));
        Ok(())
    })?;
    pb.finish_and_clear();
    report.chunks_written = done.load(Ordering::SeqCst);
    report.chunks_skipped = skipped.load(Ordering::SeqCst);
    report.pixel_bytes = bytes.load(Ordering::Relaxed);

    // Shard 0 also writes the coordinates and array metadata (one writer per object), then
    // each shard its marker. The group metadata is written by the commit alone.
    if shard.index == 0 {
        layout::write_coords(&store, &plan.geobox, &plan.times, None)?;
        for (arr, b) in arrays.iter().zip(&plan.bands) {
            arr.store_metadata().map_err(|e| IngestError::Write {
                key: format!("{}/zarr.json", b.name),
                msg: e.to_string(),
            })?;
        }
    }
    let marker = ShardMarker {
        fingerprint: fingerprint.clone(),
        index: shard.index,
        count: shard.count,
        chunks: tasks.len() as u64,
        skipped: report.chunks_skipped,
        bytes: tasks
            .iter()
            .map(|&(bi, idx)| object_bytes(&plan.bands[bi], idx, outer, shape))
            .sum(),
    };
    job::finish_shard(&store, &job, &marker)?;
    if opts.shard.is_none() {
        commit(out, &store, staging)?;
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Commit a one-process ingest: the group metadata, then (for an overwrite) the swap into
/// place, as one section an interrupt waits for.
fn commit(out: &str, store: &Store, staging: Option<Staging>) -> Result<(), IngestError> {
    gate::committing(out, || -> Result<(), IngestError> {
        job::commit_store(store)?;
        if let Some(st) = staging {
            st.swap()?;
        }
        Ok(())
    })
}

fn cancelled(opts: &IngestOptions) -> bool {
    opts.cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed))
}

/// Scan every tile's header in parallel (with the progress bar and the live status).
fn scan_all(srcs: &[TileSource], opts: &IngestOptions) -> Result<Vec<TileInfo>, IngestError> {
    let pb = crate::progress::bar(srcs.len() as u64, "scanning tiles", opts.quiet);
    let n = srcs.len() as u64;
    let live = opts.live.as_ref().map(|l| {
        l.set_workers(rayon::current_num_threads());
        let scan = crate::progress::LayerSpec {
            name: "scan tiles".into(),
            tasks: n,
            per_task: 1,
        };
        l.begin_run("scanning tiles", n, &[scan])
    });
    let scanned: Vec<Result<TileInfo, IngestError>> = srcs
        .par_iter()
        .map(|s| {
            if cancelled(opts) {
                return Err(IngestError::Interrupted);
            }
            let t0 = live.as_ref().map(|l| l.status().now_us());
            let r = scan_tile(s);
            pb.inc(1);
            if let (Some(l), Some(t0)) = (&live, t0) {
                l.task_done(rayon::current_thread_index().unwrap_or(0), t0);
            }
            r
        })
        .collect();
    pb.finish_and_clear();
    if cancelled(opts) {
        return Err(IngestError::Interrupted);
    }
    scanned.into_iter().collect()
}

/// Register an ingest's chunk writes (this shard's) with the live status: one layer per
/// band (chunks kept from an earlier run count as done when found), bytes written pulled
/// from the output store's counters.
fn live_writes(
    live: &std::sync::Arc<crate::progress::LiveStatus>,
    store: &Store,
    plan: &MosaicPlan,
    tasks: &[(usize, [u64; 3])],
) -> std::sync::Arc<crate::progress::LiveRun> {
    let layers: Vec<crate::progress::LayerSpec> = plan
        .bands
        .iter()
        .enumerate()
        .map(|(bi, b)| crate::progress::LayerSpec {
            name: format!("write {}", b.name),
            tasks: tasks.iter().filter(|t| t.0 == bi).count() as u64,
            per_task: 0,
        })
        .collect();
    let run = live.begin_run("ingesting chunks", tasks.len() as u64, &layers);
    let counters = store.counters().clone();
    live.set_sampler(move |g| {
        let w = counters.snapshot().bytes_written;
        g.bytes_written.store(w, Ordering::Relaxed);
    });
    run
}
