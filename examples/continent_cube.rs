//! A continent-sized cube made of metadata only, for planning benchmarks (bench/scale.sh):
//! the arrays, coordinates and group metadata of a committed chunkcube cube, and a chunk
//! manifest listing every chunk as stored with a plausible compressed size, but no chunk
//! object. `chunkcube plan calc` reads nothing else, so it plans this cube exactly as it
//! would the real one; reading a chunk fails (listed but missing), as it should.
//!
//! Default: Digital Earth Africa's annual geomedian at 10 m, ~3x10^11 px per band per year
//! (547,000² px of EPSG:6933), years 2017-2025, 10 uint16 bands, 1024² chunks: 286,225 chunks
//! per band and year, 2.6x10^7 in all.
//!
//! ```text
//! cargo run --release --example continent_cube -- OUT [SIDE_PX] [YEARS] [BANDS]
//! ```

use chunkcube::geo::{parse_time, GeoBox};
use chunkcube::store::layout::{band_builder, write_coords, write_group, Codecs};
use chunkcube::store::manifest::{ArrayManifest, MANIFEST_FILE};
use chunkcube::store::{DType, Store};

const BAND_NAMES: [&str; 10] = [
    "blue",
    "green",
    "red",
    "red_edge1",
    "red_edge2",
    "red_edge3",
    "nir",
    "nir08",
    "swir1",
    "swir2",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .ok_or("usage: continent_cube OUT [SIDE_PX] [YEARS] [BANDS]")?;
    let side: u64 = args.get(2).map_or(Ok(547_000), |s| s.parse())?;
    let years: i32 = args.get(3).map_or(Ok(9), |s| s.parse())?;
    let nbands: usize = args.get(4).map_or(Ok(10), |s| s.parse())?;
    let bands = &BAND_NAMES[..nbands.min(BAND_NAMES.len())];
    let chunks = [1u64, 1024, 1024];
    let shape = [years as u64, side, side];
    let store = Store::open(out, true)?;
    // EPSG:6933 (EASE-Grid 2.0), 10 m pixels, centred on Africa.
    let wkt = gdal::spatial_ref::SpatialRef::from_epsg(6933)?.to_wkt()?;
    let geobox = GeoBox {
        wkt,
        epsg: Some(6933),
        transform: [-2_000_000.0, 10.0, 0.0, 4_000_000.0, 0.0, -10.0],
        width: side,
        height: side,
    };
    let times: Vec<_> = (0..years)
        .map(|y| parse_time(&format!("{}-01-01", 2017 + y)))
        .collect::<Result<_, _>>()?;
    let codecs = Codecs::parse("zstd:3")?;
    for b in bands {
        let a = band_builder(
            DType::U16,
            Some(0.0),
            shape,
            chunks,
            None,
            codecs,
            &serde_json::Map::new(),
            true,
        )
        .build(store.storage(), &format!("/{b}"))?;
        a.store_metadata()?;
    }
    write_coords(&store, &geobox, &times, None)?;
    write_group(
        &store,
        "continent",
        "continent-synthetic",
        serde_json::Map::new(),
    )?;
    // Every chunk listed, ~1.0-1.6 MB each (a 2 MiB uint16 chunk under zstd), deterministic.
    let grid: Vec<u64> = (0..3).map(|i| shape[i].div_ceil(chunks[i])).collect();
    let n: u64 = grid.iter().product();
    let root_key = "zarr.json";
    let mut root: serde_json::Value =
        serde_json::from_slice(&store.get(root_key)?.ok_or("no root")?)?;
    for (bi, b) in bands.iter().enumerate() {
        let mut bytes = 0u64;
        let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ bi as u64;
        let sizes = (0..n).map(|l| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            let size = 1_000_000 + (h % 600_000) as u32;
            bytes += size as u64;
            (l, size)
        });
        let m = ArrayManifest::from_chunks(grid.clone(), sizes)?;
        let enc = m.encode();
        let crc = crc32c::crc32c(&enc);
        store.set(&format!("{b}/{MANIFEST_FILE}"), enc.into())?;
        root["attributes"]["chunkcube"]["arrays"][*b] =
            serde_json::json!({ "chunks": n, "bytes": bytes, "crc32c": crc });
    }
    store.set(root_key, serde_json::to_vec_pretty(&root)?.into())?;
    println!(
        "{out}: {} bands x {years} years x {side}² px, {n} chunks per band, {} in all (metadata only)",
        bands.len(),
        n * bands.len() as u64
    );
    Ok(())
}
