"""Swap a model's ``torch.nn`` convolutions for tnconv's and back.

:func:`convert` replaces every ``torch.nn.Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``,
``Unfold`` and ``Fold`` in a model by its tnconv counterpart, :func:`revert` does the
opposite. The swap is *in place* and changes only each module's class: parameters (the
same ``Parameter`` objects, so an optimizer built before keeps working), buffers, hooks,
``training`` and every other attribute stay, and ``state_dict`` is unchanged. Only the
exact torch classes are swapped (a user's subclass with its own ``forward`` is left alone);
the N-d modules, which torch lacks, are left by :func:`revert`.

Example:
    >>> import torch, tnconv
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.ConvTranspose2d(4, 2, 2))
    >>> x = torch.randn(1, 3, 8, 8)
    >>> expected = model(x)
    >>> layer = tnconv.nn.convert(model, backward_keep=0.5)[0]
    >>> repr(layer)[:40], layer.backward_keep
    ('tnconv.nn.Conv2d(3, 4, kernel_size=(3, 3', 0.5)
    >>> torch.allclose(model(x), expected, atol=1e-5)
    True
    >>> type(tnconv.nn.revert(model)[0]) is torch.nn.Conv2d
    True
"""

from __future__ import annotations

import torch

from ..randomized.sampling import check_keep, check_leg, check_mode
from .conv import Conv1d, Conv2d, Conv3d, _TNConvForward
from .fold import Fold, Unfold
from .transpose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, _TNConvTransposeForward

#: torch's module class -> tnconv's.
TO_TNCONV: dict[type, type] = {
    torch.nn.Conv1d: Conv1d,
    torch.nn.Conv2d: Conv2d,
    torch.nn.Conv3d: Conv3d,
    torch.nn.ConvTranspose1d: ConvTranspose1d,
    torch.nn.ConvTranspose2d: ConvTranspose2d,
    torch.nn.ConvTranspose3d: ConvTranspose3d,
    torch.nn.Unfold: Unfold,
    torch.nn.Fold: Fold,
}
#: tnconv's module class -> torch's.
TO_TORCH: dict[type, type] = {mine: theirs for theirs, mine in TO_TNCONV.items()}

_OPTIONS = ("backward_keep", "backward_leg", "backward_mode", "backward_input_keep")


def convert(
    model: torch.nn.Module,
    *,
    backward_keep: float = 1.0,
    backward_leg: str = "spatial",
    backward_mode: str = "bernoulli",
    backward_input_keep: float = 1.0,
) -> torch.nn.Module:
    """Make every torch convolution, transposed convolution, ``Unfold`` and ``Fold`` of
    ``model`` (``model`` itself included) tnconv's, in place; return ``model``.

    Args:
        model: any ``torch.nn.Module``.
        backward_keep, backward_leg, backward_mode, backward_input_keep: the randomized
            backward options of :class:`tnconv.nn.Conv2d` (see :mod:`tnconv.nn.conv`),
            given to every convolution (transposed ones take all but
            ``backward_input_keep``); the defaults keep it exact. Convolutions that already
            are tnconv's get them too.

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    options = {
        "backward_keep": check_keep(backward_keep, "backward_keep"),
        "backward_mode": check_mode(backward_mode, "backward_mode"),
        "backward_input_keep": check_keep(backward_input_keep, "backward_input_keep"),
    }
    for module in model.modules():
        target = TO_TNCONV.get(type(module))
        if target is not None:
            module.__class__ = target
        if isinstance(module, (_TNConvForward, _TNConvTransposeForward)):
            leg = check_leg(backward_leg, "weight", len(module.kernel_size), "backward_leg")
            for name, value in {**options, "backward_leg": leg}.items():
                if hasattr(type(module), name):  # transposed modules have no backward_input_keep
                    setattr(module, name, value)
    return model


def revert(model: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`convert`: make every tnconv module with a torch counterpart torch's again,
    in place (dropping the randomized backward options); return ``model``.

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        target = TO_TORCH.get(type(module))
        if target is None:
            continue
        module.__class__ = target
        for name in _OPTIONS:
            module.__dict__.pop(name, None)
    return model
