"""``open`` / ``Cube`` / ``ingest``: the entry points."""

from __future__ import annotations

import json
import os

from . import _dashboard, _progress, _xr
from ._array import DataArray, Dataset
from ._chunkcube import Cube as _NativeCube
from ._chunkcube import ingest as _ingest


def _limit(memory_limit) -> str | None:
    if memory_limit is None:
        return None
    if isinstance(memory_limit, int):
        return f"{memory_limit}B"
    return str(memory_limit)


def _path(p):
    return None if p is None else os.fspath(p)


class Cube:
    """An open cube: metadata and coordinates only, until a computation reads chunks.

    Open with :func:`open`. ``cube.bands`` lists the measurements, ``cube.info()`` describes
    the cube as ``chunkcube info --json``, ``cube.load(...)`` selects as ``dc.load``.
    """

    def __init__(self, native: _NativeCube, recipe=None, dashboard=None):
        self._c = native
        # (url, open keywords): how a Dask worker opens the same cube.
        self._r = recipe
        # Kept alive while the cube is: its computations show there.
        self._dash = dashboard

    @property
    def dashboard(self):
        """The :class:`Dashboard` this cube's computations show on (``None`` without one)."""
        return self._dash

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's URL, as Dask's ``Client.dashboard_link`` (``None`` without one)."""
        return None if self._dash is None else self._dash.link

    @property
    def url(self) -> str:
        """Where the cube lives."""
        return self._c.url

    @property
    def bands(self) -> list[str]:
        """Measurement names."""
        return list(self._c.band_names)

    def info(self) -> dict:
        """What ``chunkcube info --json`` prints: shape, CRS, bounds, times, bands (dtype,
        nodata, chunks, stored bytes)."""
        return json.loads(self._c.info_json())

    def stats(self) -> dict:
        """The session's statistics: chunks_read, bytes_read, chunks_written, tasks,
        spilled_bytes, peak_tracked_bytes, memory_limit, elapsed_s."""
        return json.loads(self._c.stats_json())

    def clear_cache(self) -> None:
        """Forget cached decoded chunks (the next computation fetches again)."""
        self._c.clear_cache()

    def interrupt(self) -> None:
        """Stop the computations running on this cube now (as Ctrl-C does)."""
        self._c.interrupt()

    def load(
        self,
        measurements=None,
        *,
        lon=None,
        lat=None,
        x=None,
        y=None,
        time=None,
        isel=None,
        chunks=None,
        dask_chunks=None,
    ) -> Dataset:
        """Select, as ``dc.load(product, measurements, x, y, time, dask_chunks)``.

        measurements: band names (default: all). ``lon``/``lat``: ``(min, max)`` in EPSG:4326;
        ``x``/``y``: ``(min, max)`` in the cube's CRS; every pixel whose centre lies inside is
        selected. ``time``: ``("2019", "2020-06-30")`` inclusive, or one year/date.
        ``isel``: ``{"y": (100, 200)}`` cube indices. ``chunks``: ``{"time": 1, "y": 3000,
        "x": 3000}`` (``-1`` or left out: whole dimension), ``"auto"`` or a byte size; with
        chunks the result is lazy, without it it is loaded now. A selection that selects
        nothing is a ``ValueError`` saying why.

        >>> ds = cube.load(measurements=["red", "nir"], lon=(24, 25.5), lat=(-21.5, -20),
        ...                time=("2019", "2019"), chunks={"time": 1, "x": 3000, "y": 3000})  # doctest: +SKIP
        """
        if isinstance(measurements, str):
            measurements = [measurements]
        if chunks is None:
            chunks = dask_chunks
        if (lon is None) != (lat is None):
            raise ValueError("invalid selection: give both lon and lat")
        if (x is None) != (y is None):
            raise ValueError("invalid selection: give both x and y")
        bbox = None
        if x is not None:
            bbox = [min(x), min(y), max(x), max(y)]
        if isinstance(time, (str, int)):
            time = (time, time)
        if time is not None:
            time = (str(time[0]), str(time[1]))
        isel_l = None
        if isel is not None:
            isel_l = []
            for d, r in isel.items():
                if isinstance(r, slice):
                    r = (r.start or 0, r.stop)
                isel_l.append((d, int(r[0]), int(r[1])))
        spec = _xr.chunk_spec(chunks)
        lon = None if lon is None else (float(lon[0]), float(lon[1]))
        lat = None if lat is None else (float(lat[0]), float(lat[1]))
        pb = _progress.bar("loading") if spec is None else None
        kw = dict(
            measurements=list(measurements) if measurements is not None else None,
            lon=lon, lat=lat, bbox=bbox, isel=isel_l, time=time, chunks=spec,
        )
        arrays = self._c.load(**kw, progress=pb)
        rec = lambda n: None if self._r is None else ("load", self._r, kw, n)
        return Dataset({n: DataArray(a, rec(n)) for n, a in arrays})

    def __repr__(self) -> str:
        i = self.info()
        dash = "" if self._dash is None else f"; dashboard {self._dash.link}"
        return f"<chunkcube.Cube {self.url!r}: {', '.join(self.bands)}; shape {tuple(i['shape'])}, {i.get('crs') or 'custom CRS'}{dash}>"

    def _repr_html_(self) -> str:
        import html

        i = self.info()
        e = lambda v: html.escape(str(v), quote=True)
        rows = [
            ("URL", e(self.url)),
            ("Bands", e(", ".join(self.bands))),
            ("Shape", e(tuple(i["shape"]))),
            ("CRS", e(i.get("crs") or "custom CRS")),
        ]
        if self._dash is not None:
            u = e(self._dash.link)
            rows.append(("Dashboard", f'<a href="{u}" target="_blank">{u}</a>'))
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>" for k, v in rows)
        return f"<div><b>chunkcube.Cube</b><table>{body}</table></div>"


def open(url, *, threads: int | None = None, memory_limit=None, spill_dir=None, cache_dir=None, dashboard=None) -> Cube:
    """Open a cube, reading only its metadata and coordinates.

    url: a local path or ``s3://bucket/prefix`` (credentials, region and endpoint from the
    usual ``AWS_*`` environment variables; no secret ever appears in a message).
    threads: worker threads (default: one per core). memory_limit: what the computations
    may track, e.g. ``"512MiB"`` (default: a quarter of RAM, at most 8 GiB); a limit below
    what one task needs raises ``MemoryLimitError`` stating the minimum. spill_dir: where
    intermediates that do not fit go. cache_dir: an on-disk cache of fetched chunks for
    ``s3://`` cubes. dashboard: ``True`` shows this cube's computations on the process's
    dashboard (:func:`dashboard`; its link is printed, and shown by ``repr(cube)`` and
    ``cube.dashboard_link``), an address starts one there, a :class:`Dashboard` uses it.

    Raises ``FileNotFoundError`` when there is no cube at ``url``, ``ValueError`` for a bad
    URL, ``OSError`` for other storage problems.

    Example::

        import chunkcube as cc
        cube = cc.open("cube", memory_limit="2GiB")
        ds = cube.load(measurements=["red", "nir"], chunks={"time": 1, "y": 1024, "x": 1024})
        ndvi = (ds.nir - ds.red) / (ds.nir + ds.red)
        ndvi.mean("time").compute()
    """
    kw = dict(threads=threads, memory_limit=_limit(memory_limit), spill_dir=_path(spill_dir), cache_dir=_path(cache_dir))
    dash = _dashboard.resolve(dashboard)
    native = _NativeCube.open(os.fspath(url), **kw, dashboard=None if dash is None else dash._d)
    return Cube(native, (os.fspath(url), kw), dash)


def ingest(
    *,
    out,
    manifest=None,
    paths=None,
    chunks=None,
    shards=None,
    compression: str | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    product: str | None = None,
    allow_huge: bool = False,
    dashboard=None,
    quiet: bool = False,
) -> dict:
    """Ingest GeoTIFF tiles into a cube, as ``chunkcube ingest``.

    manifest: a ``path,band,time`` CSV; or paths: GeoTIFF files or folders named the DE
    Africa way (``..._<YYYY>--P1Y_final_<band>.tif``). out: a local path or ``s3://``.
    chunks: ``{"time": 1, "y": 1024, "x": 1024}`` (the default); shards: e.g.
    ``{"y": 4096, "x": 4096}``; compression: ``"zstd:3"``. Resumable: re-running an
    interrupted ingest keeps the chunks written. Returns the report (tiles, chunks_written,
    chunks_skipped, up_to_date, pixel_bytes, elapsed_s). dashboard: as for :func:`open`,
    the ingest shows there (a layer per band). Ctrl-C (``KeyboardInterrupt``) stops it
    between chunks: nothing is committed (``open`` refuses the output) and re-running the
    same call resumes from the chunks written. Progress shows as for ``compute()`` (chunks
    done/total and MB/s written; see :func:`set_options`); quiet=True: no bar.

    >>> cc.ingest(manifest="tiles.csv", out="cube", chunks={"time": 1, "y": 1024, "x": 1024})  # doctest: +SKIP
    """
    dash = _dashboard.resolve(dashboard)
    if paths is not None:
        paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    return json.loads(
        _ingest(
            os.fspath(out), manifest=_path(manifest), paths=paths,
            chunks=_xr.chunk_spec(chunks), shards=_xr.chunk_spec(shards), compression=compression,
            threads=threads, overwrite=overwrite, product=product, allow_huge=allow_huge,
            dashboard=None if dash is None else dash._d,
            progress=None if quiet else _progress.bar("ingesting", unit="chunks"),
        )
    )
