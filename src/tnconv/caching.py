"""Caching of symbolic work keyed on user-style arguments.

Builders take shapes and hyper-parameters as users write them (ints, tuples, lists,
``torch.Size``, strings). :func:`symbolic_cache` makes such a function cached on a frozen
(hashable) form of its arguments, so a repeated call costs one dictionary look-up.

>>> @symbolic_cache
... def total(sizes, scale=1):
...     return sum(sizes) * scale
>>> total([1, 2, 3]), total((1, 2, 3), scale=1)
(6, 6)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def freeze(value: object) -> object:
    """Lists, tuples and ``torch.Size`` become tuples (recursively); other values stay."""
    if isinstance(value, (list, tuple)):  # torch.Size is a tuple
        return tuple(freeze(v) for v in value)
    return value


def symbolic_cache(function: F) -> F:
    """Cache ``function`` on the frozen form of its arguments (unbounded LRU of 4096)."""
    cached = functools.lru_cache(maxsize=4096)(function)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return cached(*args, **kwargs)
        except TypeError as error:
            if "unhashable" not in str(error):
                raise
        return cached(*(freeze(a) for a in args), **{k: freeze(v) for k, v in kwargs.items()})

    wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
    wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
