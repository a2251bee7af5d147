#!/usr/bin/env bash
# Query benchmark (issue 3, "Performance"), in one run, side by side with zarrs, xarray,
# zarr-python and TensorStore on the same cube:
#   1. in-process latency of a 100x100 window read (cold chunk cache, warm page cache),
#      against decoding the one stored chunk it touches (zarrs retrieve_chunk); plus windows
#      across chunk edges (4 chunks), as the CLI window below is;
#   2. whole-process time of the same read: `chunkcube load ... --print` vs a Python script
#      doing it with xarray (imports included);
#   3. full-band read throughput (MB/s of decoded pixels).
#   4. (not a target) the same reads with glibc's allocator left at its defaults (--no-tune)
#      vs tuned as the command line tunes it (chunkcube::exec::tune_allocator), to show how
#      much of a read is page faults on fresh buffers.
#
# Data (generated if missing, never committed): a 2x2 grid of 4096x4096 tiles, bands red and
# nir, one year -> an 8192x8192 uint16 cube in 1024x1024 zstd-3 + crc32c chunks.
#   bash bench/query.sh       # prints a table and writes bench-data/query-results.json
# Environment: REPS (windows, default 50), STRADDLE_REPS (20), PROC_REPS (10), FULL_REPS (3),
#   WAIT_LOAD=1 to wait (up to 20 min) for the 1-minute load average to fall below 1.
# Needs tensorstore (pip install tensorstore); without it the TensorStore rows are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
B=./target/release/chunkcube
W=./target/release/examples/window_latency
D=bench-data
CUBE=$D/query-cube
REPS=${REPS:-50}
STRADDLE_REPS=${STRADDLE_REPS:-20}
PROC_REPS=${PROC_REPS:-10}
FULL_REPS=${FULL_REPS:-3}
ROUNDS=3
. bench/lib.sh
# QUICK=1: the same cube, fewer repetitions.
[ "$QUICK" = 1 ] && { REPS=10; STRADDLE_REPS=5; PROC_REPS=3; FULL_REPS=1; ROUNDS=1; }
cargo build --release --quiet --example make_fixtures --example window_latency
cargo build --release --quiet
if [ ! -f $D/query-tiles/manifest.csv ]; then
    ./target/release/examples/make_fixtures --out $D/query-tiles --tile-size 4096 --grid 2 --bands red,nir \
        --years 2019 --block 512 --no-float-band
fi
[ -f $CUBE/zarr.json ] || $B ingest --manifest $D/query-tiles/manifest.csv --out $CUBE \
    --chunks time=1,y=1024,x=1024 --quiet --overwrite

# Windows: REPS 100x100 windows, each inside a different 1024x1024 chunk (13 is coprime to the
# 64 chunks), at varying offsets. y=3000:3100 is NOT inside one chunk: it crosses the chunk
# edge at 3072, so the CLI's window y=3000:3100,x=3000:3100 touches 4 chunks; the first window
# here, y=2900:3000,x=2900:3000, lies inside chunk (2,2). STRADDLE windows each cross a chunk
# corner (4 chunks), the first being the CLI's.
WIN=$D/query-windows.txt
WIN4=$D/query-windows-straddle.txt
python3 - "$REPS" "$STRADDLE_REPS" "$WIN" "$WIN4" <<'EOF'
import sys
n, m, f1, f4 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(f1, "w") as f:
    print("# t y x: 100x100 windows, each inside one 1024x1024 chunk", file=f)
    print(0, 2900, 2900, file=f)
    for i in range(1, n):
        cy, cx = divmod((i * 13) % 64, 8)
        print(0, cy * 1024 + 20 + (i * 97) % 880, cx * 1024 + 20 + (i * 61) % 880, file=f)
with open(f4, "w") as f:
    print("# t y x: 100x100 windows, each across a corner of four 1024x1024 chunks", file=f)
    print(0, 3000, 3000, file=f)
    for i in range(1, m):
        cy, cx = divmod((i * 11) % 49, 7)  # corners between chunks (cy..cy+1, cx..cx+1)
        print(0, (cy + 1) * 1024 - 1 - (i * 37) % 98, (cx + 1) * 1024 - 1 - (i * 53) % 98, file=f)
EOF

if [ "${WAIT_LOAD:-0}" = 1 ]; then
    for _ in $(seq 120); do
        awk '{exit !($1 < 1.0)}' /proc/loadavg && break
        sleep 10
    done
fi
# Warm the page cache: every run measures decoding, not the disk.
cat $CUBE/red/c/*/*/* > /dev/null

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average before: $load_before  ($(nproc) cores)"
echo "chunkcube $($B --version 2>/dev/null | awk '{print $2}') / tensorstore $(python3 -c 'import importlib.metadata as m; print(m.version("tensorstore"))' 2>/dev/null || echo 'not installed')"
echo

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== 1+3. in process: windows (cold chunk cache) and full band =="
$W $CUBE $WIN --straddle $WIN4 --full-reps "$FULL_REPS" > $tmp/rust.json
python3 bench/query_py.py window $CUBE $WIN > $tmp/py_window.json
python3 bench/query_py.py window $CUBE $WIN4 --key straddle > $tmp/py_straddle.json
python3 bench/query_py.py full $CUBE --reps "$FULL_REPS" > $tmp/py_full.json
echo
echo "== 2. whole process, $PROC_REPS runs each: y=3000:3100,x=3000:3100 (4 chunks) and 2900:3000 (1 chunk) =="
python3 bench/query_py.py proc "$PROC_REPS" -- $B load $CUBE --measurements red \
    --isel time=0:1,y=3000:3100,x=3000:3100 --print > $tmp/proc_cli.json
python3 bench/query_py.py proc "$PROC_REPS" -- python3 bench/query_xr_cli.py $CUBE red 0:1 3000:3100 3000:3100 \
    > $tmp/proc_py.json
python3 bench/query_py.py proc "$PROC_REPS" -- $B load $CUBE --measurements red \
    --isel time=0:1,y=2900:3000,x=2900:3000 --print > $tmp/proc_cli1.json
python3 bench/query_py.py proc "$PROC_REPS" -- python3 bench/query_xr_cli.py $CUBE red 0:1 2900:3000 2900:3000 \
    > $tmp/proc_py1.json
python3 bench/query_py.py proc "$PROC_REPS" -- $B --version > $tmp/proc_version.json
echo
echo "== 4. allocator: glibc defaults (--no-tune) vs tuned as the CLI tunes it =="
# Three alternating rounds of plain and tuned, so load changes hit both alike.
for round in $(seq $ROUNDS); do
    for m in chunkcube_window zarrs_chunk_decode; do
        $W $CUBE $WIN --profile $m --loops 1 --no-tune 2>/dev/null >> $tmp/plain_$m.jsonl
        $W $CUBE $WIN --profile $m --loops 1 2>/dev/null >> $tmp/tuned_$m.jsonl
    done
    $W $CUBE $WIN --profile chunkcube_full --loops 3 --no-tune 2>/dev/null >> $tmp/plain_chunkcube_full.jsonl
    $W $CUBE $WIN --profile chunkcube_full --loops 3 2>/dev/null >> $tmp/tuned_chunkcube_full.jsonl
done
echo "(done)"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$tmp" "$D/query-results.json" "$load_before" "$load_after" <<'EOF'
import json, sys, os
tmp, out, load_before, load_after = sys.argv[1:5]
J = lambda n: json.load(open(f"{tmp}/{n}.json"))
r, pw, ps, pf = J("rust"), J("py_window"), J("py_straddle"), J("py_full")
cli, pyp, cli1, pyp1 = J("proc_cli"), J("proc_py"), J("proc_cli1"), J("proc_py1")
ver = J("proc_version")

# Same pixels everywhere?
for name, sums in pw["window_sums"].items():
    assert sums == r["window_sums"], f"{name} read different window values than chunkcube"
for name, sums in ps["straddle_sums"].items():
    assert sums == r["straddle_sums"], f"{name} read different straddling-window values than chunkcube"
for name, s in pf["full_sums"].items():
    assert s == r["full_sum"], f"{name} read a different full band than chunkcube"

win = dict(r["window"]); win.update(pw["window"])
st = dict(r["straddle"]); st.update(ps["straddle"])
full = dict(r["full"]); full.update(pf["full"])
refw = win["zarrs_chunk_decode"]["median_s"]
ccw = win["chunkcube_window"]["median_s"]
ts_full = full.get("tensorstore", {}).get("mb_per_s")
nb = r["full_band_bytes"]

def row(n, w, ref, unit=1e3):
    print(f"  {n:<30} {w['median_s']*unit:10.3f} {w['p90_s']*unit:9.3f} {w['cpu_median_s']*unit:9.3f} {w['median_s']/ref:10.2f}x")

print()
print(f"{'1. window 100x100, 1 chunk':<32} {'median ms':>10} {'p90 ms':>9} {'cpu ms':>9} {'x decode':>11}")
for n in ["chunkcube_window", "zarrs_chunk_decode", "zarrs_subset", "tensorstore", "zarr_python", "xarray",
          "chunkcube_window_warm"]:
    if n in win:
        row(n, win[n], refw)
print("  (decode = zarrs retrieve_chunk of the one chunk; chunkcube_window_warm = same window, chunk cached)")
ref4 = st["zarrs_decode_touched_par"]["median_s"]
print(f"{'1b. window 100x100, 4 chunks':<32} {'median ms':>10} {'p90 ms':>9} {'cpu ms':>9} {'x decode4':>11}")
for n in ["chunkcube_window", "zarrs_decode_touched_par", "zarrs_subset", "tensorstore", "zarr_python", "xarray"]:
    if n in st:
        row(n, st[n], ref4)
print("  (decode4 = the 4 touched chunks decoded in parallel with zarrs on rayon)")
print(f"{'2. whole process':<32} {'median ms':>10} {'p90 ms':>9} {'cpu ms':>9} {'x CLI':>11}")
for lab, c, p in [("4 chunks", cli, pyp), ("1 chunk", cli1, pyp1)]:
    print(f"  {'chunkcube load --print, ' + lab:<30} {c['median_s']*1e3:10.1f} {c['p90_s']*1e3:9.1f} {c['cpu_median_s']*1e3:9.1f} {1.0:10.2f}x")
    print(f"  {'python xarray script, ' + lab:<30} {p['median_s']*1e3:10.1f} {p['p90_s']*1e3:9.1f} {p['cpu_median_s']*1e3:9.1f} {p['median_s']/c['median_s']:10.2f}x")
print(f"  {'Cube::open in process, first':<30} {r['open_first_s']*1e3:10.1f} {'':>9} {'':>9} {'':>11}")
print(f"  {'chunkcube --version':<30} {ver['median_s']*1e3:10.1f} {ver['p90_s']*1e3:9.1f} {ver['cpu_median_s']*1e3:9.1f} {'':>11}")
print("  (--version: process start-up alone, mostly the dynamic loader resolving GDAL's shared libraries)")
print(f"{'3. full band read (' + format(nb/1e6, '.0f') + ' MB)':<32} {'MB/s':>10} {'median s':>9} {'cpu s':>9} {'x TS':>11}")
for n in ["chunkcube_full", "zarrs_full_subset", "zarrs_decode_all", "tensorstore", "zarr_python", "xarray"]:
    if n in full:
        f = full[n]
        rel = f"{f['mb_per_s']/ts_full:10.2f}x" if ts_full else f"{'n/a':>11}"
        print(f"  {n:<30} {f['mb_per_s']:10.0f} {f['median_s']:9.3f} {f['cpu_median_s']:9.3f} {rel}")
print("  (zarrs_decode_all = every chunk decoded on rayon and dropped: the decode limit)")
import statistics
def rounds(n):  # median over rounds of each round's median
    rs = [json.loads(l) for l in open(f"{tmp}/{n}.jsonl") if l.strip()]
    return {"median_s": statistics.median(x["median_s"] for x in rs),
            "cpu_median_s": statistics.median(x["cpu_median_s"] for x in rs), "rounds": rs}
whatif = {}
print(f"{'4. allocator defaults vs tuned':<32} {'plain ms':>10} {'tuned ms':>9} {'':>9} {'tuned/plain':>11}")
for m in ["chunkcube_window", "zarrs_chunk_decode", "chunkcube_full"]:
    a, b = rounds(f"plain_{m}"), rounds(f"tuned_{m}")
    whatif[m] = {"plain": a, "tuned": b}
    print(f"  {m:<30} {a['median_s']*1e3:10.3f} {b['median_s']*1e3:9.3f} {'':>9} {b['median_s']/a['median_s']:10.2f}x")
print("  (plain: glibc defaults; tuned: chunkcube::exec::tune_allocator, as the CLI; 3 alternating rounds)")

def target(ratio, op, bound):
    return {"ratio": ratio, "target": f"{op} {bound}", "met": ratio <= bound if op == "<=" else ratio >= bound}
targets = {
    "window_vs_decode": target(ccw / refw, "<=", 1.5),
    "python_script_vs_cli_4chunks": target(pyp["median_s"] / cli["median_s"], ">=", 10),
    "python_script_vs_cli_1chunk": target(pyp1["median_s"] / cli1["median_s"], ">=", 10),
}
if ts_full:
    targets["full_vs_tensorstore"] = target(full["chunkcube_full"]["mb_per_s"] / ts_full, ">=", 1.0)
print()
print("targets:")
for k, t in targets.items():
    print(f"  {k:<30} {t['ratio']:7.2f}  (target {t['target']})  {'MET' if t['met'] else 'NOT MET'}")
print(f"load average before: {load_before}; after: {load_after} ({os.cpu_count()} cores)")
res = {"cube": r["cube"], "threads": r["threads"], "window_size": r["window_size"],
       "open_first_s": r["open_first_s"], "open_again_s": r["open_again_s"],
       "window_1chunk": win, "window_4chunks": st,
       "process": {"chunkcube_cli_4chunks": cli, "python_xarray_script_4chunks": pyp,
                   "chunkcube_cli_1chunk": cli1, "python_xarray_script_1chunk": pyp1,
                   "chunkcube_version": ver},
       "full": full, "full_band_bytes": nb, "whatif_malloc_tuned": whatif, "targets": targets,
       "load_average_before": load_before, "load_average_after": load_after, "cores": os.cpu_count()}
if "tensorstore_error" in pw:
    res["tensorstore_error"] = pw["tensorstore_error"]
json.dump(res, open(out, "w"), indent=2)
print(f"results: {out}")
EOF

# Result lines for bench/report.sh.
python3 - "$D/query-results.json" <<'EOF'
import json, sys
sys.path.insert(0, "bench")
from results import emit
r = json.load(open(sys.argv[1]))
peers = {"tensorstore": "TensorStore", "zarr_python": "zarr-python", "xarray": "xarray"}
for key, path, bound in [("window_1chunk", "window 100x100 (1 chunk), in process", "zarrs_chunk_decode"),
                         ("window_4chunks", "window 100x100 (4 chunks), in process", "zarrs_decode_touched_par")]:
    w = r[key]
    emit("query", path, "chunkcube", "chunkcube", w["chunkcube_window"]["median_s"] * 1e3, "ms")
    emit("query", path, "bound", bound + " (decode only)", w[bound]["median_s"] * 1e3, "ms")
    for k, name in peers.items():
        if k in w:
            emit("query", path, "peer", name, w[k]["median_s"] * 1e3, "ms")
f = r["full"]
path = f"full-band read ({r['full_band_bytes'] / 1e6:.0f} MB)"
emit("query", path, "chunkcube", "chunkcube", f["chunkcube_full"]["mb_per_s"], "MB/s", "higher")
emit("query", path, "bound", "zarrs_decode_all (decode only)", f["zarrs_decode_all"]["mb_per_s"], "MB/s", "higher")
for k, name in peers.items():
    if k in f:
        emit("query", path, "peer", name, f[k]["mb_per_s"], "MB/s", "higher")
p = r["process"]
path = "CLI window 100x100 (4 chunks), whole process"
emit("query", path, "chunkcube", "chunkcube load --print", p["chunkcube_cli_4chunks"]["median_s"] * 1e3, "ms")
emit("query", path, "peer", "python + xarray script", p["python_xarray_script_4chunks"]["median_s"] * 1e3, "ms")
EOF
