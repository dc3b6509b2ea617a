"""Handing memory the process has freed back to the operating system.

glibc's ``malloc`` serves mid-sized blocks (up to its *dynamic* mmap threshold, which rises
to 32 MiB on 64-bit once a large block was freed) from its heap, and a freed block in the
middle of the heap stays resident. After the backward passes of :meth:`KFAC.update
<tnconv.kfac.KFAC.update>` the activations are free but still resident, and the large
factors formed next come from fresh ``mmap`` s: the process's resident peak would be
activations *plus* factors although they are never live together.
:func:`release_freed_memory` asks glibc to return the free pages (``malloc_trim(0)``), so
the two do not add up. Elsewhere (no glibc) it does nothing.

Example:
    >>> from tnconv.kfac.memory import release_freed_memory
    >>> isinstance(release_freed_memory(), bool)
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():  # type: ignore[no-untyped-def]
    """glibc's ``malloc_trim``, or ``None`` where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return the allocator's free pages to the OS; ``True`` when any were returned."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
