#!/usr/bin/env bash
# Build the Python package (python/, PyO3 + maturin) into a virtualenv under target/ and run
# its tests (python/tests: the API against xarray and GDAL reads, the xarray backend, Dask,
# the example notebook). scripts/test.sh calls it; safe to run alone and twice:
#   bash scripts/test-python.sh [PYTEST ARGS...]
# The venv sees the system's packages (scripts/setup.sh installs xarray, dask, maturin,
# pytest, nbclient…); what is still missing is installed into the venv only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$root/target/pyenv
if [ ! -x "$venv/bin/python" ]; then
    echo "test-python.sh: creating $venv"
    python3 -m venv --system-site-packages "$venv"
fi
need="maturin pytest nbclient nbformat ipykernel xarray zarr rioxarray rasterio dask distributed obstore"
if ! "$venv/bin/python" -c "import ${need// /, }" 2>/dev/null; then
    echo "test-python.sh: pip install -r python/requirements-test.txt (into $venv)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r python/requirements-test.txt
fi
echo "test-python.sh: maturin develop --release (python/)"
(cd python && VIRTUAL_ENV=$venv PATH=$venv/bin:$PATH maturin develop --release --quiet)
echo "test-python.sh: pytest python/tests"
cd python
PATH=$venv/bin:$PATH exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
