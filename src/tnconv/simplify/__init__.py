"""The rewrite rules (docs/reference.md §5) and their fixpoint: ``network → network``, value kept.

:func:`simplify` applies every rule of :data:`RULES` until the network no longer changes;
the result is cached per network. A new rule is one function in :mod:`.rules` plus its
place in :data:`~.rules.RULES` (same module); tests compare every rule with the dense unsimplified network.

>>> import tnconv
>>> tn = tnconv.networks.kfac_reduce((2, 3, 8), 3)
>>> [node.kind for node in simplify(tn).nodes].count("constant")   # Σ_o Π pre-contracted
2
"""

from ..caching import cached
from ..symbolic.derive import merge_identities
from ..symbolic.network import TensorNetwork, register_extension
from .rules import (
    RULES,
    patterns_to_identities,
    precontract_constants,
    split_non_overlapping,
    squeeze_size_one,
    trim_untouched_inputs,
)


@cached(maxsize=1024)
def simplify(network: TensorNetwork) -> TensorNetwork:
    """Apply every rule of :data:`RULES` until the network no longer changes."""
    previous = None
    while previous != network:
        previous = network
        for rule in RULES:
            network = rule(network)
    return network


register_extension("simplify", simplify)

__all__ = [
    "RULES",
    "merge_identities",
    "patterns_to_identities",
    "precontract_constants",
    "simplify",
    "split_non_overlapping",
    "squeeze_size_one",
    "trim_untouched_inputs",
]
