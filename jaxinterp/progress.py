"""The one progress convention: library functions take ``progress: bool`` and draw a tqdm bar with `bar`.

Functions that stream work for a caller who already shows a bar take the caller's bar instead (``bar=``), so one
job shows one bar however many helpers it goes through.
"""

from __future__ import annotations

from tqdm.auto import tqdm

__all__ = ["bar"]


def bar(total: int | None, *, desc: str, unit: str, enabled: bool = True, initial: int = 0) -> tqdm:
    """A tqdm progress bar (a context manager; ``.update(n)``), silent when not ``enabled``."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, initial=initial, dynamic_ncols=True)
