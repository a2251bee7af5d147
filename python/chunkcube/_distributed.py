"""``to_zarr(client=…, shards=N)``: the write as N plain Dask tasks, then one commit.

Each task rebuilds the computation in its worker from the arrays' recipes (the cube's URL,
the query, the chain of operations: small and picklable), writes its shard of the output
chunks with the library's shard writer (deterministic, balanced by bytes, resumable), and
returns the shard's report; the client then commits, writing the group metadata last. The
output opens only after the commit, so a failed or interrupted job never looks complete.
"""

from __future__ import annotations

import json

_CUBES: dict = {}


def _open(recipe):
    """The cube of a recipe, opened once per worker process."""
    from ._chunkcube import Cube as _NativeCube

    url, kw = recipe
    key = (url, tuple(sorted(kw.items())))
    c = _CUBES.get(key)
    if c is None:
        c = _CUBES[key] = _NativeCube.open(url, **kw)
    return c


def replay(recipe, memo=None):
    """The native array a recipe describes (shared sub-recipes built once)."""
    memo = {} if memo is None else memo
    k = id(recipe)
    if k in memo:
        return memo[k][1]
    if recipe[0] == "load":
        _, cube, kw, name = recipe
        out = dict(_open(cube).load(**kw))[name]
    elif recipe[0] == "call":
        _, base, method, args = recipe
        native = [replay(v, memo) if tag == "arr" else v for tag, v in args]
        out = getattr(replay(base, memo), method)(*native)
    else:
        raise ValueError(f"unknown recipe {recipe[0]!r}")
    memo[k] = (recipe, out)  # keep the recipe alive so its id is not reused
    return out


def write_shard(recipes, store, index, count):
    """One Dask task: shard ``index`` of ``count`` of the output (returns its report)."""
    from ._chunkcube import write_cube_shard

    memo = {}
    arrays = [replay(r, memo) for r in recipes]
    return json.loads(write_cube_shard(arrays, store, index, count))


def to_zarr_distributed(das, store, *, overwrite, client, shards):
    """Write ``das`` (chunkcube DataArrays of one grid) at ``store`` as ``shards`` Dask tasks
    on ``client``, then commit. Returns the commit report."""
    try:
        from ._chunkcube import commit
    except ImportError:
        raise NotImplementedError("to_zarr(client=...): this build has no shard writer; write without client=") from None

    if client is None:
        raise ValueError("to_zarr: shards= needs client= (a dask.distributed.Client)")
    if shards is None:
        shards = max(1, sum(client.nthreads().values()))
    if not isinstance(shards, int) or shards < 1:
        raise ValueError(f"invalid shards {shards!r}: give a positive number of Dask tasks")
    missing = [d.name for d in das if d._r is None]
    if missing:
        raise ValueError(
            f"to_zarr(client=...): {', '.join(missing)} cannot be rebuilt in a Dask worker "
            "(persisted arrays stay in this process); write without client= instead"
        )
    if overwrite:
        raise ValueError(
            "to_zarr(client=...): overwrite=True cannot be combined with shards (each worker "
            "would erase the others' chunks); remove the output once, then write"
        )
    for d in das:
        err = d._a.error()
        if err is not None:
            raise ValueError(err)
    recipes = [d._r for d in das]
    futures = client.map(write_shard, [recipes] * shards, [store] * shards, range(shards), [shards] * shards, pure=False)
    reports = client.gather(futures)
    report = json.loads(commit(store))
    report["shard_reports"] = reports
    return report
