"""Handing memory the process has freed back to the operating system.

glibc's ``malloc`` serves mid-sized blocks (up to its *dynamic* mmap threshold, which rises
to 32 MiB on 64-bit once a large block was freed) from its heap, and a freed block in the
middle of the heap stays resident. After the backward passes of :meth:`KFAC.update
<tnconv.kfac.KFAC.update>` the activations are free but still resident, and the large
factors formed next come from fresh ``mmap`` s: the process's resident peak would be
activations *plus* factors although they are never live together.
:func:`release_freed_memory` asks glibc to return the free pages (``malloc_trim(0)``), so
the two do not add up. Elsewhere (no glibc) it does nothing.

Only allocations above glibc's mmap threshold (at most 32 MiB on 64-bit) come from fresh
pages; smaller ones reuse the freed heap. So a release pays off only when large factors
follow (:data:`RELEASE_MIN_BYTES` of them); otherwise it would cost time for nothing: the
next forward pass faults the returned pages back in (on ResNet-18 at batch 64, ~0.1–0.2 s
of system time per update).

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

#: release freed memory only when at least this many bytes of factors are formed next
#: (glibc's largest dynamic mmap threshold: below it, allocations reuse the freed heap)
RELEASE_MIN_BYTES = 32 * 2**20


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
