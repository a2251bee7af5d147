"""examples/parallel_processing.ipynb executes without error (nbclient), and is kept
without outputs in the repository."""

import json
import os
import pathlib

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "parallel_processing.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"][:80]


def test_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("CHUNKCUBE_REPO", str(ROOT))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) + str(o.get("data", {}).get("text/html", ""))
        for o in outputs
    )
    # the chunk table, the subset check, the progress bar and the agreement with Dask
    assert "Chunk" in text and "Tasks" in text
    assert "The loaded arrays match: True" in text
    assert "tasks (" in text
    assert "xarray + Dask through chunkcube agree" in text
    assert any("image/svg+xml" in o.get("data", {}) for o in outputs)
