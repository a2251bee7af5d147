# Shared by the bench scripts (source it after `cd` to the repo root):
#   bench_time LOG CMD...     run CMD under /usr/bin/time -v (stdout+stderr to LOG); sets
#                             BT_WALL (s), BT_CPU (user+sys s), BT_RSS_MIB; returns CMD's status
#   bench_result BENCH PATH ROLE TOOL VALUE UNIT [BETTER] [RSS_MIB]
#                             append one result line (JSON) to $BENCH_RESULTS, which
#                             bench/report.sh collects: ROLE is chunkcube, bound (the machine's
#                             limit for that path), peer (another tool doing the same work) or
#                             other (listed, never the best peer); BETTER is lower (default:
#                             times) or higher (throughputs)
#   bench_load_warning        say so when other work on the machine will skew the timings
# Python steps of the scripts emit the same lines with bench/results.py.
# QUICK=1 asks the scripts for smaller data and fewer repetitions (report.sh QUICK=1).

QUICK=${QUICK:-0}
export QUICK
BENCH_RESULTS=${BENCH_RESULTS:-bench-data/bench-results.jsonl}
export BENCH_RESULTS
mkdir -p "$(dirname "$BENCH_RESULTS")"

[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time missing: run scripts/setup.sh" >&2; exit 1; }

bench_time() {
    local log=$1; shift
    local st=0
    /usr/bin/time -v -o "$log.time" "$@" >"$log" 2>&1 || st=$?
    # "Elapsed (wall clock) time (h:mm:ss or m:ss): 0:13.45" -> seconds
    BT_WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; print s}' "$log.time")
    BT_CPU=$(awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {print s}' "$log.time")
    BT_RSS_MIB=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$log.time")
    return $st
}

bench_result() {
    local bench=$1 path=$2 role=$3 tool=$4 value=$5 unit=$6 better=${7:-lower} rss=${8:-null}
    [ -n "$value" ] || return 0
    python3 -c 'import json, sys
b, p, r, t, v, u, w, m = sys.argv[1:9]
print(json.dumps({"bench": b, "path": p, "role": r, "tool": t, "value": float(v), "unit": u,
                  "better": w, "peak_rss_mib": None if m == "null" else float(m), "quick": sys.argv[9] == "1"}))' \
        "$bench" "$path" "$role" "$tool" "$value" "$unit" "$better" "$rss" "$QUICK" >>"$BENCH_RESULTS"
}

bench_load_warning() {
    local l; l=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$l" 'BEGIN {exit !(l > 0.5)}' \
        && echo "bench: warning: load average $l before the run: other processes will skew the timings"
    return 0
}
