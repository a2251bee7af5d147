"""Ctrl-C during a computation cancels it cleanly; the GIL is free meanwhile; progress shows."""

import _thread
import signal
import threading
import time

import numpy as np
import pytest

import chunkcube as cc

# One-pixel chunks on one thread: ~10^5 tasks, well over the 100 ms between Ctrl-C polls.
SLOW = {"time": 1, "y": 1, "x": 1}


@pytest.fixture(autouse=True)
def python_handles_ctrl_c():
    """Python's own Ctrl-C handler, also when the suite runs in a background job (`cmd &` in a
    script starts with SIGINT ignored, and Python then neither raises KeyboardInterrupt nor
    lets `interrupt_main` reach the main thread): these tests are about what chunkcube does
    once Python has an interrupt to raise."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def slow_ndvi(cube):
    ds = cube.load(measurements=["red", "nir"], chunks=SLOW)
    return (ds.nir - ds.red) / (ds.nir + ds.red)


def interrupt_once_running(cube, after_tasks=200):
    """Send the main thread a SIGINT-like interrupt once the computation has started."""

    def run():
        deadline = time.monotonic() + 30
        while cube.stats()["tasks"] < after_tasks and time.monotonic() < deadline:
            time.sleep(0.002)
        _thread.interrupt_main()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_ctrl_c_cancels_compute_and_the_session_goes_on(cube_path):
    cube = cc.open(cube_path, threads=1)
    ndvi = slow_ndvi(cube)
    total = ndvi.summary()["chunks"]
    t = interrupt_once_running(cube)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ndvi.compute()
    t.join()
    done = cube.stats()["tasks"]
    assert 200 <= done < total, f"{done} of {total} tasks ran: not stopped early"
    assert time.monotonic() - start < 30
    # the next computation on the same cube runs normally
    small = ndvi.isel(y=slice(0, 10), x=slice(0, 10)).compute()
    ref = cc.open(cube_path).load(measurements=["red", "nir"], chunks={}).red.isel(y=slice(0, 10), x=slice(0, 10))
    assert small.shape == ref.shape


def test_ctrl_c_during_to_zarr_commits_nothing(cube_path, tmp_path):
    cube = cc.open(cube_path, threads=1)
    out = str(tmp_path / "ndvi")
    ndvi = slow_ndvi(cube).rename("ndvi")
    interrupt_once_running(cube)
    with pytest.raises(KeyboardInterrupt):
        ndvi.to_zarr(out)
    with pytest.raises(FileNotFoundError, match="is not a chunkcube cube"):
        cc.open(out)
    ndvi.chunk({"time": 1, "y": 100, "x": 100}).to_zarr(out, overwrite=True)
    back = cc.open(out).load(chunks={}).ndvi.compute()
    np.testing.assert_array_equal(back.values, ndvi.chunk({"time": 1}).compute().values)


def test_the_gil_is_released_while_computing(cube_path):
    cube = cc.open(cube_path, threads=1)
    ndvi = slow_ndvi(cube)
    ticks = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    start = time.monotonic()
    t.start()
    ndvi.compute()
    elapsed = time.monotonic() - start
    stop.set()
    t.join()
    # With the GIL held by the computation the thread would not tick at all.
    assert ticks[0] > 0.2 * elapsed * 1000, (ticks[0], elapsed)


def test_progress_bar_on_stderr(cube_path, capsys):
    cube = cc.open(cube_path, threads=1)
    ndvi = slow_ndvi(cube)
    cc.set_options(progress=True)
    ndvi.compute()
    err = capsys.readouterr().err
    n = ndvi.summary()["chunks"]
    assert f"/{n} tasks" in err and "\r" in err, err[-300:]
    assert err.rstrip().endswith(")") and f"{n}/{n} tasks" in err
    cc.set_options(progress=False)
    ndvi.isel(y=slice(0, 4)).compute()
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="invalid progress"):
        cc.set_options(progress="sometimes")


# Ingest: 4x4-pixel chunks on one thread, tens of thousands of chunk files; interrupted
# after the first few hundred.
INGEST = f"""
import signal, sys, chunkcube as cc
signal.signal(signal.SIGINT, signal.default_int_handler)  # as python_handles_ctrl_c
cc.ingest(manifest=sys.argv[1], out=sys.argv[2], chunks={{"time": 1, "y": 4, "x": 4}}, threads=1)
print("finished")
"""


def chunk_files(out):
    import os

    return sum(len(f) for _, _, f in os.walk(out))


def test_ctrl_c_cancels_an_ingest_and_a_rerun_resumes_it(tmp_path, xr_cube):
    """A real SIGINT to a process running cc.ingest: KeyboardInterrupt, nothing that looks
    like a cube, and the same call again resumes from the chunks written, equal to the
    reference cube."""
    import os
    import signal
    import subprocess
    import sys

    import numpy as np
    import xarray as xr

    from conftest import MANIFEST

    out = tmp_path / "cube"
    p = subprocess.Popen([sys.executable, "-c", INGEST, str(MANIFEST), str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while chunk_files(out) < 300:
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "no chunks written"
        time.sleep(0.05)
    start = time.monotonic()
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert time.monotonic() - start < 10, "the ingest did not stop promptly"
    assert p.returncode != 0 and "KeyboardInterrupt" in stderr, (p.returncode, stderr[-500:])
    assert "finished" not in stdout
    assert "panicked" not in stderr
    # Not committed: nothing opens it as a cube, not even another tool.
    with pytest.raises(FileNotFoundError, match="is not a chunkcube cube"):
        cc.open(out)
    assert not (out / "zarr.json").exists()
    written = chunk_files(out)
    report = cc.ingest(manifest=MANIFEST, out=out, chunks={"time": 1, "y": 4, "x": 4})
    assert report["chunks_skipped"] >= 300, report
    assert report["chunks_written"] > 0, "the first run was stopped before the end"
    assert written < chunk_files(out)
    assert not [n for n in os.listdir(out) if n.startswith("chunkcube-")], "markers left"
    back = xr.open_zarr(out, consolidated=False).compute()
    for band in ("red", "nir"):
        np.testing.assert_array_equal(back[band].values, xr_cube[band].values)


def test_ctrl_c_in_process_cancels_an_ingest_and_the_session_goes_on(tmp_path, cube_path):
    from conftest import MANIFEST

    out = tmp_path / "cube"

    def run():
        deadline = time.monotonic() + 30
        while chunk_files(out) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        _thread.interrupt_main()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        cc.ingest(manifest=MANIFEST, out=out, chunks={"time": 1, "y": 4, "x": 4}, threads=1)
    t.join()
    with pytest.raises(FileNotFoundError, match="is not a chunkcube cube"):
        cc.open(out)
    # The process goes on: the next call works.
    assert cc.open(cube_path).bands
