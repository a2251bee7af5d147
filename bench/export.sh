#!/usr/bin/env bash
# Export benchmark (issue 13): a cube's 4 bands to Cloud-Optimised GeoTIFFs, the way a user hands
# a result to QGIS or any GDAL tool (GDAL up to 3.10 cannot read Zarr v3).
#
# Data: the ingest benchmark's tiles (examples/make_fixtures.rs: a 2x2 grid of TILE x TILE tiles,
# 4 uint16 bands, one year; TILE=4096 by default, an 8192x8192 cube) ingested once by chunkcube
# into bench-data/export-cube (1024x1024 chunks, zstd:3).
# In one run, each timed with /usr/bin/time -v (wall seconds, CPU seconds, peak RSS), same COG
# options (DEFLATE, predictor, 512x512 blocks, overviews by GDAL's COG driver, all threads):
#   chunkcube           chunkcube export CUBE --out DIR --measurements red,green,blue,nir (COG)
#   xarray+rioxarray    bench/export_xarray.py: xr.open_zarr(CUBE) -> .rio.to_raster(driver="COG")
# Then every pair of files is compared (gdalinfo -checksum of band 1 and its overviews' sizes).
# Prints a table and writes bench-data/export-results.json.
#   bash bench/export.sh            # TILE=2048 bash bench/export.sh for a quicker, 4096x4096 run
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/lib.sh
TILE=${TILE:-4096}
[ "$QUICK" = 1 ] && TILE=1024
DATA=bench-data/export-tiles-$TILE
CUBE=bench-data/export-cube-$TILE
OUT=bench-data/export-out
RESULTS=bench-data/export-results.json
BANDS=red,green,blue,nir

command -v gdalinfo >/dev/null || { echo "bench: gdalinfo missing: run scripts/setup.sh" >&2; exit 1; }
python3 -c "import xarray, rioxarray, zarr, dask" 2>/dev/null \
    || { echo "bench: python3 cannot import xarray, rioxarray, zarr, dask: run scripts/setup.sh" >&2; exit 1; }

echo "bench: cargo build --release (chunkcube, make_fixtures)"
cargo build --release -q --bin chunkcube --example make_fixtures

if [ ! -f "$DATA/manifest.csv" ]; then
    echo "bench: generating $DATA (2x2 tiles of ${TILE}x${TILE}, 4 uint16 bands)"
    ./target/release/examples/make_fixtures --out "$DATA" --tile-size "$TILE" --grid 2 \
        --bands "$BANDS" --years 2019 --block 512 --no-float-band >/dev/null
fi
if [ ! -f "$CUBE/zarr.json" ]; then
    echo "bench: ingesting $CUBE"
    ./target/release/chunkcube ingest --manifest "$DATA/manifest.csv" --out "$CUBE" \
        --chunks time=1,y=1024,x=1024 --quiet --overwrite
fi
find "$CUBE" -type f -exec cat {} + >/dev/null      # warm the page cache: both tools read it warm

export LOAD_BEFORE; LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
bench_load_warning

rm -rf "$OUT" && mkdir -p "$OUT"
TSV="$OUT/results.tsv"
: >"$TSV"

# measure NAME OUTDIR CMD...: run CMD under /usr/bin/time -v; record wall s, CPU s, max RSS, output size.
measure() {
    local name=$1 outdir=$2; shift 2
    local log="$OUT/${name//[^a-zA-Z0-9]/_}.log"
    echo "bench: $name: $*"
    if ! bench_time "$log" "$@"; then
        cat "$log" "$log.time" >&2
        echo "bench: $name failed (log above: $log)" >&2
        exit 1
    fi
    local bytes role=peer
    bytes=$(du -sb "$outdir" | cut -f1)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$BT_WALL" "$BT_CPU" "$BT_RSS_MIB" "$bytes" "$*" >>"$TSV"
    [ "$name" = chunkcube ] && role=chunkcube
    bench_result export "export $((2 * TILE))² x 4 bands to COG" $role "$name" "$BT_WALL" s lower "$BT_RSS_MIB"
}

measure chunkcube "$OUT/chunkcube" ./target/release/chunkcube export "$CUBE" --out "$OUT/chunkcube" \
    --measurements "$BANDS" --format COG --quiet
measure "xarray+rioxarray" "$OUT/xarray" python3 bench/export_xarray.py "$CUBE" "$OUT/xarray" "$BANDS"

# The same pixels and overviews from both (GDAL's checksum of band 1 and of each overview).
for f in "$OUT"/chunkcube/*.tif; do
    g="$OUT/xarray/$(basename "$f")"
    [ -f "$g" ] || { echo "bench: xarray wrote no $(basename "$f")" >&2; exit 1; }
    a=$(gdalinfo -checksum "$f" | grep -E "Checksum=|Overviews:" | tr -d ' ')
    b=$(gdalinfo -checksum "$g" | grep -E "Checksum=|Overviews:" | tr -d ' ')
    [ "$a" = "$b" ] || { echo "bench: $(basename "$f") differs: $a vs $b" >&2; exit 1; }
done
echo "bench: both wrote the same pixels and overviews ($(ls "$OUT"/chunkcube | wc -l) files)"

python3 - "$TSV" "$RESULTS" "$TILE" <<'PY'
import json, os, platform, subprocess, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
base = float(rows[0][1])
res = [{"tool": n, "wall_s": float(w), "ratio_to_chunkcube": round(float(w) / base, 3), "cpu_s": float(u),
        "peak_rss_mib": float(r), "output_mb": round(int(b) / 1e6, 1), "command": c}
       for n, w, u, r, b, c in rows]
print(f"\n{'tool':<20}{'wall s':>8}{'ratio':>8}{'peak RSS MiB':>14}{'CPU s':>8}{'out MB':>8}")
for r in res:
    print(f"{r['tool']:<20}{r['wall_s']:>8.2f}{r['ratio_to_chunkcube']:>8.2f}{r['peak_rss_mib']:>14.0f}"
          f"{r['cpu_s']:>8.1f}{r['output_mb']:>8.0f}")
ver = lambda *cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
tile = int(sys.argv[3])
doc = {
    "benchmark": f"export: {2*tile}x{2*tile} cube, 4 uint16 bands, 1 time step -> COG (DEFLATE, predictor, 512 blocks, overviews)",
    "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                "loadavg_before": float(os.environ["LOAD_BEFORE"]), "loadavg_after": os.getloadavg()[0]},
    "versions": {"chunkcube": ver("./target/release/chunkcube", "--version"), "gdal": ver("gdal-config", "--version"),
                 "python": platform.python_version(),
                 **{m: __import__(m).__version__ for m in ("xarray", "zarr", "dask", "rioxarray", "rasterio")}},
    "results": res,
}
json.dump(doc, open(sys.argv[2], "w"), indent=2)
print(f"\nwrote {sys.argv[2]}")
PY
