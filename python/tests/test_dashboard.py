"""The dashboard from the notebook: its link in the reprs, /status.json served from that link
while a computation (and an ingest) runs, progress rising to the end."""

import json
import threading
import time
import urllib.request

import pytest

import chunkcube as cc
from conftest import MANIFEST

# One-pixel chunks on one thread: a computation that lasts long enough to be polled.
SLOW = {"time": 1, "y": 1, "x": 1}


def fetch(link):
    with urllib.request.urlopen(link + "status.json", timeout=10) as r:
        assert r.status == 200
        return json.loads(r.read())


class Poller:
    """Polls /status.json from the dashboard's link on a thread while the work runs."""

    def __init__(self, link):
        self.link, self.seen, self.stop = link, [], threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            self.seen.append(fetch(self.link))
            time.sleep(0.02)

    def done(self):
        self.stop.set()
        self.t.join()
        return self.seen


def test_the_link_shows_in_the_reprs_and_the_page_follows_a_computation(cube_path, capfd):
    d = cc.dashboard("127.0.0.1:0")
    try:
        assert d.link.startswith("http://127.0.0.1:") and d.link.endswith("/")
        assert d.link in capfd.readouterr().err, "the link is printed when it starts"
        cube = cc.open(cube_path, threads=1, memory_limit="256MiB", dashboard=d)
        assert cube.dashboard is d and cube.dashboard_link == d.link
        assert d.link in repr(cube) and f'href="{d.link}"' in cube._repr_html_()
        assert d.link in repr(d) and f'href="{d.link}"' in d._repr_html_()
        with urllib.request.urlopen(d.link, timeout=10) as r:
            assert b"<html" in r.read().lower()

        ds = cube.load(measurements=["red", "nir"], chunks=SLOW)
        ndvi = (ds.nir - ds.red) / (ds.nir + ds.red)
        p = Poller(d.link)
        ndvi.compute()
        seen = p.done()
        last = fetch(d.link)
        total = ndvi.summary()["chunks"]
        mid = [s for s in seen if 0 < s["tasks_done"] < s["tasks_total"]]
        assert len(mid) >= 2, f"never seen mid-run in {len(seen)} polls"
        done = [s["tasks_done"] for s in mid]
        assert done == sorted(done) and done[-1] > done[0], "progress rises"
        for s in seen:
            assert s["state"] in ("idle", "running"), s["state"]
            assert s["memory_in_use"] <= s["memory_limit"] == 256 << 20
        assert all(s["state"] == "running" for s in mid), "running while tasks are done"
        # Between computations the notebook's page says idle (it is not done: more may come).
        assert last["state"] == "idle", last["state"]
        names = {l["name"] for l in last["layers"]}
        for want in ["load red", "load nir", "sub", "add", "truediv"]:
            assert any(n.startswith(want) for n in names), (want, names)
        # The run is complete at the end, every task of it in the stream.
        run = last["runs"][-1]
        assert run["done"] == run["total"] == total, run
        assert all(l["done"] == l["total"] for l in last["layers"]), last["layers"]
        assert last["bytes_read"] > 0
        assert d.status()["tasks_done"] == last["tasks_done"]

        # An ingest with the same dashboard adds its layers, one per band.
        out = cube_path + "-dash"
        cc.ingest(manifest=MANIFEST, out=out, chunks={"time": 1, "y": 64, "x": 64}, dashboard=d)
        st = fetch(d.link)
        writes = {l["name"]: l for l in st["layers"] if l["name"].startswith("write ")}
        assert set(writes) == {f"write {b}" for b in cube.bands}, st["layers"]
        assert all(l["done"] == l["total"] > 0 for l in writes.values())
    finally:
        d.close()
    assert not d.running and "closed" in repr(d)
    with pytest.raises(OSError):
        fetch(d.link)


def test_dashboard_true_reuses_the_process_dashboard_and_bad_addresses_are_value_errors(cube_path):
    a = cc.open(cube_path, dashboard=True)
    b = cc.open(cube_path, dashboard=True)
    try:
        assert a.dashboard is b.dashboard is cc.dashboard()
        assert a.dashboard_link.startswith("http://127.0.0.1:")
        assert cc.open(cube_path).dashboard_link is None
    finally:
        a.dashboard.close()
    with pytest.raises(ValueError, match="invalid dashboard address 'nonsense'"):
        cc.dashboard("nonsense")
    with pytest.raises(ValueError, match="invalid dashboard"):
        cc.open(cube_path, dashboard=1.5)
