"""Progress of a computation: a text bar that updates in place, in a notebook (a display
handle) or on a terminal (carriage return on stderr); nothing elsewhere."""

from __future__ import annotations

import sys
import time

_options = {"progress": "auto"}


def set_options(progress: bool | str | None = None) -> None:
    """Set chunkcube's options.

    progress: ``True`` (always show a bar), ``False`` (never) or ``"auto"`` (the default: in a
    notebook, or when stderr is a terminal).

    >>> import chunkcube as cc
    >>> cc.set_options(progress=False)
    """
    if progress is not None:
        if progress not in (True, False, "auto"):
            raise ValueError(f"invalid progress {progress!r}: use True, False or 'auto'")
        _options["progress"] = progress


def _in_notebook() -> bool:
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    try:
        shell = ip.get_ipython()
    except Exception:
        return False
    return shell is not None and hasattr(shell, "kernel")


def _bar_text(what: str, done: int, total: int, elapsed: float, unit: str = "tasks", nbytes: int | None = None) -> str:
    total = max(total, 1)
    done = min(done, total)
    width = 30
    filled = int(width * done / total)
    bar = "=" * filled + (">" if filled < width else "") + " " * (width - filled - 1)
    rate = "" if nbytes is None else f", {nbytes / 1e6 / max(elapsed, 1e-3):.1f} MB/s"
    return f"{what} [{bar[:width]}] {done}/{total} {unit} ({elapsed:.1f} s{rate})"


class ProgressBar:
    """The callback that the native layer calls as ``bar(done, total, finished)``, or with
    the bytes written so far as a fourth argument (shown as MB/s; the ingest's)."""

    def __init__(self, what: str, out=None, unit: str = "tasks"):
        self.what = what
        self.unit = unit
        self.start = time.monotonic()
        self.handle = None
        self.out = out
        self.last = ""

    def __call__(self, done: int, total: int, finished: bool, nbytes: int | None = None) -> None:
        quick = time.monotonic() - self.start < 0.1
        if finished and not self.last and quick and _options["progress"] == "auto":
            return  # a computation too quick to watch: no bar
        text = _bar_text(self.what, done, total, time.monotonic() - self.start, self.unit, nbytes)
        if text == self.last:
            return
        self.last = text
        if self.out is not None:
            self.out.write("\r" + text + ("\n" if finished else ""))
            self.out.flush()
            return
        from IPython.display import display

        obj = {"text/plain": text}
        if self.handle is None:
            self.handle = display(obj, raw=True, display_id=True)
        else:
            self.handle.update(obj, raw=True)


def bar(what: str, unit: str = "tasks"):
    """A progress callback for the native layer, or ``None`` when progress is not shown."""
    mode = _options["progress"]
    if mode is False:
        return None
    if _in_notebook():
        return ProgressBar(what, unit=unit)
    if mode is True or sys.stderr.isatty():
        return ProgressBar(what, out=sys.stderr, unit=unit)
    return None
