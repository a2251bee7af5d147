"""Progress of cc.ingest: the same text bar as compute(), counting the chunks it writes."""

from __future__ import annotations

import re

import chunkcube as cc
from conftest import MANIFEST


def _cube_chunks(path) -> int:
    """The band arrays' chunk count, read by zarr-python (independent of chunkcube)."""
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return sum(a.nchunks for _, a in g.arrays() if a.ndim == 3)


def test_ingest_bar_reaches_the_cubes_chunk_count(tmp_path, capsys):
    cc.set_options(progress=True)
    cc.ingest(manifest=MANIFEST, out=tmp_path / "cube", chunks={"time": 1, "y": 64, "x": 64})
    err = capsys.readouterr().err
    bars = re.findall(r"ingesting \[.*?\] (\d+)/(\d+) chunks \([\d.]+ s, [\d.]+ MB/s\)", err)
    assert bars, err
    n = _cube_chunks(tmp_path / "cube")
    assert n > 1
    assert bars[-1] == (str(n), str(n))
    assert err.endswith("\n")  # the bar is finished, the next output starts on its own line

    # quiet=True: no bar, even when progress is forced on.
    cc.ingest(manifest=MANIFEST, out=tmp_path / "q", chunks={"time": 1, "y": 64, "x": 64}, quiet=True)
    assert "ingesting" not in capsys.readouterr().err


def test_ingest_shows_nothing_when_progress_is_off(tmp_path, capsys):
    cc.set_options(progress=False)
    cc.ingest(manifest=MANIFEST, out=tmp_path / "cube", chunks={"time": 1, "y": 64, "x": 64})
    assert capsys.readouterr().err == ""
