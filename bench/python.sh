#!/usr/bin/env bash
# The Python package's benchmark (issue 15), side by side in one run: the notebook's NDVI and
# NDVI mean over time from Python with chunkcube, the Rust CLI doing the same, and xarray + dask
# (threads) on the same cube, each written as a Zarr cube; wall time and peak RSS of each
# process. Then open + 100x100 window latency from Python: chunkcube vs xarray and zarr-python.
#
# Data (generated, never committed; shared with bench/calc.sh at the default size): a 2x2 grid
# of TILE x TILE tiles (default 4096), bands red and nir, 6 years, 1024x1024 chunks.
#   bash bench/python.sh                 # prints a table, writes bench-data/python-results.jsonl
#   TILE=2048 bash bench/python.sh       # a quarter of the pixels
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TILE=${TILE:-4096}
[ "$QUICK" = 1 ] && TILE=1024
B=./target/release/chunkcube
D=bench-data
cargo build --release --quiet --example make_fixtures
cargo build --release --quiet
# The package, built as the tests build it (a venv under target/).
venv=target/pyenv
[ -x $venv/bin/python ] || python3 -m venv --system-site-packages $venv
$venv/bin/python -c "import maturin" 2>/dev/null || $venv/bin/python -m pip install -q "maturin>=1.5,<2"
(cd python && VIRTUAL_ENV=$PWD/../$venv PATH=$PWD/../$venv/bin:$PATH maturin develop --release --quiet >/dev/null 2>&1)
PY=$venv/bin/python

if [ "$TILE" = 4096 ]; then tiles=$D/calc-tiles; cube=$D/cube1024; else tiles=$D/py-tiles-$TILE; cube=$D/py-cube-$TILE; fi
if [ ! -f $tiles/manifest.csv ]; then
    ./target/release/examples/make_fixtures --out $tiles --tile-size "$TILE" --grid 2 --bands red,nir \
        --years 2015,2016,2017,2018,2019,2020 --block 512 --no-float-band
fi
[ -f $cube/zarr.json ] || $B ingest --manifest $tiles/manifest.csv --out $cube --chunks time=1,y=1024,x=1024 --quiet --overwrite

results=$D/python-results.jsonl
: > $results
declare -A WALL RSS
run() {
    local name=$1; shift
    local log; log=$(mktemp)
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    if bench_time "$log" "$@"; then ok=true; else ok=false; fi
    local wall=$BT_WALL rss=${BT_RSS_MIB%.*}
    WALL[$name]=$wall; RSS[$name]=$rss
    printf '%-36s %8.2f s %8s MiB  %s\n' "$name" "$wall" "$rss" "$($ok && echo ok || { echo FAILED; tail -3 "$log" "$log.time"; })"
    echo "{\"name\": \"$name\", \"wall_s\": $wall, \"peak_rss_mib\": $rss, \"ok\": $ok}" >> $results
    local role=peer tool=$name
    case $name in "python "*) role=chunkcube; tool="chunkcube (Python)" ;; "cli "*) role=other; tool="chunkcube (CLI)" ;; "dask "*) tool="xarray+dask" ;; esac
    $ok && bench_result python "python: ${name#* } over ${shape:-?} to Zarr" $role "$tool" "$wall" s lower "$BT_RSS_MIB"
    rm -f "$log" "$log.time"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

shape=$($B info $cube --json | $PY -c 'import json,sys; print("x".join(map(str, json.load(sys.stdin)["shape"])))')
echo "== NDVI and NDVI mean over time: cube $shape (time x y x), 1024x1024 chunks =="
run "cli ndvi" $B calc $cube --expr 'ndvi=(nir-red)/(nir+red)' --out $D/py-out-cli --overwrite --quiet
run "python ndvi" $PY bench/python_bench.py ndvi $cube $D/py-out-py
run "dask ndvi" $PY bench/calc_dask.py $cube $D/py-out-dask ndvi
run "cli mean" $B calc $cube --expr 'ndvi=(nir-red)/(nir+red)' --reduce mean:time --out $D/py-out-cli-mean --overwrite --quiet
run "python mean" $PY bench/python_bench.py mean $cube $D/py-out-py-mean
run "dask mean" $PY bench/calc_dask.py $cube $D/py-out-dask-mean mean
echo
echo "== ratios vs xarray + dask (wall: dask / ours, higher is faster; RSS: ours / dask) =="
for w in ndvi mean; do
    printf '%-6s wall  cli %sx  python %sx   |  peak RSS  cli %s  python %s\n' "$w" \
        "$(ratio "${WALL[dask $w]}" "${WALL[cli $w]}")" "$(ratio "${WALL[dask $w]}" "${WALL[python $w]}")" \
        "$(ratio "${RSS[cli $w]}" "${RSS[dask $w]}")" "$(ratio "${RSS[python $w]}" "${RSS[dask $w]}")"
done
echo
echo "== open + 100x100 window (median of 20, page cache warm) =="
$PY bench/python_bench.py latency $cube 20 | tee $D/python-latency.txt
echo "results: $results"
