"""bench/report.sh's table: the result lines of every benchmark (bench/lib.sh's format) as one
row per path, (path, chunkcube, bound, best peer, ratios), written as JSON and Markdown, and a
bar chart of the ratios as PNG.

Ratios are of costs (time, or 1 / throughput), so both read the same way whatever the unit:
  x bound  = chunkcube's cost / the bound's cost   (1 = at the machine's limit; lower is better)
  vs peer  = the best peer's cost / chunkcube's    (above 1 = chunkcube is faster)

    python3 bench/report.py RESULTS.jsonl OUT_DIR
"""
import json
import os
import sys


def cost(r):
    return r["value"] if r["better"] == "lower" else 1.0 / r["value"]


def rows_of(results):
    paths = {}
    for r in results:
        paths.setdefault((r["bench"], r["path"]), []).append(r)
    rows = []
    for (bench, path), rs in paths.items():
        by = lambda role: [r for r in rs if r["role"] == role]
        best = lambda xs: min(xs, key=cost) if xs else None
        cc, bound, peer = best(by("chunkcube")), best(by("bound")), best(by("peer"))
        row = {"bench": bench, "path": path, "unit": rs[0]["unit"], "better": rs[0]["better"],
               "chunkcube": cc and cc["value"], "chunkcube_peak_rss_mib": cc and cc.get("peak_rss_mib"),
               "bound": bound and bound["value"], "bound_tool": bound and bound["tool"],
               "best_peer": peer and peer["value"], "best_peer_tool": peer and peer["tool"],
               "best_peer_peak_rss_mib": peer and peer.get("peak_rss_mib"),
               "x_bound": cc and bound and round(cost(cc) / cost(bound), 3),
               "vs_peer": cc and peer and round(cost(peer) / cost(cc), 3),
               "all": [{k: r[k] for k in ("role", "tool", "value", "peak_rss_mib")} for r in rs]}
        rows.append(row)
    return rows


def fmt(v, unit=""):
    if v is None:
        return "-"
    s = f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return f"{s} {unit}".strip()


def markdown(rows, quick):
    out = ["# chunkcube benchmarks" + (" (QUICK=1: small data, few repetitions)" if quick else ""), "",
           "x bound: chunkcube's cost / the machine's bound (1 = at the limit). vs peer: the best peer's "
           "cost / chunkcube's (> 1: chunkcube faster). Costs are times, or 1 / throughput.", "",
           "| bench | path | chunkcube | bound | best peer | x bound | vs peer | peak RSS MiB (cc / peer) |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        u = r["unit"]
        bound = f"{fmt(r['bound'], u)} ({r['bound_tool']})" if r["bound"] is not None else "-"
        peer = f"{fmt(r['best_peer'], u)} ({r['best_peer_tool']})" if r["best_peer"] is not None else "-"
        rss = f"{fmt(r['chunkcube_peak_rss_mib'])} / {fmt(r['best_peer_peak_rss_mib'])}"
        out.append(f"| {r['bench']} | {r['path']} | {fmt(r['chunkcube'], u)} | {bound} | {peer} | "
                   f"{fmt(r['x_bound'])} | {fmt(r['vs_peer'])} | {rss} |")
    return "\n".join(out) + "\n"


def chart(rows, path, quick):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = [r for r in rows if r["x_bound"] is not None or r["vs_peer"] is not None]
    if not shown:
        return False
    h = 0.38
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(shown) + 1.8))
    ys = list(range(len(shown)))
    xb = [r["x_bound"] or 0 for r in shown]
    vp = [r["vs_peer"] or 0 for r in shown]
    ax.barh([y - h / 2 for y in ys], xb, h, label="x bound (chunkcube / bound; 1 = at the limit, lower is better)",
            color="#4c72b0")
    ax.barh([y + h / 2 for y in ys], vp, h, label="vs best peer (peer / chunkcube; > 1 = chunkcube faster)",
            color="#dd8452")
    for y, a, b in zip(ys, xb, vp):
        if a:
            ax.text(a, y - h / 2, f" {a:.2f}", va="center", fontsize=7)
        if b:
            ax.text(b, y + h / 2, f" {b:.2f}", va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['bench']}: {r['path']}" for r in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio of costs (log scale)")
    ax.set_title("chunkcube against its bounds and peers" + (" (QUICK=1)" if quick else ""))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    src, out = sys.argv[1], sys.argv[2]
    results = [json.loads(l) for l in open(src) if l.strip()]
    if not results:
        sys.exit(f"report: no result lines in {src}")
    quick = any(r.get("quick") for r in results)
    rows = rows_of(results)
    doc = {"quick": quick, "loadavg_after": os.getloadavg()[0], "cores": os.cpu_count(), "rows": rows}
    json.dump(doc, open(f"{out}/report.json", "w"), indent=2)
    md = markdown(rows, quick)
    open(f"{out}/report.md", "w").write(md)
    print(md)
    png = f"{out}/ratios.png"
    print(f"wrote {out}/report.json, {out}/report.md" + (f", {png}" if chart(rows, png, quick) else ""))


if __name__ == "__main__":
    main()
