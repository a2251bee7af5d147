//! `chunkcube plan ingest|calc … --shards N [--json]`: size a job of N workers before
//! submitting it, from the same arguments the workers will run with.

use crate::{session, stored_chunk_query, threads_flag, CalcArgs, IngestArgs};
use anyhow::{bail, Context, Result};
use chunkcube::cube::{Calc, CalcOutput, Cube};
use chunkcube::ingest::{IngestOptions, Sources};
use chunkcube::store::jobplan::JobPlan;
use chunkcube::store::layout::Codecs;
use chunkcube::store::ChunkSpec;
use clap::{Args, Subcommand};

#[derive(Args)]
#[command(after_help = "Examples:
  chunkcube plan ingest --manifest tiles.csv --out s3://bucket/cube --shards 64
  chunkcube plan ingest --stac items.json --out s3://b/c --shards y=4096,x=4096 --shards 500 --json
  chunkcube plan calc s3://bucket/cube --expr 'ndvi=(nir-red)/(nir+red)' --out s3://b/ndvi --shards 10000 --json

The figures come from the same split the workers use (`--shard I/N`): per shard the output
chunks and objects, encoded bytes read, decoded bytes written, GETs and PUTs, and the
projected memory of one worker; then the job's totals. Nothing is read but metadata (tile
headers for ingest, the input cube's metadata and chunk manifests for calc).")]
pub(crate) struct PlanArgs {
    #[command(subcommand)]
    cmd: PlanCmd,
}

#[derive(Subcommand)]
enum PlanCmd {
    /// Plan `chunkcube ingest … --shard I/N` (ingest's arguments; `--shards N` the workers, a
    /// second `--shards y=…,x=…` the storage shards).
    Ingest(Box<PlanIngestArgs>),
    /// Plan `chunkcube calc … --out CUBE --shard I/N` (calc's arguments, plus `--shards N`).
    Calc(Box<PlanCalcArgs>),
}

#[derive(Args)]
#[command(after_help = "Examples:
  chunkcube plan ingest --manifest tiles.csv --out s3://bucket/cube --shards 64
  chunkcube plan ingest --stac items.json --out s3://b/c --shards y=4096,x=4096 --shards 500 --json

Then run `chunkcube ingest` with the same arguments and `--shard auto/N` (or I/N) in each of
the N workers, and `chunkcube commit CUBE` once. Bytes read are the tiles' file bytes in
proportion to the pixels each shard reads from them; GETs count remote tiles only.")]
struct PlanIngestArgs {
    #[command(flatten)]
    ingest: IngestArgs,
    /// Print every shard and the totals as JSON (else a summary).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(after_help = "Examples:
  chunkcube plan calc s3://bucket/cube --expr 'ndvi=(nir-red)/(nir+red)' --out s3://b/ndvi --shards 10000
  chunkcube plan calc cube --expr 'ndvi=(nir-red)/(nir+red)' --reduce median:time --out ndvi --shards 8 --json

Then run `chunkcube calc` with the same arguments and `--shard auto/N` (or I/N) in each of the
N workers, and `chunkcube commit OUT` once. Bytes read and GETs are the stored chunks each
worker fetches (sizes from the cube's chunk manifest), each fetched once per worker.")]
struct PlanCalcArgs {
    #[command(flatten)]
    calc: CalcArgs,
    /// Workers of the job (N of `--shard I/N`).
    #[arg(long, value_name = "N")]
    shards: u32,
    /// Print every shard and the totals as JSON (else a summary).
    #[arg(long)]
    json: bool,
}

/// The sources, options and (for `plan`) the job's worker count of ingest's arguments: each
/// `--shards` value is either a count (`64`: the workers) or a shard shape (`y=4096,x=4096`).
pub(crate) fn ingest_setup(a: &IngestArgs) -> Result<(Sources, IngestOptions, Option<u32>)> {
    let sources = match (&a.manifest, &a.stac, a.paths.is_empty()) {
        (Some(m), _, _) => Sources::Manifest(m.clone()),
        (None, Some(s), _) => Sources::Stac(s.clone()),
        (None, None, false) => Sources::Paths(a.paths.clone()),
        (None, None, true) => {
            bail!("no input: give --manifest tiles.csv, --stac items.json or GeoTIFF files/folders/URLs")
        }
    };
    let (mut jobs, mut shape) = (None, None);
    for v in &a.shards {
        match v.trim().parse::<u32>() {
            Ok(n) if jobs.is_none() => jobs = Some(n),
            Ok(_) => bail!("--shards N given twice"),
            Err(_) if shape.is_none() => {
                shape = Some(ChunkSpec::parse(v).context("--shards")?);
            }
            Err(_) => bail!("--shards y=…,x=… given twice"),
        }
    }
    let opts = IngestOptions {
        chunks: ChunkSpec::parse(&a.chunks).context("--chunks")?,
        shards: shape,
        codecs: Codecs::parse(&a.compression).map_err(anyhow::Error::msg)?,
        threads: threads_flag(a.threads)?,
        overwrite: a.overwrite,
        product: a.product.clone(),
        quiet: a.quiet,
        allow_huge: a.allow_huge,
        live: None,
        shard: None,
        cancel: None,
        scan_only: a.scan_only,
    };
    Ok((sources, opts, jobs))
}

fn workers(n: u32) -> Result<u32> {
    if n == 0 {
        bail!("--shards must be at least 1");
    }
    Ok(n)
}

pub(crate) fn run(a: PlanArgs) -> Result<()> {
    let (plan, json): (JobPlan, bool) = match a.cmd {
        PlanCmd::Ingest(p) => {
            let (sources, opts, jobs) = ingest_setup(&p.ingest)?;
            let Some(n) = jobs else {
                bail!("plan ingest needs --shards N (the workers of the job)");
            };
            if p.ingest.scan_only {
                bail!("plan reads a saved scan but makes none: run `chunkcube ingest … --scan-only` first");
            }
            if p.ingest.shard.is_some() {
                bail!("plan plans every shard: give --shards N, not --shard I/N");
            }
            (
                chunkcube::ingest::jobplan::plan_job(
                    &sources,
                    &opts,
                    workers(n)?,
                    Some(&p.ingest.out),
                )?,
                p.json,
            )
        }
        PlanCmd::Calc(p) => {
            let n = workers(p.shards)?;
            let c = p.calc;
            if c.shard.is_some() {
                bail!("plan plans every shard: give --shards N, not --shard I/N");
            }
            let s = session(&c.exec, &None)?;
            let cube = Cube::open_in(&c.cube, s)?;
            let q = stored_chunk_query(&cube, &c.sel)?;
            let calc = Calc::parse(&c.exprs, c.reduce.as_deref())?;
            let ds = cube.load(&q)?;
            calc.check_memory(&ds, CalcOutput::Cube)?;
            (calc.lazy(&ds)?.plan_job(n)?, p.json)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.describe());
    }
    Ok(())
}
