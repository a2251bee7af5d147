//! `chunkcube export`: a selection or calc results as GeoTIFF/COG or PNG files.

use super::output::summary;
use crate::{exec_config, pair, stored_chunk_query, write_stats, ExecArgs, Selection};
use anyhow::{bail, Result};
use chunkcube::cube::{Calc, Cube};
use chunkcube::exec::Session;
use chunkcube::progress::LiveStatus;
use chunkcube::store::format_bytes;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The cube: local directory or s3://bucket/prefix.
    cube: String,
    /// Output folder (created if missing); files are named <band>_<YYYY-MM-DD>.tif|png.
    #[arg(long)]
    out: PathBuf,
    /// COG (tiled, DEFLATE, overviews), GTiff (tiled, DEFLATE) or PNG (8-bit quicklook,
    /// nodata transparent).
    #[arg(long, default_value = "COG")]
    format: String,
    /// Export results instead of bands: [NAME=]EXPRESSION as for calc; repeat.
    #[arg(long = "expr")]
    exprs: Vec<String>,
    /// Reduce every result first: OP:DIM as for calc (e.g. mean:time).
    #[arg(long, value_name = "OP:DIM")]
    reduce: Option<String>,
    #[command(flatten)]
    sel: Selection,
    #[command(flatten)]
    pub(crate) exec: ExecArgs,
    /// GeoTIFF tile size in pixels (COG overviews go down to one tile).
    #[arg(long, default_value_t = 512)]
    blocksize: u64,
    /// PNG: longest side in pixels (larger arrays are downsampled, never enlarged).
    #[arg(long, default_value_t = 1024)]
    size: u64,
    /// PNG: the values shown as black and white, MIN,MAX (default: 2nd and 98th percentile).
    #[arg(long, allow_hyphen_values = true, value_name = "MIN,MAX")]
    scale: Option<String>,
}

pub(crate) fn run(
    a: ExportArgs,
    live: Option<Arc<LiveStatus>>,
) -> Result<Option<serde_json::Value>> {
    use chunkcube::export::{export, ExportOptions, Format};
    let opts = ExportOptions {
        format: Format::parse(&a.format)?,
        overwrite: a.exec.overwrite,
        quiet: a.exec.quiet,
        blocksize: a.blocksize,
        size: a.size,
        scale: a.scale.as_deref().map(|v| pair("--scale", v)).transpose()?,
    };
    // The export draws one bar for all its files; the blocks it computes draw none.
    let mut config = exec_config(&a.exec)?;
    config.quiet = true;
    config.live = live.clone();
    let s = Session::new(config)?;
    let cube = Cube::open_in(&a.cube, s.clone())?;
    let run = || -> Result<_> {
        let q = stored_chunk_query(&cube, &a.sel)?;
        let ds = cube.load(&q)?;
        let ds = if a.exprs.is_empty() {
            if a.reduce.is_some() {
                bail!("--reduce needs --expr (export the reduction of a result, e.g. --expr red --reduce median:time)");
            }
            ds
        } else {
            Calc::parse(&a.exprs, a.reduce.as_deref())?.run(&ds)?
        };
        if let Some(l) = &live {
            for da in ds.vars() {
                l.add_explain(da.name(), serde_json::to_value(da.explain())?);
            }
        }
        Ok(export(&ds, &a.out, &opts)?)
    };
    let r = run();
    // What was read came from one cube, not from one being overwritten meanwhile (and a
    // read that failed because it was is reported as that).
    cube.check_unchanged()?;
    let r = r?;
    eprintln!(
        "exported {} file(s), {}, to {} in {:.2} s",
        r.files.len(),
        format_bytes(r.bytes),
        a.out.display(),
        r.elapsed_s
    );
    summary(a.exec.quiet, &s);
    write_stats(&a.exec, &s)?;
    Ok(Some(serde_json::to_value(s.stats())?))
}
