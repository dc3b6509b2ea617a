"""The one cache policy of tnconv: bounded, type-strict, clearable.

Symbolic work (validated specs, networks, simplified forms, plans) and the few tensors that
are pure functions of shapes (dense index patterns, pre-contracted constants) are cached
with :func:`cached`. Every cache

- is an LRU bounded by its number of entries and, when its values are tensors, by their
  bytes (the least recently used entries go first);
- is keyed *type-strictly*: ``stride=2``, ``stride=2.0`` and ``stride=True`` are three
  different keys (so a bad value is rejected even after a good one equal to it was cached),
  while lists, tuples and ``torch.Size`` of the same items are one key;
- is listed in :func:`cache_stats` and emptied by :func:`clear_caches`.

Networks that hold the indices of one random draw are evaluated inside :func:`bypass`,
where caches of per-network work are skipped (a cache of one entry per draw would only
churn); caches keyed by shapes alone (``bypassable=False``) still serve.

>>> @cached(maxsize=8)
... def total(sizes, scale=1):
...     return sum(sizes) * scale
>>> total([1, 2, 3]), total((1, 2, 3)), total.cache_info().hits
(6, 6, 1)
>>> total((1, 2)) == total((1, 2.0))   # equal values, but two entries: the key keeps types
True
>>> total.cache_info().size
3
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

#: Default byte bound of a cache whose values are tensors.
TENSOR_CACHE_BYTES = 256 * 2**20

_CACHES: list[LRUCache] = []
_bypass_depth = 0


@dataclass(frozen=True)
class CacheInfo:
    """Statistics of one cache."""

    name: str
    hits: int
    misses: int
    size: int
    maxsize: int
    nbytes: int
    max_bytes: int | None

    @property
    def currsize(self) -> int:
        """``size``, under ``functools.lru_cache``'s name."""
        return self.size


#: ``torch.Size`` holds ints only (it converts ``True`` to ``1`` and rejects floats), and hashes
#: and compares like the tuple of its items: strict, and one key with that tuple.
_STRICT: dict[type, bool] = {
    int: True,
    str: True,
    type(None): True,
    torch.dtype: True,
    torch.device: True,
    torch.Size: True,
}


def _is_strict(kind: type) -> bool:
    """Whether values of ``kind`` compare equal only to values of ``kind`` (dataclasses do)."""
    strict = _STRICT.get(kind)
    if strict is None:
        strict = _STRICT[kind] = hasattr(kind, "__dataclass_fields__")
    return strict


def _typed(value: object) -> object:
    """A hashable key for ``value`` that tells ``2``, ``2.0`` and ``True`` apart."""
    kind = type(value)
    if _is_strict(kind):
        return value
    if isinstance(value, (tuple, list)):  # torch.Size is a tuple
        if all(type(v) is int for v in value):
            return value if kind is tuple else tuple(value)
        return tuple(_typed(v) for v in value)
    return (kind, value)


_INT_ONLY = frozenset((int,))
_SEQUENCES = (tuple, list)


def _key(args: tuple) -> object:
    """``_typed(args)`` (as a tuple), cheaply for the common arguments: ints, strings, shapes
    (``torch.Size`` / tuples of ints, checked by one C-level pass over their item types),
    dataclasses; ``args`` itself when it is already strict."""
    key = None
    for index, value in enumerate(args):
        kind = type(value)
        strict = _STRICT.get(kind)
        if strict:
            if key is not None:
                key.append(value)
            continue
        if kind in _SEQUENCES and _INT_ONLY.issuperset(map(type, value)):
            typed: object = value if kind is tuple else tuple(value)
        else:
            typed = _typed(value)
        if typed is value and key is None:
            continue
        if key is None:
            key = list(args[:index])
        key.append(typed)
    return args if key is None else tuple(key)


def _nbytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return 0


class LRUCache:
    """A bounded LRU map from type-strict argument keys to results (see the module docstring)."""

    def __init__(self, name: str, maxsize: int, max_bytes: int | None, bypassable: bool) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be positive, got {maxsize!r}")
        self.name, self.maxsize, self.max_bytes, self.bypassable = name, maxsize, max_bytes, bypassable
        self._data: OrderedDict[object, tuple[object, int]] = OrderedDict()
        self.hits = self.misses = self.nbytes = 0

    def get(self, key: object) -> tuple[bool, object]:
        entry = self._data.get(key)
        if entry is None:
            self.misses += 1
            return False, None
        self.hits += 1
        self._data.move_to_end(key)
        return True, entry[0]

    def put(self, key: object, value: object) -> None:
        size = _nbytes(value) if self.max_bytes is not None else 0
        old = self._data.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        self._data[key] = (value, size)
        self.nbytes += size
        while len(self._data) > self.maxsize or (
            self.max_bytes is not None and self.nbytes > self.max_bytes and len(self._data) > 1
        ):
            _, (_, freed) = self._data.popitem(last=False)
            self.nbytes -= freed

    def clear(self) -> None:
        self._data.clear()
        self.nbytes = self.hits = self.misses = 0

    def info(self) -> CacheInfo:
        return CacheInfo(self.name, self.hits, self.misses, len(self._data), self.maxsize, self.nbytes, self.max_bytes)


def cached(
    maxsize: int = 1024, *, max_bytes: int | None = None, tensors: bool = False, bypassable: bool = True
) -> Callable[[F], F]:
    """Decorator: cache a pure function of hashable arguments under the policy above.

    Args:
        maxsize: the most entries kept.
        max_bytes: the most bytes of tensors kept (default :data:`TENSOR_CACHE_BYTES` when
            ``tensors`` is true, else unbounded by bytes).
        tensors: the values are tensors (or tuples of them): count their bytes.
        bypassable: skipped inside :func:`bypass` (set ``False`` for caches keyed by shapes
            alone, which one-draw networks share).

    The wrapper has ``cache_info()``, ``cache_clear()`` and ``__wrapped__`` (the uncached
    function).
    """
    if tensors and max_bytes is None:
        max_bytes = TENSOR_CACHE_BYTES

    def decorate(function: F) -> F:
        store = LRUCache(f"{function.__module__}.{function.__qualname__}", maxsize, max_bytes, bypassable)
        _CACHES.append(store)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if bypassable and _bypass_depth:
                return function(*args, **kwargs)
            key = _key(args) if not kwargs else (_key(args), _typed(tuple(kwargs.items())))
            try:
                found, value = store.get(key)
            except TypeError:  # an unhashable argument: nothing to cache on
                return function(*args, **kwargs)
            if found:
                return value
            value = function(*args, **kwargs)
            store.put(key, value)
            return value

        wrapper.cache_info = store.info  # type: ignore[attr-defined]
        wrapper.cache_clear = store.clear  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def memo(name: str, maxsize: int = 4096) -> LRUCache:
    """A bare LRU store under this policy (listed, cleared with the others), for results found
    while running rather than computed by a pure function: ``found, value = store.get(key)``,
    ``store.put(key, value)``. Keys must already be strict (e.g. networks, dataclasses)."""
    store = LRUCache(name, maxsize, None, True)
    _CACHES.append(store)
    return store


def bypassing() -> bool:
    """Whether a :func:`bypass` block is running (memo stores should then be skipped too)."""
    return _bypass_depth > 0


@contextmanager
def bypass() -> Iterator[None]:
    """Skip the bypassable caches (per-network work) while the block runs."""
    global _bypass_depth
    _bypass_depth += 1
    try:
        yield
    finally:
        _bypass_depth -= 1


def clear_caches() -> None:
    """Empty every cache of tnconv (symbolic work and cached tensors alike).

    >>> import tnconv
    >>> tnconv.clear_caches()
    >>> sum(info.size for info in tnconv.cache_stats())
    0
    """
    for store in _CACHES:
        store.clear()


def cache_stats() -> list[CacheInfo]:
    """:class:`CacheInfo` of every cache, in the order they were created."""
    return [store.info() for store in _CACHES]


__all__ = ["CacheInfo", "bypass", "bypassing", "cache_stats", "cached", "clear_caches", "memo"]
