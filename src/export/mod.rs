//! Export: a selection or calc result as one GeoTIFF per band (or result) per time step, named
//! `<band>_<YYYY-MM-DD>.tif` (`<band>.tif` once time is reduced), with CRS, transform and
//! nodata, written through GDAL: Cloud-Optimised GeoTIFF with overviews by default, plain tiled
//! GeoTIFF, or an 8-bit PNG quicklook (scaled, nodata transparent).
//!
//! Why a module of its own, above [`crate::cube`]: it reads through [`DataArray`] (so through
//! the executor's budget, cache and workers), which the bottom layer [`crate::geo`] must not
//! know of; writing rasters back out is the mirror of [`crate::ingest`], its own step of the
//! data flow (cube → files), and the one place outside ingest that creates GDAL datasets.
//!
//! Each file is computed block by block (rows of the query's chunks, as wide as fits an
//! eighth of the memory limit), never the whole array; GDAL's block cache is held inside the
//! session's budget for the run. A file is written under a hidden temporary name and renamed
//! into place when complete, so an interrupted or failed export never leaves a file that
//! looks complete; names are checked before anything is computed.

mod png;
mod tiff;

use crate::cube::{CubeError, DataArray, Dataset};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Errors of exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading or computing the data.
    #[error(transparent)]
    Cube(#[from] CubeError),
    /// GDAL could not create or write a file.
    #[error("writing {file}: {msg}")]
    Gdal {
        /// The file.
        file: String,
        /// GDAL's message.
        msg: String,
    },
    /// A file-system problem with the output folder or a file.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An output file exists.
    #[error("{0} already exists; pass --overwrite to replace it")]
    Exists(String),
    /// A bad option (`--format`, `--size`, `--scale`, `--out`).
    #[error("invalid {what} '{value}': {msg}")]
    BadArg {
        /// The flag.
        what: String,
        /// The value given.
        value: String,
        /// What is wrong.
        msg: String,
    },
}

impl ExportError {
    fn io(path: &Path, source: std::io::Error) -> ExportError {
        ExportError::Io {
            path: path.display().to_string(),
            source,
        }
    }
    fn gdal(file: &Path, e: impl std::fmt::Display) -> ExportError {
        let mut msg = e.to_string();
        // GDAL often says more through its error handler than through the failed call.
        let extra = crate::geo::take_gdal_errors();
        if let Some(last) = extra.last() {
            if !msg.contains(last.as_str()) {
                msg = format!("{msg} ({last})");
            }
        }
        ExportError::Gdal {
            file: file.display().to_string(),
            msg,
        }
    }
}

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Cloud-Optimised GeoTIFF: tiled, DEFLATE, overviews (GDAL's COG driver).
    #[default]
    Cog,
    /// Tiled GeoTIFF, DEFLATE, no overviews.
    GTiff,
    /// 8-bit grey + alpha PNG quicklook, scaled, nodata transparent.
    Png,
}

impl Format {
    /// Parse `COG`, `GTiff` or `PNG` (any case).
    pub fn parse(s: &str) -> Result<Format, ExportError> {
        match s.to_ascii_lowercase().as_str() {
            "cog" => Ok(Format::Cog),
            "gtiff" | "tif" | "tiff" | "geotiff" => Ok(Format::GTiff),
            "png" => Ok(Format::Png),
            _ => Err(ExportError::BadArg {
                what: "--format".into(),
                value: s.into(),
                msg: "expected COG, GTiff or PNG".into(),
            }),
        }
    }
    fn extension(self) -> &'static str {
        match self {
            Format::Cog | Format::GTiff => "tif",
            Format::Png => "png",
        }
    }
}

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The file format.
    pub format: Format,
    /// Replace existing files of the same names.
    pub overwrite: bool,
    /// No progress bar.
    pub quiet: bool,
    /// GeoTIFF tile size in pixels (COG overviews are made down to one tile); default 512.
    pub blocksize: u64,
    /// PNG: the longest side in pixels (downsampled by nearest neighbour when larger);
    /// default 1024.
    pub size: u64,
    /// PNG: the values mapped to black and white; default the 2nd and 98th percentiles of
    /// the valid values shown.
    pub scale: Option<(f64, f64)>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            format: Format::Cog,
            overwrite: false,
            quiet: true,
            blocksize: 512,
            size: 1024,
            scale: None,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    /// The files, in the order written.
    pub files: Vec<PathBuf>,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Wall time in seconds.
    pub elapsed_s: f64,
}

/// One file to write: a 2-D slice (one time step) of a variable.
struct Job {
    /// The `[y, x]` array (time selected away or reduced).
    da: DataArray,
    path: PathBuf,
}

/// The file stem of time step `t` of `da`: `<name>_<YYYY-MM-DD>` (`<name>_<YYYY-MM-DDThhmmss>`
/// for steps that are not a midnight), or `<name>` without time.
fn stem(da: &DataArray, t: usize) -> String {
    match da.times().get(t) {
        Some(day) => format!("{}_{}", da.name(), day.to_string().replace(':', "")),
        None => da.name().to_string(),
    }
}

/// The files of exporting `ds` into `dir`, checked: distinct names, none existing unless
/// `overwrite`.
fn jobs(ds: &Dataset, dir: &Path, opts: &ExportOptions) -> Result<Vec<Job>, ExportError> {
    let mut out: Vec<Job> = Vec::new();
    for da in ds.vars() {
        let steps = if da.dims().contains(&"time") {
            da.shape3()[0] as usize
        } else {
            1
        };
        for t in 0..steps {
            let one = if da.dims().contains(&"time") {
                da.isel(&[("time", t as u64..t as u64 + 1)])?
            } else {
                da.clone()
            };
            let path = dir.join(format!("{}.{}", stem(da, t), opts.format.extension()));
            if out.iter().any(|j| j.path == path) {
                return Err(ExportError::BadArg {
                    what: "--out".into(),
                    value: dir.display().to_string(),
                    msg: format!(
                        "two time steps of '{}' would both be written to {}",
                        da.name(),
                        path.display()
                    ),
                });
            }
            if path.exists() && !opts.overwrite {
                return Err(ExportError::Exists(path.display().to_string()));
            }
            out.push(Job { da: one, path });
        }
    }
    Ok(out)
}

/// Export every variable of `ds` into the folder `dir` (created if missing), one file per
/// variable per time step; see the module docs.
pub fn export(ds: &Dataset, dir: &Path, opts: &ExportOptions) -> Result<ExportReport, ExportError> {
    let started = Instant::now();
    if dir.to_str().is_some_and(|s| s.contains("://")) {
        return Err(ExportError::BadArg {
            what: "--out".into(),
            value: dir.display().to_string(),
            msg: "export writes to a local folder".into(),
        });
    }
    if opts.blocksize < 16 || !opts.blocksize.is_multiple_of(16) || opts.blocksize > 4096 {
        return Err(ExportError::BadArg {
            what: "--blocksize".into(),
            value: opts.blocksize.to_string(),
            msg: "expected a multiple of 16 from 16 to 4096".into(),
        });
    }
    if opts.format == Format::Png && opts.size == 0 {
        return Err(ExportError::BadArg {
            what: "--size".into(),
            value: "0".into(),
            msg: "give the longest side in pixels, at least 1".into(),
        });
    }
    if dir.exists() && !dir.is_dir() {
        return Err(ExportError::BadArg {
            what: "--out".into(),
            value: dir.display().to_string(),
            msg: "is a file; give a folder".into(),
        });
    }
    let jobs = jobs(ds, dir, opts)?;
    let Some(first) = jobs.first() else {
        return Err(ExportError::BadArg {
            what: "--out".into(),
            value: dir.display().to_string(),
            msg: "nothing to export: the selection has no variable".into(),
        });
    };
    let session = first.da.session().clone();
    // Every block fits the limit beside GDAL's cache (held in the budget while exporting):
    // checked for each variable before anything is written.
    let cache_bytes = tiff::GdalCache::bytes(session.config().memory_limit);
    for job in &jobs {
        let plan = tiff::Blocks::of(&job.da, session.config().memory_limit);
        let b = plan.first(&job.da)?;
        let bytes = cache_bytes + b.shape3().iter().product::<u64>() * b.dtype().size() as u64;
        session
            .check_memory(&[b.node()], b.chunks3(), false, false, bytes)
            .map_err(CubeError::from)?;
    }
    std::fs::create_dir_all(dir).map_err(|e| ExportError::io(dir, e))?;
    let total: u64 = jobs
        .iter()
        .map(|j| tiff::Blocks::of(&j.da, session.config().memory_limit).len())
        .sum();
    let progress = Progress::new(&session, &jobs, total, opts.quiet);
    let pb = &progress.pb;
    let cache = tiff::GdalCache::hold(&session);
    let mut report = ExportReport {
        files: Vec::new(),
        bytes: 0,
        elapsed_s: 0.0,
    };
    for job in &jobs {
        progress.file(job);
        pb.set_message(
            job.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        match opts.format {
            Format::Png => png::write(&job.da, &job.path, opts, &progress)?,
            f => tiff::write(&job.da, &job.path, f, opts, &progress)?,
        }
        let n = std::fs::metadata(&job.path).map(|m| m.len()).unwrap_or(0);
        progress.written.record_file(n);
        report.bytes += n;
        report.files.push(job.path.clone());
    }
    drop(cache);
    pb.finish_and_clear();
    drop(progress);
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// An export's progress: the bar, and for `--dashboard` one run whose layers are the
/// variables exported (their blocks done of all), standing for the computation of each block;
/// the files' bytes count as written.
pub(crate) struct Progress {
    pb: indicatif::ProgressBar,
    live: Option<std::sync::Arc<crate::progress::LiveRun>>,
    /// The layer of the file being written.
    layer: std::sync::atomic::AtomicUsize,
    names: Vec<String>,
    written: std::sync::Arc<crate::store::IoCounters>,
}

impl Progress {
    fn new(
        session: &std::sync::Arc<crate::exec::Session>,
        jobs: &[Job],
        total: u64,
        quiet: bool,
    ) -> Progress {
        let limit = session.config().memory_limit;
        let mut names: Vec<String> = Vec::new();
        let mut layers: Vec<crate::progress::LayerSpec> = Vec::new();
        for j in jobs {
            let name = j.da.name().to_string();
            let blocks = tiff::Blocks::of(&j.da, limit).len();
            match names.iter().position(|n| *n == name) {
                Some(i) => layers[i].tasks += blocks,
                None => {
                    names.push(name.clone());
                    layers.push(crate::progress::LayerSpec {
                        name: format!("export {name}"),
                        tasks: blocks,
                        per_task: 0,
                    });
                }
            }
        }
        let live = session
            .config()
            .live
            .as_ref()
            .map(|l| l.begin_outer_run("exporting", total, &layers));
        let written = std::sync::Arc::new(crate::store::IoCounters::default());
        session.note_written(&written);
        Progress {
            pb: crate::progress::bar(total, "exporting", quiet),
            live,
            layer: Default::default(),
            names,
            written,
        }
    }

    /// `job`'s file is next.
    fn file(&self, job: &Job) {
        let i = self.names.iter().position(|n| n == job.da.name());
        self.layer
            .store(i.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    /// One block of the current file computed and written.
    pub(crate) fn block_done(&self) {
        self.pb.inc(1);
        if let Some(l) = &self.live {
            l.progress(self.layer.load(std::sync::atomic::Ordering::Relaxed), 1);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(l) = &self.live {
            l.status().end_outer_run();
        }
    }
}

/// A file being written under a hidden temporary name next to its final path; removed on
/// drop unless [`Partial::commit`] renamed it into place.
struct Partial {
    tmp: PathBuf,
    done: bool,
}

impl Partial {
    fn new(path: &Path, suffix: &str) -> Partial {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.{suffix}", std::process::id()));
        Partial { tmp, done: false }
    }
    fn commit(mut self, path: &Path) -> Result<(), ExportError> {
        std::fs::rename(&self.tmp, path).map_err(|e| ExportError::io(path, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
            // GDAL's side files (overviews under construction, PAM metadata).
            for ext in ["aux.xml", "ovr"] {
                let mut side = self.tmp.clone().into_os_string();
                side.push(".");
                side.push(ext);
                let _ = std::fs::remove_file(side);
            }
        }
    }
}
