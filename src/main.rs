//! The `chunkcube` command line: a thin layer over the library.

use anyhow::{bail, Context, Result};
use chunkcube::ingest::{ingest, IngestOptions, Sources};
use chunkcube::store::layout::Codecs;
use chunkcube::store::ChunkSpec;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "chunkcube", version, about = "Out-of-core Zarr v3 cubes for Earth-observation rasters", long_about = "Ingest GeoTIFF tiles into a chunked Zarr v3 cube (local or s3://), then query, chain band math and reduce lazily, fetching only the chunks a computation touches, in parallel and inside a memory limit.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Turn GeoTIFF tiles into a cube (one array per band, dims time, y, x).
    Ingest(IngestArgs),
}

#[derive(Args)]
struct IngestArgs {
    /// CSV with header path,band,time (time: ISO date or year); paths relative to the CSV.
    #[arg(long, conflicts_with = "paths")]
    manifest: Option<PathBuf>,
    /// Output cube: a local directory or s3://bucket/prefix.
    #[arg(long)]
    out: String,
    /// Chunk shape, e.g. time=1,y=1024,x=1024 (-1 = whole dimension).
    #[arg(long, default_value = "time=1,y=1024,x=1024")]
    chunks: String,
    /// Shard shape (whole multiples of the chunks), e.g. y=4096,x=4096.
    #[arg(long)]
    shards: Option<String>,
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
    /// Stop with an error after N chunks (for testing resumption).
    #[arg(long, hide = true)]
    stop_after_chunks: Option<u64>,
    /// GeoTIFF files or folders named ..._<YYYY>--P1Y_final_<band>.tif.
    paths: Vec<PathBuf>,
}

fn run_ingest(a: IngestArgs) -> Result<()> {
    let sources = match (a.manifest, a.paths.is_empty()) {
        (Some(m), _) => Sources::Manifest(m),
        (None, false) => Sources::Paths(a.paths),
        (None, true) => bail!("no input: give --manifest tiles.csv or GeoTIFF files/folders"),
    };
    if a.threads == Some(0) {
        bail!("invalid --threads 0: give at least 1");
    }
    let opts = IngestOptions {
        chunks: ChunkSpec::parse(&a.chunks).context("--chunks")?,
        shards: a.shards.as_deref().map(ChunkSpec::parse).transpose().context("--shards")?,
        codecs: Codecs::parse(&a.compression).map_err(anyhow::Error::msg)?,
        threads: a.threads,
        overwrite: a.overwrite,
        product: a.product,
        quiet: a.quiet,
        stop_after_chunks: a.stop_after_chunks,
    };
    let r = ingest(&sources, &a.out, &opts)?;
    if r.up_to_date {
        eprintln!("{} is already complete ({} tiles); nothing to do", a.out, r.tiles);
    } else {
        eprintln!(
            "ingested {} tiles into {}: {} chunks written, {} resumed, {:.1} MB of pixels in {:.2} s",
            r.tiles, a.out, r.chunks_written, r.chunks_skipped, r.pixel_bytes as f64 / 1e6, r.elapsed_s
        );
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Ingest(a) => run_ingest(a),
    };
    if let Err(e) = r {
        // One line: the chain of causes joined, naming the culprit.
        let msg = format!("{e:#}");
        eprintln!("error: {}", chunkcube::store::s3::redact(&msg));
        std::process::exit(1);
    }
}
