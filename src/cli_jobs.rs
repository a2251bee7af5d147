//! The command line of jobs split over workers: `--shard I/N`, `chunkcube commit`.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub(crate) struct CommitArgs {
    /// The cube the workers wrote: local directory or s3://bucket/prefix.
    pub(crate) cube: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `--shard I/N` or `auto/N`, parsed, with how to name it in the run's one summary or
/// error line: `shard 2/5 (index from SLURM_ARRAY_TASK_ID)` for `auto`, since a job's logs
/// should say which worker this was and why.
pub(crate) fn shard_flag(v: &Option<String>) -> Result<Option<(chunkcube::Shard, String)>> {
    let Some(v) = v else { return Ok(None) };
    let (shard, var) = chunkcube::Shard::parse(v)?;
    let name = match var {
        Some(var) => format!("shard {shard} (index from {var})"),
        None => format!("shard {shard}"),
    };
    Ok(Some((shard, name)))
}

pub(crate) fn run_commit(a: CommitArgs) -> Result<()> {
    // The commit is the job's one writer of the group metadata.
    let _lock = chunkcube::store::lock::acquire(&a.cube)?;
    let r = chunkcube::commit(&a.cube)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if r.already {
        eprintln!("{} is already committed; nothing to do", a.cube);
    } else {
        eprintln!(
            "committed {}: {} shards, {} chunks, {:.1} MB of pixels",
            a.cube,
            r.shards,
            r.chunks,
            r.bytes as f64 / 1e6
        );
    }
    Ok(())
}
