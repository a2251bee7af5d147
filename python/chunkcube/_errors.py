"""Exceptions raised by chunkcube: the library's one-line messages, as

- ``ValueError`` for bad input (unknown bands, empty selections, bad chunk specs, operands
  on different grids…),
- ``MemoryLimitError`` (a ``MemoryError``) for a memory limit below what one task needs; the
  message states the minimum that works,
- ``OSError`` for storage (``FileNotFoundError`` for a missing cube, ``FileExistsError`` for
  an output that exists),
- ``KeyboardInterrupt`` when a computation was interrupted (Ctrl-C).
"""

from ._chunkcube import MemoryLimitError

__all__ = ["MemoryLimitError"]
