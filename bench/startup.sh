#!/usr/bin/env bash
# Start-up benchmark (issue 18, "start-up <= 15 ms"): whole-process time of commands that read
# only metadata or a few chunks, median of RUNS runs each (after one warm-up run), in one run:
#   chunkcube --version                        process start alone
#   chunkcube info CUBE                        metadata + lon/lat bounds (EPSG:6933, no GDAL)
#   chunkcube load CUBE --isel ... --print     an index read of 3x3 pixels (one chunk)
#   chunkcube load CUBE --lon .. --lat .. --summary   a lon/lat selection, nothing read
#   bound: /bin/true                           exec + the dynamic loader for libc alone
#   peer: zarr-python opening the same cube and reading the same 3x3 pixels (imports included)
#   peer: gdalinfo --version                   a GDAL tool's start-up (libgdal linked eagerly)
# EAGER_BIN=path/to/an/older/chunkcube adds its rows (e.g. a build with CHUNKCUBE_GDAL_EAGER=1)
# for a before/after.
#   bash bench/startup.sh           # RUNS=20; prints a table, writes bench-data/startup-results.json
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-20}
[ "$QUICK" = 1 ] && RUNS=${QUICK_RUNS:-10}
B=./target/release/chunkcube
D=bench-data
CUBE=$D/startup-cube
cargo build --release --quiet --bin chunkcube
[ -f $CUBE/zarr.json ] || $B ingest --manifest fixtures/manifest.csv --out $CUBE --chunks time=1,y=64,x=64 \
    --quiet --overwrite
bench_load_warning
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ISEL="time=0:1,y=0:3,x=0:3"
time_cmd_k() { local k=$1; shift; python3 bench/query_py.py proc "$RUNS" -- "$@" > "$tmp/$k.json" 2>/dev/null \
    || { echo "bench: $* failed" >&2; exit 1; }; }
time_cmd_k version $B --version
time_cmd_k info $B info $CUBE
time_cmd_k isel $B load $CUBE --measurements red --isel $ISEL --print
time_cmd_k lonlat $B load $CUBE --lon 24.01,24.02 --lat=-20,-19.995 --summary
time_cmd_k true /bin/true
time_cmd_k gdalinfo gdalinfo --version
time_cmd_k zarr python3 -c "import zarr, sys; print(zarr.open_group(sys.argv[1], mode='r')['red'][0:1, 0:3, 0:3])" $CUBE
if [ -n "${EAGER_BIN:-}" ]; then
    time_cmd_k eager_version "$EAGER_BIN" --version
    time_cmd_k eager_info "$EAGER_BIN" info $CUBE
    time_cmd_k eager_isel "$EAGER_BIN" load $CUBE --measurements red --isel $ISEL --print
fi

python3 - "$tmp" "$D/startup-results.json" <<'EOF'
import json, os, sys
sys.path.insert(0, "bench")
from results import emit
tmp, out = sys.argv[1:3]
J = lambda k: json.load(open(f"{tmp}/{k}.json")) if os.path.exists(f"{tmp}/{k}.json") else None
rows = [("chunkcube --version", "version"), ("chunkcube info", "info"), ("chunkcube load --isel --print", "isel"),
        ("chunkcube load --lon/--lat --summary", "lonlat"), ("eager: chunkcube --version", "eager_version"),
        ("eager: chunkcube info", "eager_info"), ("eager: chunkcube load --isel --print", "eager_isel"),
        ("bound: /bin/true", "true"), ("peer: gdalinfo --version", "gdalinfo"), ("peer: zarr-python open + 3x3 read", "zarr")]
res = {}
print(f"\n{'start-up':<40} {'median ms':>10} {'p90 ms':>8} {'cpu ms':>8}")
for name, k in rows:
    r = J(k)
    if r:
        res[k] = r
        print(f"{name:<40} {r['median_s']*1e3:10.1f} {r['p90_s']*1e3:8.1f} {r['cpu_median_s']*1e3:8.1f}")
ms = lambda k: res[k]["median_s"] * 1e3
target = {k: {"median_ms": ms(k), "target_ms": 15, "met": ms(k) <= 15} for k in ("info", "isel")}
print("targets: " + ", ".join(f"{k} {v['median_ms']:.1f} ms <= 15 ms {'MET' if v['met'] else 'NOT MET'}" for k, v in target.items()))
json.dump({"results": res, "targets": target, "loadavg_after": os.getloadavg()[0]}, open(out, "w"), indent=2)
print(f"wrote {out}")
for path, k, peer in [("start-up: info", "info", "zarr"), ("start-up: index read", "isel", "zarr"),
                      ("start-up: --version", "version", "gdalinfo")]:
    emit("startup", path, "chunkcube", "chunkcube", ms(k), "ms")
    emit("startup", path, "bound", "/bin/true", ms("true"), "ms")
    emit("startup", path, "peer", {"zarr": "zarr-python", "gdalinfo": "gdalinfo --version"}[peer], ms(peer), "ms")
EOF
