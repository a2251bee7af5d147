"""Python side of bench/query.sh: window latency and full-band throughput with xarray,
zarr-python and TensorStore on the same cube, plus a whole-process timer.

    python3 bench/query_py.py window CUBE WINDOWS.txt [--band red] [--size 100] [--warmup 3] [--key window]
    python3 bench/query_py.py full   CUBE [--band red] [--reps 3]
    python3 bench/query_py.py proc   N -- CMD ARGS...      # median wall time of N runs of CMD

Each mode prints one JSON object on stdout and a summary on stderr. Window reads are
interleaved across tools (rotating order) so a change of machine load hits them alike. No tool
here caches decoded chunks (TensorStore's cache pool is 0 bytes, its default), so each window
read decodes its chunk again; the OS page cache is warm.
"""

import json
import statistics
import subprocess
import sys
import time

import numpy as np

TS_OK = True
try:
    import tensorstore as ts
except Exception as e:  # reported, and the TensorStore rows are left out
    TS_OK = False
    TS_ERR = repr(e)


def arg(flag, default):
    if flag in sys.argv:
        return type(default)(sys.argv[sys.argv.index(flag) + 1])
    return default


def summary(name, v, cpu=None):
    cmed = statistics.median(cpu) if cpu else float("nan")
    s = sorted(v)
    med = statistics.median(s)
    p90 = s[min(len(s) - 1, int(len(s) * 0.9))]
    print(f"{name:<22} median {med*1e3:8.3f} ms  min {s[0]*1e3:8.3f} ms  p90 {p90*1e3:8.3f} ms  cpu {cmed*1e3:8.3f} ms  (n={len(s)})",
          file=sys.stderr)
    return {"median_s": med, "min_s": s[0], "p90_s": p90, "cpu_median_s": cmed, "n": len(s)}


def open_all(cube, band):
    import xarray as xr
    import zarr

    tools = {}
    ds = xr.open_zarr(cube, consolidated=False)
    tools["xarray"] = ds[band]
    tools["zarr_python"] = zarr.open_array(f"{cube}/{band}", mode="r")
    if TS_OK:
        import os
        tools["tensorstore"] = ts.open({
            "driver": "zarr3",
            "kvstore": "file://" + os.path.abspath(f"{cube}/{band}"),
            "context": {"cache_pool": {"total_bytes_limit": 0}},
        }, read=True).result()
    return tools


def window_mode(cube, windows_file):
    band, size, warmup = arg("--band", "red"), arg("--size", 100), arg("--warmup", 3)
    key = arg("--key", "window")
    windows = [tuple(int(x) for x in l.split()) for l in open(windows_file)
               if l.strip() and not l.startswith("#")]
    tools = open_all(cube, band)

    def read(name, w):
        t, y, x = w
        obj = tools[name]
        c0 = time.process_time()
        t0 = time.perf_counter()
        if name == "xarray":
            a = obj.isel(time=slice(t, t + 1), y=slice(y, y + size), x=slice(x, x + size)).load()
            dt = time.perf_counter() - t0
            dc = time.process_time() - c0
            # default decoding: nodata 0 -> NaN, float32; undo for the checksum
            s = int(np.nan_to_num(a.values, nan=0).astype(np.uint64).sum())
        elif name == "zarr_python":
            a = obj[t:t + 1, y:y + size, x:x + size]
            dt = time.perf_counter() - t0
            dc = time.process_time() - c0
            s = int(a.astype(np.uint64).sum())
        else:
            a = obj[t:t + 1, y:y + size, x:x + size].read().result()
            dt = time.perf_counter() - t0
            dc = time.process_time() - c0
            s = int(a.astype(np.uint64).sum())
        assert a.shape == (1, size, size), (name, a.shape)
        return dt, dc, s

    names = list(tools)
    for w in windows[:warmup]:
        for n in names:
            read(n, w)
    times = {n: [] for n in names}
    cpus = {n: [] for n in names}
    sums = {n: [] for n in names}
    for i, w in enumerate(windows):
        for k in range(len(names)):
            n = names[(i + k) % len(names)]
            dt, dc, s = read(n, w)
            times[n].append(dt)
            cpus[n].append(dc)
            sums[n].append(s)
    print(f"== {size}x{size} window ({key}), {len(windows)} windows ==", file=sys.stderr)
    out = {key: {n: summary(n, times[n], cpus[n]) for n in names}, f"{key}_sums": sums}
    if not TS_OK:
        out["tensorstore_error"] = TS_ERR
    print(json.dumps(out))


def full_mode(cube):
    band, reps = arg("--band", "red"), arg("--reps", 3)
    tools = open_all(cube, band)

    def read(name):
        obj = tools[name]
        c0 = time.process_time()
        t0 = time.perf_counter()
        if name == "xarray":
            a = obj.load().values  # a copy per call: .load() on the DataArray variable
        elif name == "zarr_python":
            a = obj[:]
        else:
            a = obj.read().result()
        dt = time.perf_counter() - t0
        return dt, time.process_time() - c0, a

    names = list(tools)
    times = {n: [] for n in names}
    cpus = {n: [] for n in names}
    nbytes = None
    sums = {}
    for rep in range(reps + 1):  # rep 0 warms up
        for n in names:
            if n == "xarray":
                # .load() on a DataArray from open_zarr loads into that object in place:
                # take a fresh lazy one each time so every rep reads again.
                import xarray as xr
                tools[n] = xr.open_zarr(cube, consolidated=False)[band]
            dt, dc, a = read(n)
            if rep == 0:
                sums[n] = int(np.nan_to_num(a, nan=0).astype(np.uint64).sum()) if a.dtype.kind == "f" \
                    else int(a.astype(np.uint64).sum())
                if n != "xarray":
                    nbytes = a.nbytes
            else:
                times[n].append(dt)
                cpus[n].append(dc)
            del a
    nbytes = nbytes or int(np.prod(tools["zarr_python"].shape)) * 2
    print(f"== full band {band} ({nbytes/1e6:.1f} MB decoded), {reps} reps ==", file=sys.stderr)
    out = {"full": {}, "full_sums": sums, "full_band_bytes": nbytes}
    for n in names:
        j = summary(n, times[n], cpus[n])
        j["mb_per_s"] = nbytes / 1e6 / j["median_s"]
        print(f"{'':<22} {j['mb_per_s']:8.0f} MB/s", file=sys.stderr)
        out["full"][n] = j
    if not TS_OK:
        out["tensorstore_error"] = TS_ERR
    print(json.dumps(out))


def proc_mode(n, cmd):
    import resource
    times, cpus = [], []
    child_cpu = lambda: (lambda u: u.ru_utime + u.ru_stime)(resource.getrusage(resource.RUSAGE_CHILDREN))
    for i in range(n + 1):  # run 0 warms the page cache and the dynamic loader
        c0 = child_cpu()
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        dc = child_cpu() - c0
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed: {r.stderr.decode()[-500:]}")
        if i > 0:
            times.append(dt)
            cpus.append(dc)
    print(json.dumps(summary(" ".join(cmd)[-60:], times, cpus)))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "window":
        window_mode(sys.argv[2], sys.argv[3])
    elif mode == "full":
        full_mode(sys.argv[2])
    elif mode == "proc":
        proc_mode(int(sys.argv[2]), sys.argv[sys.argv.index("--") + 1:])
    else:
        sys.exit(__doc__)
