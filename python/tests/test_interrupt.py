"""Ctrl-C during a computation cancels it cleanly; the GIL is free meanwhile; progress shows."""

import _thread
import threading
import time

import numpy as np
import pytest

import chunkcube as cc

# One-pixel chunks on one thread: ~10^5 tasks, well over the 100 ms between Ctrl-C polls.
SLOW = {"time": 1, "y": 1, "x": 1}


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
