"""The peak-memory budget of chunked execution: how many bytes one chunk's buffer may hold.

Lowerings that materialise a large intermediate in pieces (KFC's ``J`` in
:mod:`.im2col`, written chunk by chunk into one reused buffer) size their chunks
by :func:`get_chunk_budget`, read **when they run** (never when a plan or a bound runner is
made), so a budget set around a call applies to that call, cached runners included. The
default is :data:`CHUNK_BYTES`. A chunk holds whole samples, or blocks of output rows of one
sample when a sample alone is over the budget; one output row is the smallest chunk.

>>> import tnconv
>>> tnconv.get_chunk_budget() == CHUNK_BYTES
True
>>> with tnconv.chunk_budget(2**20):
...     tnconv.get_chunk_budget()
1048576
>>> tnconv.get_chunk_budget() == CHUNK_BYTES
True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The default budget, in bytes, of one chunk's buffer (32 MiB).
CHUNK_BYTES = 32 * 2**20

_BUDGET: ContextVar[int] = ContextVar("tnconv_chunk_budget", default=CHUNK_BYTES)


def check_budget(nbytes: object, name: str = "nbytes") -> int:
    """``nbytes`` if it is a positive ``int`` (not a ``bool``); else ``TypeError``/``ValueError``."""
    if not isinstance(nbytes, int) or isinstance(nbytes, bool):
        raise TypeError(f"{name} must be a positive int (bytes), got {type(nbytes).__name__} {nbytes!r}")
    if nbytes <= 0:
        raise ValueError(f"{name} must be a positive number of bytes, got {nbytes}")
    return nbytes


def get_chunk_budget() -> int:
    """The budget in bytes that chunked lowerings use now (:func:`chunk_budget` sets it)."""
    return _BUDGET.get()


@contextmanager
def chunk_budget(nbytes: int) -> Iterator[int]:
    """Run the block with at most ``nbytes`` bytes per chunk buffer (restored afterwards;
    per thread and per asyncio task, as a :class:`contextvars.ContextVar`).

    Args:
        nbytes: a positive ``int``; smaller budgets mean more, smaller chunks (lower peak
            memory, more passes of the per-chunk GEMM).

    Yields:
        ``nbytes``.
    """
    token = _BUDGET.set(check_budget(nbytes))
    try:
        yield nbytes
    finally:
        _BUDGET.reset(token)


def format_bytes(nbytes: int) -> str:
    """``"32 MiB"``, ``"1.5 KiB"`` or ``"200 B"``: for explanations.

    >>> format_bytes(32 * 2**20), format_bytes(1536), format_bytes(200)
    ('32 MiB', '1.5 KiB', '200 B')
    """
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            value = nbytes / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{nbytes} B"


__all__ = ["CHUNK_BYTES", "check_budget", "chunk_budget", "format_bytes", "get_chunk_budget"]
