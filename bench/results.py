"""Result lines of the bench scripts' Python steps, in bench/lib.sh's format (bench_result):
one JSON object per line appended to $BENCH_RESULTS, collected by bench/report.sh."""
import json
import os


def emit(bench, path, role, tool, value, unit, better="lower", peak_rss_mib=None):
    """Append one result: role is chunkcube, bound or peer; better is lower or higher."""
    if value is None:
        return
    out = os.environ.get("BENCH_RESULTS", "bench-data/bench-results.jsonl")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "a") as f:
        f.write(json.dumps({"bench": bench, "path": path, "role": role, "tool": tool, "value": float(value),
                            "unit": unit, "better": better, "peak_rss_mib": peak_rss_mib,
                            "quick": os.environ.get("QUICK", "0") == "1"}) + "\n")
