"""The dashboard in the notebook: the page of ``chunkcube calc --dashboard``, served from this
process for the cubes opened (and ingests run) with it, its link shown as Dask's Client shows
its own."""

from __future__ import annotations

import html
import json
import sys

from ._chunkcube import Dashboard as _NativeDashboard

# The one ``dashboard()`` returns (started by its first call).
_default: Dashboard | None = None


class Dashboard:
    """A live page of this process's computations: progress per layer of the task graph,
    bytes read and written per second, memory against the limit (cache, spill), the task
    stream and the plans' numbers; ``/status.json`` serves the same as JSON.

    Start one with :func:`dashboard` (or pass ``dashboard=True`` to :func:`open` or
    :func:`ingest`); ``repr`` and the notebook show its link. It listens on loopback only
    unless given another address.

    Example::

        import chunkcube as cc
        cube = cc.open("cube", dashboard=True)   # prints the link; cube.dashboard_link
        ds = cube.load(measurements=["red", "nir"], chunks={"time": 1, "y": 1024, "x": 1024})
        ((ds.nir - ds.red) / (ds.nir + ds.red)).compute()   # watch it at the link
    """

    def __init__(self, address: str | int | None = None):
        self._d = _NativeDashboard(None if address is None else str(address))
        print(f"chunkcube dashboard: {self.link}", file=sys.stderr)

    @property
    def link(self) -> str:
        """The page's URL (``http://127.0.0.1:8787/``); ``link + "status.json"`` is the JSON."""
        return self._d.url

    @property
    def running(self) -> bool:
        """Whether the page is still served (``close()`` stops it)."""
        return self._d.running

    def status(self) -> dict:
        """What ``/status.json`` serves now: state, tasks_done, tasks_total, layers, runs,
        bytes_read, bytes_written, memory_in_use, memory_limit, cache_bytes, spilled_bytes,
        peak_bytes, elapsed_s, workers, explain."""
        return json.loads(self._d.status_json())

    def close(self) -> None:
        """Stop serving the page (computations go on without it)."""
        global _default
        self._d.close()
        if _default is self:
            _default = None

    def __repr__(self) -> str:
        state = "" if self.running else " (closed)"
        return f"<chunkcube.Dashboard {self.link}{state}>"

    def _repr_html_(self) -> str:
        u = html.escape(self.link, quote=True)
        return f'<div><b>chunkcube dashboard</b>: <a href="{u}" target="_blank">{u}</a></div>'


def dashboard(address: str | int | None = None) -> Dashboard:
    """The dashboard of this process, started by the first call: at ``address``
    (``"127.0.0.1:8787"``, ``"HOST:PORT"``, a port; ``0``: any free port) or, without one, at
    127.0.0.1:8787 or a free loopback port when that one is taken. Later calls without an
    address return the same one; with an address, a new one at it. Cubes opened with
    ``dashboard=True`` and ingests with ``dashboard=True`` show on it.

    >>> d = cc.dashboard()        # doctest: +SKIP
    >>> d.link                    # doctest: +SKIP
    'http://127.0.0.1:8787/'
    """
    global _default
    if address is None and _default is not None and _default.running:
        return _default
    _default = Dashboard(address)
    return _default


def resolve(d) -> Dashboard | None:
    """The ``dashboard=`` keyword: ``None``/``False`` none, ``True`` the process's, an address
    one there, a :class:`Dashboard` itself."""
    if d is None or d is False:
        return None
    if d is True:
        return dashboard()
    if isinstance(d, Dashboard):
        return d
    if isinstance(d, (str, int)):
        return dashboard(d)
    raise ValueError(f"invalid dashboard {d!r}: give True, an address such as '127.0.0.1:8787', or a Dashboard")
