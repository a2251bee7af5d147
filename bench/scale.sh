#!/usr/bin/env bash
# Scaling out (issue 14): does splitting a job over N workers cost CPU, and can a continent be
# planned? Three sections:
#  1. ingest of the benchmark tiles and NDVI of the cube, each as one process and as N = 1, 2,
#     4, 8 workers (`--shard i/N`, then `chunkcube commit`), the workers run one after another
#     and 2 at a time (each --threads 1) on 2 cores: total CPU seconds (user+sys of every
#     worker and the commit, /usr/bin/time) over the one process's; target within 10%. Each
#     N's chunk objects are compared byte for byte with the one process's.
#  2. `chunkcube plan calc … --shards 10000` on a continent-sized cube made of metadata only
#     (examples/continent_cube.rs: 10 bands, 9 years, 547,000² px, 1024² chunks, every chunk
#     listed in the manifest): NDVI (2.6x10^6 output chunks reading 5.2x10^6) and all ten bands
#     as reflectance (2.6x10^7 output chunks): wall and CPU seconds, peak RSS.
#  3. the single-worker throughput the on-paper sizing in the README uses.
# Data (generated, never committed): make_fixtures tiles, a 2x2 grid of TILE² tiles (bands red,
# nir; 6 years), ingested with 1024² chunks.
#   bash bench/scale.sh            # TILE=2048: a 4096²x6 cube
#   SKIP_JOBS=1 bash bench/scale.sh   # sections 2-3 only (3 from an earlier run's section 1)
#   QUICK=1 bash bench/scale.sh    # TILE=1024: a 2048²x6 cube (the continent is metadata: always full size)
# Results: a table on stdout and bench-data/scale-results.jsonl (and $BENCH_RESULTS lines).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
B=./target/release/chunkcube
D=bench-data
TILE=${TILE:-2048}
SIDE=${SIDE:-547000}
[ "$QUICK" = 1 ] && TILE=1024
NS=${NS:-1 2 4 8}
tiles=$D/scale-tiles-$TILE
cube=$D/scale-cube-$TILE
continent=$D/continent-$SIDE
cargo build --release --quiet --example make_fixtures --example continent_cube
cargo build --release --quiet
if [ ! -f $tiles/manifest.csv ]; then
    ./target/release/examples/make_fixtures --out $tiles --tile-size $TILE --grid 2 --bands red,nir \
        --years 2015,2016,2017,2018,2019,2020 --block 512 --no-float-band >/dev/null
fi
results=$D/scale-results.jsonl
# SKIP_JOBS=1: sections 2 and 3 only, section 3 from the jobs' results of an earlier run.
SKIP_JOBS=${SKIP_JOBS:-0}
[ "$SKIP_JOBS" = 1 ] || : >$results
bench_load_warning

# Chunk objects of two cubes byte-identical (paths and contents)?
same_chunks() { python3 scripts/same_chunks.py "$1" "$2" >/dev/null 2>&1; }

# sum of CPU seconds over the logs given
cpu_of() { awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {printf "%.2f", s}' "$@"; }
wall_of() { awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; printf "%.2f", s}' "$1"; }

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# job KIND NAME CMD...: CMD is the one-process command line; workers append --shard i/N.
job() {
    local kind=$1 out=$2; shift 2
    rm -rf "$out.one"
    sync
    bench_time "$logs/one" "$@" --out "$out.one" --quiet || { cat "$logs/one"; exit 1; }
    local one_cpu=$BT_CPU one_wall=$BT_WALL
    printf '%-8s %-26s %8.2f CPU s %8.2f s wall\n' "$kind" "one process" "$one_cpu" "$one_wall"
    echo "{\"kind\": \"$kind\", \"mode\": \"one\", \"workers\": 1, \"cpu_s\": $one_cpu, \"wall_s\": $one_wall}" >>$results
    bench_result scale "$kind one process" chunkcube "chunkcube $kind" "$one_cpu" "CPU s"
    for n in $NS; do
        for mode in sequential 2-at-a-time; do
            rm -rf "$out.n" "$logs"/w*
            local t0; t0=$(date +%s.%N)
            if [ $mode = sequential ]; then
                for ((i = 0; i < n; i++)); do
                    /usr/bin/time -v -o "$logs/w$i.time" "$@" --out "$out.n" --shard "$i/$n" --quiet \
                        >"$logs/w$i" 2>&1 || { cat "$logs/w$i"; exit 1; }
                done
            else
                for ((i = 0; i < n; i += 2)); do
                    for j in $i $((i + 1)); do
                        [ $j -lt $n ] || continue
                        /usr/bin/time -v -o "$logs/w$j.time" "$@" --out "$out.n" --shard "$j/$n" \
                            --threads 1 --quiet >"$logs/w$j" 2>&1 &
                    done
                    wait || { cat "$logs"/w?; exit 1; }
                done
            fi
            /usr/bin/time -v -o "$logs/wc.time" $B commit "$out.n" >"$logs/wc" 2>&1 || { cat "$logs/wc"; exit 1; }
            local wall; wall=$(python3 -c "import time; print(f'{time.time() - $t0:.2f}')")
            local cpu; cpu=$(cpu_of "$logs"/w*.time)
            local commit_cpu; commit_cpu=$(cpu_of "$logs/wc.time")
            local ratio; ratio=$(python3 -c "print(f'{$cpu / $one_cpu:.3f}')")
            local same=identical
            same_chunks "$out.one" "$out.n" || same=DIFFERENT
            printf '%-8s %-26s %8.2f CPU s %8.2f s wall  %s x one process (commit %.2f CPU s)  chunks %s\n' \
                "$kind" "N=$n $mode" "$cpu" "$wall" "$ratio" "$commit_cpu" "$same"
            echo "{\"kind\": \"$kind\", \"mode\": \"$mode\", \"workers\": $n, \"cpu_s\": $cpu, \"commit_cpu_s\": $commit_cpu, \"wall_s\": $wall, \"cpu_ratio\": $ratio, \"chunks\": \"$same\"}" >>$results
            bench_result scale "$kind N=$n $mode" chunkcube "chunkcube $kind --shard" "$cpu" "CPU s"
            [ $same = identical ] || { echo "scale.sh: N=$n $mode wrote different chunks" >&2; exit 1; }
        done
    done
}

if [ "$SKIP_JOBS" != 1 ]; then
    echo "== 1. one process vs N workers (+ commit): $((2 * TILE))²x6, bands red,nir, 1024² chunks =="
    job ingest $D/scale-ingest $B ingest --manifest $tiles/manifest.csv --chunks time=1,y=1024,x=1024
    [ -f $cube/zarr.json ] || { rm -rf $cube; cp -r $D/scale-ingest.one $cube; }
    job ndvi $D/scale-ndvi $B calc $cube --expr 'ndvi=(nir-red)/(nir+red)'
fi

echo "== 2. planning a continent: plan calc --shards 10000 on ${SIDE}² px x 9 years x 10 bands =="
[ -f $continent/zarr.json ] || ./target/release/examples/continent_cube $continent "$SIDE" 9 10
refl=()
for b in blue green red red_edge1 red_edge2 red_edge3 nir nir08 swir1 swir2; do
    refl+=(--expr "${b}_r=$b*0.0001")
done
plan() {
    local name=$1; shift
    bench_time "$logs/plan" $B plan calc $continent "$@" --out s3://bucket/out --shards 10000 --json \
        || { tail -5 "$logs/plan"; exit 1; }
    local totals
    totals=$(python3 - "$logs/plan" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1]))
t = p["total"]
tb = t["bytes_read"] / 1e12
print(f"{t['chunks']} output chunks, {t['gets']} GETs ({tb:.1f} TB), {t['puts']} PUTs, "
      f"imbalance {p['imbalance']:.4f}, {len(p['per_shard'])} shards")
EOF
)
    printf '%-28s %7.2f s wall %7.2f CPU s %7.0f MiB peak RSS: %s\n' "$name" "$BT_WALL" "$BT_CPU" "$BT_RSS_MIB" "$totals"
    echo "{\"kind\": \"plan\", \"name\": \"$name\", \"wall_s\": $BT_WALL, \"cpu_s\": $BT_CPU, \"peak_rss_mib\": $BT_RSS_MIB}" >>$results
    bench_result scale "plan calc --shards 10000: $name" chunkcube "chunkcube plan" "$BT_WALL" s lower "$BT_RSS_MIB"
    cp "$logs/plan" "$D/scale-plan-$name.json"
}
plan ndvi --expr 'ndvi=(nir-red)/(nir+red)'
plan reflectance-10-bands "${refl[@]}"

echo "== 3. single-worker throughput (for the on-paper sizing) =="
python3 - $results "$((2 * TILE))" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
side = int(sys.argv[2])
px = side * side * 6 * 2  # pixels per job: 2 bands x 6 years (uint16)
for kind in ("ingest", "ndvi"):
    one = next(r for r in rows if r["kind"] == kind and r["mode"] == "one")
    print(f"{kind}: {px / one['cpu_s'] / 1e6:.1f} Mpx per CPU-second ({px * 2 / one['cpu_s'] / 1e6:.0f} MB/CPU-s of uint16 input)")
EOF
