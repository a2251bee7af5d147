#!/usr/bin/env bash
# Ingest benchmark (DESIGN.md, Performance: "Ingest: faster than gdal_translate -of ZARR over a VRT").
#
# Data: a 2x2 grid of 4096x4096 GeoTIFF tiles, 4 uint16 bands, one year, DEFLATE, 512x512 blocks
# (made once by examples/make_fixtures.rs into bench-data/ingest-tiles, 537 MB of pixels).
# In one run, each timed with /usr/bin/time -v (wall seconds, peak RSS), same 1024x1024 chunks, zstd level 3:
#   chunkcube        chunkcube ingest --chunks time=1,y=1024,x=1024 --compression zstd:3
#   gdal_translate   gdalbuildvrt per band + gdal_translate -of ZARR (Zarr v2), bands one after another
#                    with GDAL_NUM_THREADS=ALL_CPUS; "gdal_translate -P2" runs two bands at a time
#   xarray+dask      bench/ingest_xarray.py: rioxarray tiles -> combine_by_coords -> .to_zarr (v3)
#   bound            examples/bound_ingest.rs: GDAL decode + zstd:3 encode of every 1024x1024 window
#                    on all cores, nothing written: the machine's limit
# Prints a table and writes bench-data/ingest-results.json. Takes about 2 minutes (plus data once).
#   bash bench/ingest.sh
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/lib.sh
TILE=${TILE:-4096}
[ "$QUICK" = 1 ] && TILE=1024
DATA=bench-data/ingest-tiles
[ "$TILE" = 4096 ] || DATA=bench-data/ingest-tiles-$TILE
OUT=bench-data/ingest-out
RESULTS=bench-data/ingest-results.json
BANDS=(red green blue nir)
THREADS=$(nproc)

command -v gdal_translate >/dev/null || { echo "bench: gdal_translate missing: run scripts/setup.sh" >&2; exit 1; }
python3 -c "import xarray, rioxarray, zarr, dask" 2>/dev/null \
    || { echo "bench: python3 cannot import xarray, rioxarray, zarr, dask: run scripts/setup.sh" >&2; exit 1; }

echo "bench: cargo build --release (chunkcube, make_fixtures, bound_ingest)"
cargo build --release -q --bin chunkcube --example make_fixtures --example bound_ingest

if [ ! -f "$DATA/manifest.csv" ]; then
    echo "bench: generating $DATA (2x2 tiles of ${TILE}x${TILE}, 4 uint16 bands, DEFLATE, 512 blocks)"
    ./target/release/examples/make_fixtures --out "$DATA" --tile-size "$TILE" --grid 2 \
        --bands "$(IFS=,; echo "${BANDS[*]}")" --years 2019 --block 512 --no-float-band >/dev/null
fi
cat "$DATA"/tiles/*/*/*/*.tif >/dev/null          # warm the page cache: every tool reads it warm

# Other work on the machine skews every number: say so, and record the load in the JSON.
export LOAD_BEFORE; LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
bench_load_warning

rm -rf "$OUT" && mkdir -p "$OUT"
TSV="$OUT/results.tsv"
: >"$TSV"

# measure NAME OUTDIR CMD...: run CMD under /usr/bin/time -v; record wall s, CPU s (user+sys: less
# sensitive than wall time to other load on the machine), max RSS, output size.
measure() {
    local name=$1 outdir=$2; shift 2
    local log="$OUT/${name//[^a-zA-Z0-9]/_}.log"
    echo "bench: $name: $*"
    if ! bench_time "$log" "$@"; then
        cat "$log" "$log.time" >&2
        echo "bench: $name failed (log above: $log)" >&2
        exit 1
    fi
    local bytes=0 role=peer
    [ -n "$outdir" ] && bytes=$(du -sb "$outdir" | cut -f1)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$BT_WALL" "$BT_CPU" "$BT_RSS_MIB" "$bytes" "$*" >>"$TSV"
    case $name in chunkcube) role=chunkcube ;; bound*) role=bound ;; esac
    bench_result ingest "ingest ${TILE}² x 2x2 tiles x 4 bands" $role "$name" "$BT_WALL" s lower "$BT_RSS_MIB"
}

# GDAL: one VRT per band over its tiles, then gdal_translate it to a Zarr v2 store.
# (GDAL 3.6's ZSTD_LEVEL defaults to 13: set 3 to match.)
gdal_band() {  # gdal_band BAND OUTDIR
    local b=$1 dir=$2
    awk -F, -v b="$b" -v d="$DATA" 'NR > 1 && $2 == b {print d "/" $1}' "$DATA/manifest.csv" >"$dir/$b.txt"
    gdalbuildvrt -q -input_file_list "$dir/$b.txt" "$dir/$b.vrt"
    gdal_translate -q -of ZARR -co FORMAT=ZARR_V2 -co BLOCKSIZE=1024,1024 \
        -co COMPRESS=ZSTD -co ZSTD_LEVEL=3 "$dir/$b.vrt" "$dir/$b.zarr"
}
export -f gdal_band
export DATA TILE GDAL_NUM_THREADS=ALL_CPUS
mkdir -p "$OUT/gdal" "$OUT/gdal_p2"

measure chunkcube "$OUT/chunkcube" ./target/release/chunkcube ingest --manifest "$DATA/manifest.csv" \
    --out "$OUT/chunkcube" --chunks time=1,y=1024,x=1024 --compression zstd:3 --quiet --overwrite
measure gdal_translate "$OUT/gdal" bash -c \
    "for b in ${BANDS[*]}; do gdal_band \$b $OUT/gdal; done"
measure "gdal_translate -P2" "$OUT/gdal_p2" bash -c \
    "printf '%s\n' ${BANDS[*]} | xargs -P $THREADS -I{} bash -c 'gdal_band {} $OUT/gdal_p2'"
measure "xarray+dask" "$OUT/xarray" python3 bench/ingest_xarray.py "$DATA/manifest.csv" "$OUT/xarray" \
    --chunk 1024 --level 3 --threads "$THREADS"
measure "bound (decode+zstd)" "" ./target/release/examples/bound_ingest "$DATA/manifest.csv" \
    --window 1024 --level 3 --threads "$THREADS"

# Table + JSON (ratio = wall / chunkcube's wall: above 1 means slower than chunkcube).
python3 - "$TSV" "$RESULTS" <<'EOF'
import json, os, platform, subprocess, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
base = float(rows[0][1])
res = [{"tool": n, "wall_s": float(w), "ratio_to_chunkcube": round(float(w) / base, 3), "cpu_s": float(u),
        "peak_rss_mib": float(r), "output_mb": round(int(b) / 1e6, 1), "command": c}
       for n, w, u, r, b, c in rows]
print(f"\n{'tool':<22}{'wall s':>8}{'ratio':>8}{'peak RSS MiB':>14}{'CPU s':>8}{'out MB':>8}")
for r in res:
    out = f"{r['output_mb']:.0f}" if r["output_mb"] else "-"
    print(f"{r['tool']:<22}{r['wall_s']:>8.2f}{r['ratio_to_chunkcube']:>8.2f}{r['peak_rss_mib']:>14.0f}"
          f"{r['cpu_s']:>8.1f}{out:>8}")
ver = lambda *cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
doc = {
    "benchmark": f"ingest: 2x2 tiles {os.environ['TILE']}x{os.environ['TILE']}, 4 uint16 bands, 1 year, DEFLATE 512 blocks -> 1024x1024 chunks zstd:3",
    "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                "loadavg_before": float(os.environ["LOAD_BEFORE"]), "loadavg_after": os.getloadavg()[0]},
    "versions": {"chunkcube": ver("./target/release/chunkcube", "--version"), "gdal": ver("gdal-config", "--version"),
                 "python": platform.python_version(),
                 **{m: __import__(m).__version__ for m in ("xarray", "zarr", "dask", "rioxarray")}},
    "results": res,
}
json.dump(doc, open(sys.argv[2], "w"), indent=2)
print(f"\nwrote {sys.argv[2]}")
EOF
