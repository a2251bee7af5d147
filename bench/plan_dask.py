"""Dask's side of the planning benchmark: build NDVI over the same cube split into
16x16-pixel chunks (1.5 million output chunks) and materialise its task graph.
usage: plan_dask.py CUBE [CHUNK_PX]"""
import resource
import sys
import time

import xarray as xr

cube = sys.argv[1]
px = int(sys.argv[2]) if len(sys.argv) > 2 else 16
t0 = time.time()
ds = xr.open_zarr(cube, consolidated=False, chunks={"time": 1, "y": px, "x": px})
ndvi = (ds.nir.astype("float32") - ds.red) / (ds.nir.astype("float32") + ds.red)
t_build = time.time() - t0
t1 = time.time()
graph = dict(ndvi.data.__dask_graph__())
t_graph = time.time() - t1
print(f'{{"output_chunks": {ndvi.data.npartitions}, "graph_tasks": {len(graph)}, "build_s": {t_build:.1f}, '
      f'"materialise_graph_s": {t_graph:.1f}, "peak_rss_mib": {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}}}')
