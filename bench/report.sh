#!/usr/bin/env bash
# The state of performance as one table and one picture: runs every benchmark in bench/
# (startup, ingest, query, calc, python, export, s3), each writing result lines (bench/lib.sh's
# bench_result, bench/results.py) into one file, then bench/report.py turns them into
#   target/bench-report/report.json   one row per path: chunkcube, bound, best peer, ratios
#   target/bench-report/report.md     the same as a Markdown table
#   target/bench-report/ratios.png    a bar chart of the ratios (matplotlib)
# plus each benchmark's full output in target/bench-report/<name>.log.
#   bash bench/report.sh                       # everything, full size (about an hour)
#   QUICK=1 bash bench/report.sh               # small data, few repetitions (a few minutes)
#   BENCHES="startup query" bash bench/report.sh   # some of them
# A benchmark that fails is reported (its log's tail) and left out of the table; the exit
# status is then 1.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=target/bench-report
mkdir -p "$OUT"
export BENCH_RESULTS=$OUT/results.jsonl
export QUICK=${QUICK:-0}
: >"$BENCH_RESULTS"
BENCHES=${BENCHES:-"startup ingest query calc python export s3"}
python3 -c "import matplotlib" 2>/dev/null || { echo "report: python3 cannot import matplotlib: run scripts/setup.sh" >&2; exit 1; }
failed=()
for b in $BENCHES; do
    [ -f "bench/$b.sh" ] || { echo "report: no bench/$b.sh" >&2; failed+=("$b"); continue; }
    start=$(date +%s)
    echo "report: bench/$b.sh (QUICK=$QUICK) > $OUT/$b.log"
    if bash "bench/$b.sh" >"$OUT/$b.log" 2>&1; then
        echo "report: $b done in $(($(date +%s) - start)) s"
    else
        echo "report: $b FAILED; the end of $OUT/$b.log:" >&2
        tail -n 15 "$OUT/$b.log" >&2
        failed+=("$b")
    fi
done
python3 bench/report.py "$BENCH_RESULTS" "$OUT" || exit 1
if [ ${#failed[@]} -gt 0 ]; then
    echo "report: failed: ${failed[*]}" >&2
    exit 1
fi
