//! `chunkcube verify`: check a cube against what its commit declared.

use super::output::stdout;
use crate::printable;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
#[command(
    after_help = "Example:\n  chunkcube verify cube --deep\n\nEach problem is printed as one line naming its key; the exit status is 1 if there is any."
)]
pub(crate) struct VerifyArgs {
    /// The cube: local directory or s3://bucket/prefix.
    cube: String,
    /// Also fetch and decode every chunk (checks each chunk's crc32c).
    #[arg(long)]
    deep: bool,
    /// Write statistics (arrays, chunks_checked, bytes_checked, chunks_decoded, problems,
    /// elapsed_s) as JSON.
    #[arg(long, value_name = "FILE.json")]
    stats: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub(crate) fn run_verify(a: VerifyArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let store = chunkcube::store::Store::open(&a.cube, false)?;
    let pb = chunkcube::progress::bar(0, "verify", a.quiet);
    let rep = chunkcube::store::verify::verify(&store, a.deep, &|done, total| {
        pb.set_length(total);
        pb.set_position(done);
    })?;
    pb.finish_and_clear();
    for p in &rep.problems {
        writeln!(stdout(), "{}", printable(&p.to_string()))?;
    }
    if let Some(path) = &a.stats {
        let mut v = serde_json::to_value(&rep)?;
        v["problems"] = serde_json::json!(rep.problems.len());
        v["elapsed_s"] = serde_json::json!(t0.elapsed().as_secs_f64());
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("--stats {}", path.display()))?;
    }
    let summary = format!(
        "{} arrays, {} chunks ({}) checked{}{}",
        rep.arrays,
        rep.chunks_checked,
        chunkcube::store::format_bytes(rep.bytes_checked),
        if a.deep {
            format!(", {} decoded", rep.chunks_decoded)
        } else {
            String::new()
        },
        if rep.has_manifest {
            ""
        } else {
            " (no chunk manifest: an absent chunk cannot be told from one never written)"
        },
    );
    match rep.problems.len() {
        0 => eprintln!("verify {}: {summary}, no problem", a.cube),
        n => bail!(
            "{n} problem{} found in {} (listed above): {summary}",
            if n == 1 { "" } else { "s" },
            a.cube
        ),
    }
    Ok(())
}
