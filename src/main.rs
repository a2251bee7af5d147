//! The `chunkcube` command line: a thin layer over the library.

mod cli_jobs;

use anyhow::{anyhow, bail, Context, Result};
use chunkcube::cube::{Calc, CalcOutput, Cube, CubeInfo, Query};
use chunkcube::dashboard::{Dashboard, DEFAULT_ADDR};
use chunkcube::exec::{ExecConfig, Session};
use chunkcube::ingest::ingest;
use chunkcube::progress::LiveStatus;
use chunkcube::store::{parse_bytes, ChunkSpec};
use clap::{Args, Parser, Subcommand};
use cli::output::{or_replaced, print_arrays, stdout, summary, write_graph};
use cli::{export, help};
use cli_jobs::{run_commit, shard_flag, CommitArgs};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

mod cli;

#[derive(Parser)]
#[command(
    name = "chunkcube",
    version,
    about = "Out-of-core Zarr v3 cubes for Earth-observation rasters",
    long_about = "Ingest GeoTIFF tiles into a chunked Zarr v3 cube (local or s3://), then query, chain band math and reduce lazily, fetching only the chunks a computation touches, in parallel and inside a memory limit."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Turn GeoTIFF tiles into a cube (one array per band, dims time, y, x).
    #[command(after_help = help::INGEST_EXAMPLES)]
    Ingest(IngestArgs),
    /// Describe a cube: bands, shape, chunks, dtype, nodata, CRS, bounds, times, stored bytes.
    #[command(after_help = help::INFO_EXAMPLES)]
    Info(InfoArgs),
    /// Select from a cube (like dc.load): print, summarise, explain or write the selection.
    #[command(after_help = help::LOAD_EXAMPLES)]
    Load(LoadArgs),
    /// Band math and reductions over a selection, computed chunk by chunk.
    #[command(after_help = help::calc_help())]
    Calc(CalcArgs),
    /// Write GeoTIFFs (COG by default) or PNG quicklooks: one file per band or result per time
    /// step, named <band>_<YYYY-MM-DD>.tif, for QGIS and every GDAL tool.
    #[command(after_help = help::export_help())]
    Export(export::ExportArgs),
    /// Check that a cube holds everything its commit declared: metadata, every chunk the
    /// manifest lists (present, right size), coordinates; with --deep every chunk decoded.
    Verify(cli::verify::VerifyArgs),
    /// Complete a cube written by N workers (`ingest`/`calc … --shard I/N`): checks every
    /// shard finished, then writes the group metadata; lists the missing shards otherwise.
    Commit(CommitArgs),
    /// Plan a job of N workers before submitting it: per shard the chunks, bytes read and
    /// written, GETs/PUTs and memory, and the job's totals (`--json` for all of it).
    Plan(cli::plan::PlanArgs),
}

#[derive(Args)]
struct InfoArgs {
    /// The cube: local directory or s3://bucket/prefix.
    cube: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct Selection {
    /// Longitude range MIN,MAX (EPSG:4326); needs --lat.
    #[arg(long, allow_hyphen_values = true, value_name = "MIN,MAX")]
    lon: Option<String>,
    /// Latitude range MIN,MAX (EPSG:4326); needs --lon.
    #[arg(long, allow_hyphen_values = true, value_name = "MIN,MAX")]
    lat: Option<String>,
    /// Box in the cube's CRS: MINX,MINY,MAXX,MAXY.
    #[arg(long, allow_hyphen_values = true, value_name = "MINX,MINY,MAXX,MAXY")]
    bbox: Option<String>,
    /// Index ranges in cube indices, e.g. time=0:1,y=100:200,x=100:200 (end exclusive).
    #[arg(long, value_name = "DIM=A:B,...")]
    isel: Option<String>,
    /// Time range START/END, inclusive, of ISO periods: a year or year-month END means its
    /// whole period (2019/2020 is both years), a single period (2019, 2019-06) that period;
    /// e.g. 2019-01-01/2019-06-30, 2019-07-02T10:00/2019-07-02T12:00.
    #[arg(long, value_name = "START/END")]
    time: Option<String>,
    /// Bands to use, e.g. red,nir (default: all).
    #[arg(long, value_delimiter = ',')]
    measurements: Option<Vec<String>>,
    /// Query chunks as dask_chunks: time=1,y=3000,x=3000 (-1 = whole), a size (64MiB) or auto.
    #[arg(long)]
    chunks: Option<String>,
}

#[derive(Args, Clone)]
struct ExecArgs {
    /// Memory limit for everything chunkcube tracks (default: a quarter of RAM, at most 8GiB).
    #[arg(long, value_name = "SIZE")]
    memory_limit: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where to spill intermediates that do not fit (default: the system temp dir).
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// For s3:// cubes: keep fetched chunk objects in this directory, so re-runs and chained
    /// computations over the same region do not fetch them again.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Write statistics (chunks_read, bytes_read, chunks_written, tasks, spilled_bytes,
    /// peak_tracked_bytes, elapsed_s) as JSON.
    #[arg(long, value_name = "FILE.json")]
    stats: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Replace an existing cube at --out.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    dash: DashboardArgs,
    /// Pause every task this many milliseconds (for testing the dashboard).
    #[arg(long, hide = true, value_name = "MS")]
    pace_tasks_ms: Option<u64>,
    /// Tasks wait while FILE exists (for testing the dashboard).
    #[arg(long, hide = true, value_name = "FILE")]
    hold_tasks_while: Option<PathBuf>,
    /// The first N tasks pass --hold-tasks-while (for testing a run held mid-write).
    #[arg(long, hide = true, value_name = "N")]
    hold_after_tasks: Option<u64>,
}

#[derive(Args, Clone)]
struct DashboardArgs {
    /// Serve a live page of the run (progress per layer, throughput, memory, task stream) at
    /// http://ADDR/ and its numbers at /status.json. ADDR defaults to 127.0.0.1:8787 (port 0:
    /// any free port; the URL is printed on stderr); only an address given explicitly can be
    /// reached from another machine.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_ADDR)]
    dashboard: Option<String>,
    /// Keep the dashboard up this many seconds after the run ends (it shows the summary).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0.0,
        requires = "dashboard"
    )]
    dashboard_linger: f64,
}

#[derive(Args)]
struct LoadArgs {
    /// The cube: local directory or s3://bucket/prefix.
    cube: String,
    #[command(flatten)]
    sel: Selection,
    #[command(flatten)]
    exec: ExecArgs,
    /// Write the selection as a new cube (coordinates and CRS kept), in the stored chunks
    /// unless --chunks says otherwise, task by task inside --memory-limit.
    #[arg(long, group = "action")]
    out: Option<String>,
    /// Print the lazy dataset and each band's chunk table; reads no chunk.
    #[arg(long, group = "action")]
    summary: bool,
    /// Print values with their coordinates, large arrays summarised as numpy does (only the
    /// values shown are read).
    #[arg(long, group = "action")]
    print: bool,
    /// Print every value (selections up to a million values).
    #[arg(long, group = "action")]
    print_all: bool,
    /// Tell what the selection will fetch and hold (with --out: writing it), fetching nothing.
    #[arg(long, conflicts_with_all = ["summary", "print", "print_all"])]
    explain: bool,
    /// Write the task graph of the last band: FILE.dot (Graphviz), or FILE.svg/.png rendered
    /// with `dot`.
    #[arg(long, value_name = "FILE")]
    graph: Option<PathBuf>,
}

#[derive(Args)]
struct CalcArgs {
    /// The cube: local directory or s3://bucket/prefix.
    cube: String,
    /// [NAME=]EXPRESSION, e.g. 'ndvi=(nir-red)/(nir+red)' (unnamed: 'result'); repeat; later
    /// ones may use earlier names.
    #[arg(long = "expr", required = true)]
    exprs: Vec<String>,
    /// Reduce every result: OP:DIM with OP in mean, median, min, max, sum, count, std.
    #[arg(long, value_name = "OP:DIM")]
    reduce: Option<String>,
    #[command(flatten)]
    sel: Selection,
    #[command(flatten)]
    exec: ExecArgs,
    /// Write the results as a new cube.
    #[arg(long, group = "action")]
    out: Option<String>,
    /// Print the results with their coordinates, summarised as numpy does when large.
    #[arg(long, group = "action")]
    print: bool,
    /// Print every value of the results (up to a million values each).
    #[arg(long, group = "action")]
    print_all: bool,
    /// Tell what the computation will fetch and hold (with --out: writing it), fetching nothing.
    #[arg(long, conflicts_with_all = ["print", "print_all", "shard"])]
    explain: bool,
    /// Write the task graph: FILE.dot (Graphviz), or FILE.svg/.png rendered with `dot`.
    #[arg(long, value_name = "FILE")]
    graph: Option<PathBuf>,
    /// Write only shard I of N (0-based) of the job, for array jobs: `I/N`, or `auto/N` to
    /// take I from JOB_COMPLETION_INDEX (Kubernetes), SLURM_ARRAY_TASK_ID or
    /// AWS_BATCH_JOB_ARRAY_INDEX. Run `chunkcube commit` once every shard finished.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
}

fn pair(flag: &str, s: &str) -> Result<(f64, f64)> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("invalid {flag} '{s}': expected MIN,MAX numbers"))?;
    match v.as_slice() {
        [a, b] => Ok((*a, *b)),
        _ => bail!("invalid {flag} '{s}': expected MIN,MAX"),
    }
}

fn build_query(sel: &Selection) -> Result<Query> {
    let mut q = Query::new();
    if let Some(m) = &sel.measurements {
        q.measurements = Some(
            m.iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        );
    }
    if let Some(l) = &sel.lon {
        q.lon = Some(pair("--lon", l)?);
    }
    if let Some(l) = &sel.lat {
        q.lat = Some(pair("--lat", l)?);
    }
    if let Some(b) = &sel.bbox {
        let v: Vec<f64> = b
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow!("invalid --bbox '{b}': expected MINX,MINY,MAXX,MAXY"))?;
        if v.len() != 4 {
            bail!("invalid --bbox '{b}': expected 4 numbers MINX,MINY,MAXX,MAXY");
        }
        q.bbox = Some([v[0], v[1], v[2], v[3]]);
    }
    if let Some(s) = &sel.isel {
        q = q.isel_spec(s)?;
    }
    if let Some(t) = &sel.time {
        q = q.time_spec(t)?;
    }
    if let Some(c) = &sel.chunks {
        q.chunks = Some(ChunkSpec::parse(c)?);
    }
    Ok(q)
}

/// Run `work` (which returns its final summary), with a dashboard if `--dashboard` asked for
/// one: started before the work, told how it ended, kept up `--dashboard-linger` seconds.
fn with_dashboard(
    d: &DashboardArgs,
    command: &str,
    work: impl FnOnce(Option<Arc<LiveStatus>>) -> Result<Option<serde_json::Value>>,
) -> Result<()> {
    let Some(addr) = &d.dashboard else {
        return work(None).map(|_| ());
    };
    let linger = d.dashboard_linger;
    if !linger.is_finite() || !(0.0..=86400.0).contains(&linger) {
        bail!("invalid --dashboard-linger {linger}: give seconds between 0 and 86400");
    }
    let live = LiveStatus::new(command);
    let dash = Dashboard::start(addr, live.clone())?;
    eprintln!("dashboard: {}", dash.url());
    let r = work(Some(live.clone()));
    live.finish(match &r {
        Ok(summary) => Ok(summary.clone()),
        Err(e) => Err(printable(&chunkcube::store::redact(&one_line(e)))),
    });
    dash.close(std::time::Duration::from_secs_f64(linger));
    r.map(|_| ())
}

fn exec_config(e: &ExecArgs) -> Result<ExecConfig> {
    let mut c = ExecConfig::default();
    if let Some(m) = &e.memory_limit {
        c.memory_limit = parse_bytes(m).ok_or_else(|| {
            anyhow!("invalid --memory-limit '{m}': expected a size such as 512MiB or 2GB")
        })?;
    }
    if let Some(t) = threads_flag(e.threads)? {
        c.threads = t;
    }
    c.quiet = e.quiet;
    chunkcube::exec::pace_tasks(e.pace_tasks_ms.unwrap_or(0));
    chunkcube::exec::hold_after_tasks(e.hold_after_tasks.unwrap_or(0));
    if let Some(p) = &e.hold_tasks_while {
        chunkcube::exec::hold_tasks_while(p.clone());
    }
    c.spill_dir = e.spill_dir.clone();
    c.store.cache_dir = e.cache_dir.clone();
    Ok(c)
}

/// The most worker threads `--threads` accepts: past it, starting them alone takes seconds
/// and buys nothing (the work is bounded by cores and I/O).
const MAX_THREADS: usize = 1024;

/// `--threads`, checked: at least 1, at most [`MAX_THREADS`].
fn threads_flag(t: Option<usize>) -> Result<Option<usize>> {
    match t {
        Some(0) => bail!("invalid --threads 0: give at least 1"),
        Some(n) if n > MAX_THREADS => {
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            bail!("invalid --threads {n}: at most {MAX_THREADS} (this machine has {cores} cores; the default uses them all)")
        }
        t => Ok(t),
    }
}

fn session(e: &ExecArgs, live: &Option<Arc<LiveStatus>>) -> Result<Arc<Session>> {
    let mut c = exec_config(e)?;
    c.live = live.clone();
    Ok(Session::new(c)?)
}

fn write_stats(e: &ExecArgs, s: &Session) -> Result<()> {
    if let Some(p) = &e.stats {
        let text = serde_json::to_string_pretty(&s.stats())?;
        std::fs::write(p, text + "\n")
            .with_context(|| format!("writing --stats {}", p.display()))?;
    }
    Ok(())
}

fn run_info(a: InfoArgs) -> Result<()> {
    let info = CubeInfo::of(&Cube::open(&a.cube)?)?;
    let mut out = stdout();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&info)?)?;
    } else {
        write!(out, "{info}")?;
    }
    out.flush()?;
    Ok(())
}

fn run_load(a: LoadArgs, live: Option<Arc<LiveStatus>>) -> Result<Option<serde_json::Value>> {
    let s = session(&a.exec, &live)?;
    let cube = Cube::open_in(&a.cube, s.clone())?;
    if let Some(out) = &a.out {
        cube.check_output(out)?;
    }
    or_replaced(&cube, load_body(&a, &cube, &live))?;
    summary(a.exec.quiet, &s);
    write_stats(&a.exec, &s)?;
    Ok(Some(serde_json::to_value(s.stats())?))
}

fn load_body(a: &LoadArgs, cube: &Cube, live: &Option<Arc<LiveStatus>>) -> Result<()> {
    // A copy keeps the stored chunking unless --chunks says otherwise (bounded tasks, and the
    // output reads like its source); other actions stay lazy until they decide what to read.
    // (The actions are exclusive: --out is the action when given.)
    let writes = a.out.is_some();
    let mut q = if writes {
        stored_chunk_query(cube, &a.sel)?
    } else {
        build_query(&a.sel)?
    };
    if q.chunks.is_none() {
        q.chunks = Some(ChunkSpec::Auto);
    }
    let ds = cube.load(&q)?;
    if writes && !a.explain {
        ds.check_write_memory()?;
    }
    if let Some(g) = &a.graph {
        let last = ds
            .vars()
            .last()
            .ok_or_else(|| anyhow!("--graph: no band selected"))?;
        write_graph(g, &last.visualize())?;
    }
    if a.summary {
        let mut out = stdout();
        write!(out, "{ds}")?;
        for da in ds.vars() {
            writeln!(out, "\n{}:", da.name())?;
            write!(out, "{}", da.summary())?;
        }
        out.flush()?;
    } else if a.explain {
        let mut out = stdout();
        for da in ds.vars() {
            writeln!(out, "{}:", da.name())?;
            write!(out, "{}", da.explain_as(a.out.is_some()))?;
        }
        out.flush()?;
    } else if a.print || a.print_all {
        print_arrays(ds.vars(), a.print_all)?;
    } else if let Some(out) = &a.out {
        if let Some(l) = &live {
            for da in ds.vars() {
                l.add_explain(da.name(), serde_json::to_value(da.explain())?);
            }
        }
        ds.to_zarr(out, a.exec.overwrite)?;
        eprintln!("wrote {} band(s) to {out}", ds.names().len());
    } else if a.graph.is_none() {
        bail!("load needs one of --out CUBE, --summary, --print, --explain or --graph FILE");
    }
    Ok(())
}

/// The query of `sel`, in the stored chunks unless `--chunks` says otherwise: every band is
/// available lazily, and only those the expressions use are ever read.
fn stored_chunk_query(cube: &Cube, sel: &Selection) -> Result<Query> {
    let mut q = build_query(sel)?;
    if q.chunks.is_none() {
        let first = q
            .measurements
            .as_ref()
            .and_then(|m| m.first())
            .cloned()
            .or_else(|| cube.band_names().into_iter().next())
            .unwrap_or_default();
        let stored = cube.band(&first)?.chunk_shape();
        q.chunks = Some(ChunkSpec::Dims(stored.map(Some)));
    }
    Ok(q)
}

fn run_calc(a: CalcArgs, live: Option<Arc<LiveStatus>>) -> Result<Option<serde_json::Value>> {
    let shard = shard_flag(&a.shard)?;
    if shard.is_some() && a.out.is_none() {
        bail!("--shard needs --out CUBE (the workers of a job write one cube)");
    }
    let s = session(&a.exec, &live)?;
    let cube = Cube::open_in(&a.cube, s.clone())?;
    if let Some(out) = &a.out {
        cube.check_output(out)?;
    }
    // One writer per output, held until this command returns; the workers of a job share
    // theirs by design (the job's fingerprint keeps other plans out).
    let _lock = a
        .out
        .as_deref()
        .filter(|_| shard.is_none() && !a.explain)
        .map(chunkcube::store::lock::acquire)
        .transpose()?;
    or_replaced(&cube, calc_body(&a, &cube, &live, &shard))?;
    summary(a.exec.quiet, &s);
    write_stats(&a.exec, &s)?;
    Ok(Some(serde_json::to_value(s.stats())?))
}

fn calc_body(
    a: &CalcArgs,
    cube: &Cube,
    live: &Option<Arc<LiveStatus>>,
    shard: &Option<(chunkcube::store::job::Shard, String)>,
) -> Result<()> {
    let q = stored_chunk_query(cube, &a.sel)?;
    let calc = Calc::parse(&a.exprs, a.reduce.as_deref())?;
    let ds = cube.load(&q)?;
    let print = a.print || a.print_all;
    // Plan the whole run before computing anything: every result as it will be written.
    let output = if a.explain {
        CalcOutput::Tasks
    } else if print {
        CalcOutput::Memory
    } else if a.out.is_some() {
        CalcOutput::Cube
    } else {
        CalcOutput::Tasks
    };
    calc.check_memory(&ds, output)?;
    if let (Some(l), false) = (&live, a.explain) {
        for d in calc.lazy(&ds)?.vars() {
            l.add_explain(d.name(), serde_json::to_value(d.explain())?);
        }
    }
    // Described runs stay lazy; computed runs persist results that later expressions reuse.
    // A worker of a job computes only its chunks: nothing is persisted whole.
    let results = if a.explain || a.graph.is_some() || shard.is_some() {
        calc.lazy(&ds)?
    } else {
        calc.run(&ds)?
    };
    if let Some(g) = &a.graph {
        let last = results.vars().last().expect("at least one --expr");
        write_graph(g, &last.visualize())?;
    }
    if a.explain {
        let mut out = stdout();
        for d in results.vars() {
            writeln!(out, "{}:", d.name())?;
            write!(out, "{}", d.explain_as(a.out.is_some()))?;
        }
        out.flush()?;
    } else if print {
        print_arrays(results.vars(), a.print_all)?;
    } else if let (Some(out), Some((sh, name))) = (&a.out, &shard) {
        let r = results
            .to_zarr_shard(out, *sh)
            .with_context(|| name.clone())?;
        if r.up_to_date {
            eprintln!("{name} of {out} is already written; nothing to do");
        } else {
            eprintln!(
                "{name} of {out}: {} chunks written, {} kept from an earlier run; run `chunkcube commit {out}` once every shard finished",
                r.written, r.skipped
            );
        }
    } else if let Some(out) = &a.out {
        results.to_zarr(out, a.exec.overwrite)?;
        eprintln!("wrote {} to {out}", results.names().join(", "));
    } else if a.graph.is_none() {
        bail!("calc needs one of --out CUBE, --print, --explain or --graph FILE");
    }
    Ok(())
}

#[derive(Args)]
struct IngestArgs {
    /// CSV with header path,band,time (time: ISO date or year); paths relative to the CSV.
    #[arg(long, conflicts_with = "paths")]
    manifest: Option<PathBuf>,
    /// A STAC ItemCollection JSON file: each item a tile at its `datetime`, each GeoTIFF asset
    /// a band named by its key; hrefs local (relative to the file), http(s):// or s3://.
    #[arg(long, value_name = "ITEMS.json", conflicts_with_all = ["paths", "manifest"])]
    stac: Option<PathBuf>,
    /// Output cube: a local directory or s3://bucket/prefix.
    #[arg(long)]
    out: String,
    /// Chunk shape, e.g. time=1,y=1024,x=1024 (-1 = whole dimension).
    #[arg(long, default_value = "time=1,y=1024,x=1024")]
    chunks: String,
    /// Shard shape (whole multiples of the chunks), e.g. y=4096,x=4096. (`plan ingest` also
    /// takes `--shards N`, the workers of the job.)
    #[arg(long, action = clap::ArgAction::Append)]
    shards: Vec<String>,
    /// Chunk compression: zstd, zstd:LEVEL or none.
    #[arg(long, default_value = "zstd:3")]
    compression: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Replace a different cube (or other content) at --out.
    #[arg(long)]
    overwrite: bool,
    /// Product name recorded in the cube.
    #[arg(long, default_value = "gm_s2_annual")]
    product: String,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Ingest even when the mosaic looks absurd for its tiles (mostly empty, or far larger
    /// than the files: a tile in the wrong place, sparse or corrupt headers).
    #[arg(long)]
    allow_huge: bool,
    #[command(flatten)]
    dash: DashboardArgs,
    /// Stop with an error after N chunks (for testing resumption).
    #[arg(long, hide = true)]
    stop_after_chunks: Option<u64>,
    /// Write only shard I of N (0-based) of the job, for array jobs: `I/N`, or `auto/N` to
    /// take I from JOB_COMPLETION_INDEX (Kubernetes), SLURM_ARRAY_TASK_ID or
    /// AWS_BATCH_JOB_ARRAY_INDEX. Run `chunkcube commit` once every shard finished.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Only scan the tiles' headers, once, and save the scan in --out for the workers of a
    /// job: each `--shard I/N` worker run with the same sources then plans from it instead of
    /// reading every tile's header. Run it before the array job.
    #[arg(long, conflicts_with_all = ["shard", "overwrite"])]
    scan_only: bool,
    /// GeoTIFF files, folders or s3:// / http(s):// URLs named ..._<YYYY>--P1Y_final_<band>.tif.
    paths: Vec<PathBuf>,
}

fn run_ingest(a: IngestArgs, live: Option<Arc<LiveStatus>>) -> Result<Option<serde_json::Value>> {
    let (sources, mut opts, jobs) = cli::plan::ingest_setup(&a)?;
    if jobs.is_some() {
        bail!("--shards takes the storage shard shape (y=4096,x=4096); to run N workers give each --shard I/N (plan them with `chunkcube plan ingest ... --shards N`)");
    }
    let shard = shard_flag(&a.shard)?;
    opts.live = live;
    opts.shard = shard.as_ref().map(|s| s.0);
    chunkcube::ingest::stop_after_chunks(a.stop_after_chunks);
    if a.scan_only {
        let r = ingest(&sources, &a.out, &opts)?;
        eprintln!(
            "scanned {} tiles in {:.2} s, saved in {}/{}; run the workers with the same arguments and --shard I/N (or auto/N)",
            r.tiles,
            r.elapsed_s,
            a.out.trim_end_matches('/'),
            chunkcube::store::job::SCAN_KEY
        );
        return Ok(Some(serde_json::to_value(&r)?));
    }
    let r = match &shard {
        Some((_, name)) => ingest(&sources, &a.out, &opts).with_context(|| name.clone())?,
        None => ingest(&sources, &a.out, &opts)?,
    };
    if let (Some((_, sh)), true) = (&shard, r.up_to_date) {
        eprintln!("{sh} of {} is already written; nothing to do", a.out);
    } else if let Some((_, sh)) = &shard {
        eprintln!(
            "{sh} of {}: {} chunks written, {} kept from an earlier run, {:.1} MB of pixels in {:.2} s; run `chunkcube commit {}` once every shard finished",
            a.out, r.chunks_written, r.chunks_skipped, r.pixel_bytes as f64 / 1e6, r.elapsed_s, a.out
        );
    } else if r.up_to_date {
        eprintln!(
            "{} is already complete ({} tiles); nothing to do",
            a.out, r.tiles
        );
    } else {
        eprintln!(
            "ingested {} tiles into {}: {} chunks written, {} resumed, {:.1} MB of pixels in {:.2} s",
            r.tiles, a.out, r.chunks_written, r.chunks_skipped, r.pixel_bytes as f64 / 1e6, r.elapsed_s
        );
    }
    Ok(Some(serde_json::to_value(&r)?))
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line, like every other error: clap's message without the usage block.
            let text = e.render().to_string();
            let line = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line).to_string();
            eprintln!("error: {line} (see --help)");
            std::process::exit(1);
        }
    };
    // Tune the allocator once, before any worker thread starts: large buffers go to mmap and
    // back to the OS when freed, so the process's RSS follows the memory limit.
    let limit = match &cli.cmd {
        Cmd::Load(a) => exec_config(&a.exec).map(|c| c.memory_limit).ok(),
        Cmd::Calc(a) => exec_config(&a.exec).map(|c| c.memory_limit).ok(),
        Cmd::Export(a) => exec_config(&a.exec).map(|c| c.memory_limit).ok(),
        Cmd::Ingest(_) | Cmd::Info(_) | Cmd::Verify(_) | Cmd::Commit(_) | Cmd::Plan(_) => None,
    };
    chunkcube::exec::tune_allocator(limit.unwrap_or(32 << 20));
    chunkcube::exec::install_interrupt_cleanup();
    let r = match cli.cmd {
        Cmd::Ingest(a) => with_dashboard(&a.dash.clone(), "ingest", |l| run_ingest(a, l)),
        Cmd::Info(a) => run_info(a),
        Cmd::Load(a) => with_dashboard(&a.exec.dash.clone(), "load", |l| run_load(a, l)),
        Cmd::Calc(a) => with_dashboard(&a.exec.dash.clone(), "calc", |l| run_calc(a, l)),
        Cmd::Export(a) => with_dashboard(&a.exec.dash.clone(), "export", |l| export::run(a, l)),
        Cmd::Verify(a) => cli::verify::run_verify(a),
        Cmd::Commit(a) => run_commit(a),
        Cmd::Plan(a) => cli::plan::run(a),
    };
    if let Err(e) = r {
        // `chunkcube ... | head`: the reader has what it wanted; stopping is success.
        if cli::output::is_broken_pipe(&e) {
            std::process::exit(0);
        }
        eprintln!(
            "error: {}",
            printable(&chunkcube::store::redact(&one_line(&e)))
        );
        std::process::exit(1);
    }
}

/// `msg` with control characters (a newline in a path or URL given by the user) escaped, so
/// an error is always one line.
fn printable(msg: &str) -> String {
    msg.chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
}

/// The chain of causes on one line, naming the culprit: each cause joined with ": ", unless
/// its text is already part of the message before it (library errors carry their source's
/// text in their own message and expose it as `source()` too).
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}
