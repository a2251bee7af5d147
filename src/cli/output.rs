//! What commands print: values, the summary line left behind by progress, and standard output
//! written so that a closed pipe (`| head`) is an error `main` ends quietly on, never a panic.

use anyhow::{anyhow, bail, Context, Result};
use chunkcube::cube::DataArray;
use chunkcube::exec::Session;
use chunkcube::store::format_bytes;
use std::io::Write;

/// Standard output, written with `?` rather than `println!` (which panics when the reader
/// went away, as `| head` does).
pub(crate) fn stdout() -> std::io::StdoutLock<'static> {
    std::io::stdout().lock()
}

/// An error of a read racing a replacement of its cube is that replacement (a chunk removed
/// or changed under the reader); a read that succeeded is checked the same way.
pub(crate) fn or_replaced<T>(cube: &chunkcube::Cube, r: Result<T>) -> Result<T> {
    cube.check_unchanged()?;
    r
}

/// Whether `e` is, or was caused by, writing to a closed pipe.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The most values `--print-all` prints per array.
const PRINT_LIMIT: u64 = 1_000_000;

/// Print `arrays` (summarised unless `all`) to stdout.
pub(crate) fn print_arrays<'a>(
    arrays: impl Iterator<Item = &'a DataArray>,
    all: bool,
) -> Result<()> {
    let mut out = stdout();
    for (i, da) in arrays.enumerate() {
        let n: u64 = da.shape3().iter().product();
        if all && n > PRINT_LIMIT {
            bail!("--print-all: '{}' has {n} values (more than {PRINT_LIMIT}); narrow the selection, use --print (summarised) or --out", da.name());
        }
        if i > 0 {
            writeln!(out)?;
        }
        da.print_values(&mut out, all)?;
    }
    out.flush()?;
    Ok(())
}

/// The one line left behind when progress was shown (a terminal, not `--quiet`): what was
/// read, written and held, cut to the terminal's width.
pub(crate) fn summary(quiet: bool, s: &Session) {
    if !chunkcube::progress::shown(quiet) {
        return;
    }
    let st = s.stats();
    let line = format!(
        "done: {} chunks read ({}), {} written, {} tasks, {:.2} s, peak memory {} of {}",
        st.chunks_read,
        format_bytes(st.bytes_read),
        st.chunks_written,
        st.tasks,
        st.elapsed_s,
        format_bytes(st.peak_tracked_bytes),
        format_bytes(st.memory_limit)
    );
    let w = chunkcube::progress::width();
    eprintln!("{}", line.chars().take(w).collect::<String>());
}

/// Write a task graph: `.dot`/`.gv` as DOT, any other extension rendered by Graphviz's `dot`.
pub(crate) fn write_graph(path: &std::path::Path, dot: &str) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("dot")
        .to_ascii_lowercase();
    if ext == "dot" || ext == "gv" {
        std::fs::write(path, dot).with_context(|| format!("writing --graph {}", path.display()))?;
        return Ok(());
    }
    let mut child = std::process::Command::new("dot")
        .arg(format!("-T{ext}"))
        .arg("-o")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|_| anyhow!("--graph {}: rendering .{ext} needs Graphviz's `dot` (apt-get install graphviz), or write .dot", path.display()))?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("dot: no stdin"))?
        .write_all(dot.as_bytes())?;
    let st = child.wait()?;
    if !st.success() {
        bail!("--graph {}: dot failed ({st})", path.display());
    }
    Ok(())
}
