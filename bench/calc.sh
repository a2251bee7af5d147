#!/usr/bin/env bash
# calc and out-of-core benchmarks (issues 4 and 6), in one run, side by side with xarray + dask.
#
# Data (generated, never committed): a 2x2 grid of 4096x4096 tiles, bands red and nir, 6 years
# -> an 8192x8192x6 cube of uint16 (1.6 GB of pixels), ingested twice: 1024x1024 chunks (NDVI,
# mean) and 2048x2048 chunks (median over time under a 48 MiB limit).
#   bash bench/calc.sh            # prints a table and writes bench-data/calc-results.jsonl
#   SKIP_DISTRIBUTED=1 bash bench/calc.sh   # without the (slow) dask distributed runs
#   QUICK=1 bash bench/calc.sh    # 1024² tiles (2048x2048x6), the first two sections only
# Also (issue 12): a 3600x4200x6 cube ingested with 4096² chunks (NDVI and mean under 64 MiB vs
# 4 GiB) and with 2048² chunks (a limit sweep of NDVI, mean and median vs dask threads).
# Also (issue 18): max/min/sum/count/mean over time of nir on the 3600x4200x6 cube in 1024² chunks,
# each beside its decode+reduce+encode bound (examples/bound_calc.rs --reduce OP BAND).
#   SECTIONS=bounded bash bench/calc.sh   # only the issue-12 sections (4096² chunks, limit sweep)
#   SECTIONS=reduce bash bench/calc.sh    # only the issue-18 reductions (and the load --out copy);
#     with QUICK=1, max over the small cube
#   EDGE_TILE=4200x4160 EDGE_YEARS=2015,2016 SECTIONS=bounded bash bench/calc.sh   # smaller cube
#     (still a full 4096² chunk and 2048² chunks with edges both ways; 2 steps instead of 6)
# Every run is one line of bench-data/calc-results.jsonl: {name, wall_s, peak_rss_mib, ok}.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
# CHUNKCUBE=PATH: time another build (before/after comparisons); the default is this tree's.
B=${CHUNKCUBE:-./target/release/chunkcube}
D=bench-data
# QUICK=1: 1024² tiles (a 2048x2048x6 cube), the first two sections only.
TILE=${TILE:-4096}
[ "$QUICK" = 1 ] && TILE=1024
SECTIONS=${SECTIONS:-all}
# The issue-12 cube: sides not multiples of 2048 or 4096 (edge chunks in both directions).
EDGE_TILE=${EDGE_TILE:-3600x4200}
EDGE_YEARS=${EDGE_YEARS:-2015,2016,2017,2018,2019,2020}
ET=$D/edge-tiles; E4=$D/edge4096; E2=$D/edge2048
if [ "$EDGE_TILE,$EDGE_YEARS" != "3600x4200,2015,2016,2017,2018,2019,2020" ]; then
    tag="$EDGE_TILE-$(echo "$EDGE_YEARS" | tr ',' '\n' | wc -l)y"
    ET=$D/edge-tiles-$tag; E4=$D/edge4096-$tag; E2=$D/edge2048-$tag
fi
ESZ="$EDGE_TILE x $(echo "$EDGE_YEARS" | tr ',' '\n' | wc -l) steps"
tiles=$D/calc-tiles; c1=$D/cube1024; c2=$D/cube2048
[ "$TILE" = 4096 ] || { tiles=$D/calc-tiles-$TILE; c1=$D/cube1024-t$TILE; c2=$D/cube2048-t$TILE; }
cargo build --release --quiet --example make_fixtures --example bound_calc
cargo build --release --quiet
bench_load_warning
# The 8192² (or QUICK 2048²) cubes: not needed by SECTIONS=bounded, nor by SECTIONS=reduce at full size.
NEED_C=true
[ "$SECTIONS" = bounded ] && NEED_C=false
[ "$SECTIONS" = reduce ] && [ "$QUICK" != 1 ] && NEED_C=false
if ! $NEED_C; then :; elif [ ! -f $tiles/manifest.csv ]; then
    ./target/release/examples/make_fixtures --out $tiles --tile-size $TILE --grid 2 --bands red,nir \
        --years 2015,2016,2017,2018,2019,2020 --block 512 --no-float-band
fi
! $NEED_C || [ -f $c1/zarr.json ] || $B ingest --manifest $tiles/manifest.csv --out $c1 --chunks time=1,y=1024,x=1024 --quiet --overwrite
! $NEED_C || [ -f $c2/zarr.json ] || $B ingest --manifest $tiles/manifest.csv --out $c2 --chunks time=1,y=2048,x=2048 --quiet --overwrite
SZ="$((2 * TILE))²x6"

results=$D/calc-results.jsonl
: > $results
# run NAME CMD...: wall seconds and peak RSS (MiB) via /usr/bin/time -v
run() {
    local name=$1; shift
    local log; log=$(mktemp)
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    if bench_time "$log" "$@"; then ok=true; else ok=false; fi
    local wall=$BT_WALL rss=${BT_RSS_MIB%.*}
    printf '%-44s %8.2f s %8s MiB  %s\n' "$name" "$wall" "$rss" "$($ok && echo ok || echo FAILED)"
    echo "{\"name\": \"$name\", \"wall_s\": $wall, \"peak_rss_mib\": $rss, \"ok\": $ok}" >> $results
    rm -f "$log" "$log.time"
}
# res PATH ROLE TOOL: the run just made as a result line for bench/report.sh (if it succeeded).
res() { if $ok; then bench_result calc "$1" "$2" "$3" "$BT_WALL" s lower "$BT_RSS_MIB"; fi; }

if [ "$SECTIONS" = all ]; then
echo "== NDVI and NDVI mean over time: $SZ, 1024x1024 chunks, zstd 3 =="
run "bound: decode+ndvi+encode (bound_calc)" ./target/release/examples/bound_calc $c1
res "ndvi $SZ to Zarr" bound "decode+ndvi+encode (bound_calc)"
run "chunkcube calc ndvi --out" $B calc $c1 --expr 'ndvi=(nir-red)/(nir+red)' --out $D/out-ndvi --overwrite --quiet
res "ndvi $SZ to Zarr" chunkcube "chunkcube calc"
run "dask threads ndvi to_zarr" python3 bench/calc_dask.py $c1 $D/out-ndvi-dask ndvi
res "ndvi $SZ to Zarr" peer "xarray+dask threads"
run "chunkcube calc ndvi mean:time --out" $B calc $c1 --expr 'ndvi=(nir-red)/(nir+red)' --reduce mean:time --out $D/out-mean --overwrite --quiet
res "ndvi mean:time $SZ to Zarr" chunkcube "chunkcube calc"
run "dask threads ndvi mean(time) to_zarr" python3 bench/calc_dask.py $c1 $D/out-mean-dask mean
res "ndvi mean:time $SZ to Zarr" peer "xarray+dask threads"
echo
echo "== out of core: NDVI under 64MiB; median over 6 steps of 2048x2048 chunks under 48MiB =="
run "chunkcube ndvi --memory-limit 64MiB" $B calc $c1 --expr 'ndvi=(nir-red)/(nir+red)' --out $D/out-ndvi64 --overwrite --quiet --memory-limit 64MiB
res "ndvi $SZ under 64MiB" chunkcube "chunkcube calc --memory-limit 64MiB"
run "chunkcube ndvi --memory-limit 4GiB" $B calc $c1 --expr 'ndvi=(nir-red)/(nir+red)' --out $D/out-ndvi4g --overwrite --quiet --memory-limit 4GiB
run "chunkcube median:time --memory-limit 48MiB" $B calc $c2 --expr 'm=nir' --reduce median:time --out $D/out-med48 --overwrite --quiet --memory-limit 48MiB --stats $D/med48-stats.json
res "median:time $SZ (2048² chunks) under 48MiB" chunkcube "chunkcube calc --memory-limit 48MiB"
run "chunkcube median:time --memory-limit 4GiB" $B calc $c2 --expr 'm=nir' --reduce median:time --out $D/out-med4g --overwrite --quiet --memory-limit 4GiB
# Near the smallest limit the planner accepts for this median (it states 11.28 MB).
run "chunkcube median:time --memory-limit 12MiB" $B calc $c2 --expr 'm=nir' --reduce median:time --out $D/out-med12 --overwrite --quiet --memory-limit 12MiB
run "dask threads median(time)" python3 bench/calc_dask.py $c2 $D/out-med-dask median
res "median:time $SZ (2048² chunks) under 48MiB" peer "xarray+dask threads (no limit)"
# dask distributed under these limits may never finish (its workers pause, spill and restart):
# bounded by DIST_TIMEOUT seconds (default 900; a timed-out run shows FAILED); SKIP_DISTRIBUTED=1
# leaves them out.
[ "$QUICK" = 1 ] && echo "(QUICK=1: the distributed, chunk-size and limit-sweep sections are left out)"
if [ "$QUICK" != 1 ] && [ "${SKIP_DISTRIBUTED:-0}" != 1 ]; then
    T=${DIST_TIMEOUT:-900}
    run "dask distributed (memory_limit 48MiB) median" timeout $T python3 bench/calc_dask.py $c2 $D/out-med-dist median --distributed 48MiB
    run "dask distributed (memory_limit 64MiB) ndvi" timeout $T python3 bench/calc_dask.py $c1 $D/out-ndvi-dist ndvi --distributed 64MiB
fi
fi  # SECTIONS = all
edge_cubes() {
    [ -f $ET/manifest.csv ] || ./target/release/examples/make_fixtures --out $ET --tile-size $EDGE_TILE \
        --grid 1 --bands red,nir --years $EDGE_YEARS --block 512 --no-float-band
    [ -f $E4/zarr.json ] || $B ingest --manifest $ET/manifest.csv --out $E4 --chunks time=1,y=4096,x=4096 --quiet --overwrite
    [ -f $E2/zarr.json ] || $B ingest --manifest $ET/manifest.csv --out $E2 --chunks time=1,y=2048,x=2048 --quiet --overwrite
}
if [ "$QUICK" != 1 ] && [ "$SECTIONS" != reduce ]; then
echo
echo "== memory independent of the chunk size: $ESZ, 4096x4096 chunks (edge chunks both ways) =="
# Target: NDVI under 64MiB within 1.3x the wall time under 4GiB, peak RSS <= 164 MiB.
edge_cubes
for L in 64MiB 4GiB; do
    run "chunkcube 4096² ndvi --memory-limit $L" $B calc $E4 --expr 'ndvi=(nir-red)/(nir+red)' --out $D/out-e4-ndvi --overwrite --quiet --memory-limit $L
    res "ndvi $ESZ (4096² chunks)" chunkcube "chunkcube calc --memory-limit $L"
    run "chunkcube 4096² ndvi mean --memory-limit $L" $B calc $E4 --expr 'ndvi=(nir-red)/(nir+red)' --reduce mean:time --out $D/out-e4-mean --overwrite --quiet --memory-limit $L
    res "ndvi mean:time $ESZ (4096² chunks)" chunkcube "chunkcube calc --memory-limit $L"
done
run "dask threads 4096² ndvi" python3 bench/calc_dask.py $E4 $D/out-e4-ndvi-dask ndvi
res "ndvi $ESZ (4096² chunks)" peer "xarray+dask threads (no limit)"
fi
if [ "$SECTIONS" != bounded ]; then
echo
# QUICK=1: max only, over the small cube.
RCUBE=$D/edge1024 RSZ="6x3600x4200" OPS="max min sum count mean"
[ "$QUICK" = 1 ] && { RCUBE=$c1; RSZ=$SZ; OPS=max; }
echo "== reductions over time of one uint16 band: $RSZ, 1024x1024 chunks =="
# bound_calc --reduce: zarrs decode of every time step + a plain nodata-aware integer loop +
# zstd encode of the float32 result, on rayon. Target: chunkcube <= 1.2x the bound.
[ -f $RCUBE/zarr.json ] || [ -f $ET/manifest.csv ] || ./target/release/examples/make_fixtures --out $ET \
    --tile-size $EDGE_TILE --grid 1 --bands red,nir --years $EDGE_YEARS --block 512 --no-float-band
[ -f $RCUBE/zarr.json ] || $B ingest --manifest $ET/manifest.csv --out $D/edge1024 --chunks time=1,y=1024,x=1024 --quiet --overwrite
for op in $OPS; do
    run "bound: decode+$op+encode (bound_calc)" ./target/release/examples/bound_calc $RCUBE --reduce $op nir
    res "$op:time of nir $RSZ to Zarr" bound "decode+$op+encode (bound_calc)"
    run "chunkcube calc s=nir $op:time --out" $B calc $RCUBE --expr s=nir --reduce $op:time --out $D/out-r-$op --overwrite --quiet
    res "$op:time of nir $RSZ to Zarr" chunkcube "chunkcube calc"
done
# A copy of one band (issue 18: load --out in the stored chunks, inside the limit).
run "chunkcube load nir --out --memory-limit 256MiB" $B load $RCUBE --measurements nir --out $D/out-copy --overwrite --quiet --memory-limit 256MiB
res "copy nir $RSZ (load --out, 256MiB limit)" chunkcube "chunkcube load --out"
run "chunkcube calc s=nir --out (the same copy)" $B calc $RCUBE --expr s=nir --out $D/out-copy2 --overwrite --quiet --memory-limit 256MiB
res "copy nir $RSZ (load --out, 256MiB limit)" other "chunkcube calc s=nir --out"
fi  # SECTIONS != bounded
if [ "$QUICK" = 1 ] || [ "$SECTIONS" = reduce ]; then echo "results: $results"; exit 0; fi
echo
echo "== limit sweep: $ESZ, 2048x2048 chunks with edge chunks, vs dask threads =="
edge_cubes
# Each limit from the planner's stated minimum up (the minimum itself is asked for first).
for w in ndvi mean median; do
    case $w in
        ndvi) args=(--expr 'ndvi=(nir-red)/(nir+red)');;
        mean) args=(--expr 'ndvi=(nir-red)/(nir+red)' --reduce mean:time);;
        median) args=(--expr 'm=nir' --reduce median:time);;
    esac
    min=$( ($B calc $E2 "${args[@]}" --memory-limit 1KiB --out $D/out-e2-refused --quiet 2>&1 || true) | sed -n 's/.*use at least \([0-9.]* [kMG]*B\).*/\1/p' | tr -d ' ')
    echo "$w: stated minimum $min"
    for L in $min 48MiB 64MiB 128MiB 1GiB; do
        run "chunkcube $w --memory-limit $L" $B calc $E2 "${args[@]}" --out $D/out-e2-$w --overwrite --quiet --memory-limit $L --stats $D/e2-$w-$L.json
        echo "    tracked peak $(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["peak_tracked_bytes"]/2**20,1))' $D/e2-$w-$L.json 2>/dev/null || echo '?') MiB"
        res "$w $ESZ (2048² chunks) under $L" chunkcube "chunkcube calc --memory-limit $L"
    done
    run "dask threads $w (edge2048)" python3 bench/calc_dask.py $E2 $D/out-e2-$w-dask $w
    res "$w $ESZ (2048² chunks)" peer "xarray+dask threads (no limit)"
done
[ "$SECTIONS" = bounded ] && { echo "results: $results"; exit 0; }
echo
echo "median spill stats: $(tr -d '\n ' < $D/med48-stats.json)"
echo
echo "== planning a million output chunks =="
./target/release/chunkcube --version >/dev/null
cargo run --release --quiet --example plan_million 2>/dev/null || true
echo "results: $results"
