//! The "Parallel processing with Dask" notebook of Digital Earth Africa's beginner's guide,
//! step by step, with chunkcube against the committed fixtures.
//!
//! ```text
//! cargo run --release --example parallel_processing
//! ```
//! Each step prints what the notebook shows: the eager load, the lazy load and its chunk
//! table, a subset that reads one chunk, NDVI chained lazily with its task graph, and the
//! difference between `load()` and `compute()`.

use chunkcube::ingest::{ingest, IngestOptions, Sources};
use chunkcube::Values;
use chunkcube::{ChunkSpec, Cube, Query};
use std::error::Error;
use std::path::Path;

fn main() -> Result<(), Box<dyn Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir()?;
    let cube_path = work.path().join("gm_s2_annual.zarr");
    let cube_url = cube_path.to_str().ok_or("non-UTF-8 temp path")?;

    // 0. Once: ingest the geomedian tiles into a cube (the notebook's datacube index).
    let opts = IngestOptions {
        chunks: ChunkSpec::parse("time=1,y=64,x=64")?,
        quiet: true,
        ..Default::default()
    };
    ingest(
        &Sources::Manifest(root.join("fixtures/manifest.csv")),
        cube_url,
        &opts,
    )?;
    let cube = Cube::open(cube_url)?;
    println!("== the cube ==\n{:?}\n", cube);

    // 1. Standard load: no chunks, so every value is read at once (dc.load without dask_chunks).
    let query = Query::new()
        .measurements(&["red", "green", "blue"])
        .lon_lat((24.0, 25.5), (-21.5, -19.0))
        .time("2019-01-01", "2019-12-31")?;
    let counters = cube.store().counters().clone();
    counters.reset();
    let data = cube.load(&query)?;
    println!("== standard load (eager) ==\n{data}");
    println!("stored chunks read: {}\n", counters.snapshot().chunk_gets);

    // 2. Lazy load: add chunks (dask_chunks={'time': 1, 'x': 100, 'y': 100}); nothing is read.
    counters.reset();
    let lazy_query = query
        .clone()
        .chunks(ChunkSpec::parse("time=1,y=100,x=100")?);
    let mut lazy_data = cube.load(&lazy_query)?;
    println!("== lazy load ==\n{lazy_data}");
    println!("stored chunks read: {}\n", counters.snapshot().chunk_gets);

    // 3. The chunk table of one measurement (lazy_data.red.data).
    let red = lazy_data.get("red").ok_or("no red")?;
    println!("== the chunk table of red ==\n{}", red.summary());

    // 4. A subset stays lazy; loading it reads only the chunk it touches.
    let extract_from_red = red.isel(&[("y", 10..20), ("x", 10..20)])?;
    println!("== red[:, 10:20, 10:20] ==\n{}", extract_from_red.explain());
    // Start cold: the eager load above left its decoded chunks in the session's cache.
    cube.session().clear_cache();
    counters.reset();
    let lazy_red_subset = extract_from_red.compute()?;
    let lazy_reads = counters.snapshot().chunk_gets;
    let eager_red = data
        .get("red")
        .ok_or("no red")?
        .isel(&[("y", 10..20), ("x", 10..20)])?;
    let data_red_subset = eager_red.values().ok_or("eager values")?;
    println!(
        "The loaded arrays match: {} (the lazy subset read {} stored chunk(s); the eager load read them all)\n",
        lazy_red_subset.equals(data_red_subset),
        lazy_reads
    );

    // 5. Chaining: NDVI, lazily, then its task graph (read bottom-up).
    let lazy_data2 = cube.load(&lazy_query.clone().measurements(&["red", "nir"]))?;
    let (nir, red) = (
        lazy_data2.get("nir").ok_or("nir")?,
        lazy_data2.get("red").ok_or("red")?,
    );
    let band_diff = nir - red;
    let band_sum = nir + red;
    let ndvi = &band_diff / &band_sum;
    lazy_data.insert("ndvi", ndvi);
    println!("== with ndvi ==\n{lazy_data}");
    let dot = lazy_data.get("ndvi").ok_or("ndvi")?.visualize();
    let dot_path = work.path().join("ndvi.dot");
    std::fs::write(&dot_path, &dot)?;
    println!(
        "task graph: {} lines of DOT written to {} (render with `dot -Tsvg`)\n",
        dot.lines().count(),
        dot_path.display()
    );

    // 6. load() replaces the lazy ndvi with values; compute() returns values and stays lazy.
    let ndvi_compute: Values = lazy_data.get("ndvi").ok_or("ndvi")?.compute()?;
    println!(
        "compute(): {} values; ndvi still lazy: {}",
        ndvi_compute.shape().iter().product::<usize>(),
        lazy_data.get("ndvi").ok_or("ndvi")?.is_lazy()
    );
    lazy_data.get_mut("ndvi").ok_or("ndvi")?.load()?;
    println!(
        "load():    ndvi still lazy: {}\n{lazy_data}",
        lazy_data.get("ndvi").ok_or("ndvi")?.is_lazy()
    );

    // 7. A window of NDVI reads just the chunks under it: 2 bands x 1 chunk.
    let ndvi_lazy = &(nir - red) / &(nir + red);
    let window = ndvi_lazy.isel(&[("y", 10..20), ("x", 10..20)])?;
    cube.session().clear_cache();
    counters.reset();
    let _ = window.compute()?;
    println!(
        "NDVI of a 10x10 window read {} stored chunks (red and nir, one chunk each)",
        counters.snapshot().chunk_gets
    );
    Ok(())
}
