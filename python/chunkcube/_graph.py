"""The task graph of a computation: DOT text, rendered by Graphviz's ``dot`` on demand."""

from __future__ import annotations

import os
import shutil
import subprocess


class Graph:
    """A task graph (``DataArray.visualize()``): ``.dot`` is the DOT text, ``.svg()`` renders it
    with Graphviz, and Jupyter shows it as SVG."""

    def __init__(self, dot: str):
        self.dot = dot

    def render(self, fmt: str = "svg") -> bytes:
        """The graph rendered by Graphviz's ``dot -T{fmt}``."""
        exe = shutil.which("dot")
        if exe is None:
            raise OSError("rendering the task graph needs Graphviz's `dot` (apt-get install graphviz), or write .dot")
        p = subprocess.run([exe, f"-T{fmt}"], input=self.dot.encode(), capture_output=True, check=False)
        if p.returncode != 0:
            raise OSError(f"dot -T{fmt} failed: {p.stderr.decode(errors='replace').strip()}")
        return p.stdout

    def svg(self) -> str:
        """The graph as SVG text."""
        return self.render("svg").decode()

    def _repr_svg_(self) -> str:
        return self.svg()

    def write(self, filename: str) -> None:
        """Write DOT (``.dot``/``.gv``) or a rendering chosen by the extension (``.svg``, ``.png``…)."""
        ext = os.path.splitext(filename)[1].lstrip(".").lower() or "dot"
        data = self.dot.encode() if ext in ("dot", "gv") else self.render(ext)
        with open(filename, "wb") as f:
            f.write(data)

    def __repr__(self) -> str:
        return f"<chunkcube.Graph: {self.dot.count('->')} edges; .dot for the text, .svg() to render>"
