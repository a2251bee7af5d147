//! Planning at scale: NDVI over a cube split into more than a million output chunks.
//! Times the lazy build, the chunk table, `explain()`, the summarised graph picture, and the
//! full mapping of every output chunk to the stored chunks it reads; prints peak RSS.
//!
//! ```text
//! cargo run --release --example plan_million -- CUBE [CHUNK_PX]
//! ```

use chunkcube::graph::source_chunks;
use chunkcube::{ChunkSpec, Cube, Query};
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("bench-data/cube1024");
    let px: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let t0 = Instant::now();
    let cube = Cube::open(url)?;
    let q = Query::new()
        .measurements(&["red", "nir"])
        .chunks(ChunkSpec::parse(&format!("time=1,y={px},x={px}"))?);
    let ds = cube.load(&q)?;
    let (red, nir) = (ds.get("red").ok_or("red")?, ds.get("nir").ok_or("nir")?);
    let ndvi = &(nir - red) / &(nir + red);
    let t_build = t0.elapsed().as_secs_f64();
    let t = Instant::now();
    let summary = ndvi.summary();
    let t_summary = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let explain = ndvi.explain();
    let t_explain = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let dot = ndvi.visualize();
    let t_dot = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut reads = 0u64;
    let mut tasks = 0u64;
    for r in chunkcube::graph::regions(ndvi.shape3(), ndvi.chunks3()) {
        reads += source_chunks(ndvi.node(), &r).len() as u64;
        tasks += 1;
    }
    let t_map = t.elapsed().as_secs_f64();
    println!(
        "{{\"output_chunks\": {}, \"graph_tasks\": {}, \"stored_chunks\": {}, \"chunk_reads_mapped\": {reads}, \"build_s\": {t_build:.3}, \"summary_s\": {t_summary:.3}, \"explain_s\": {t_explain:.3}, \"dot_s\": {t_dot:.3}, \"dot_lines\": {}, \"map_every_chunk_s\": {t_map:.3}, \"mapped_tasks\": {tasks}, \"peak_rss_mib\": {:.0}}}",
        summary.chunks,
        summary.tasks,
        explain.stored_chunks,
        dot.lines().count(),
        peak_rss_mib()
    );
    Ok(())
}
