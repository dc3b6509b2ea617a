"""Diagrams as TikZ pictures (:func:`to_latex`), with labels typeset as mathematics.

>>> import tnconv
>>> tikz = to_latex(tnconv.networks.conv((2, 4, 8), (6, 4, 3)))
>>> tikz.splitlines()[-1]
'\\\\end{tikzpicture}'
"""

from __future__ import annotations

import math
import re

from ..symbolic.network import Node, TensorNetwork
from .graph import network_to_draw
from .labels import PATTERN_NAME, scalar_text
from .layout import diagram
from .style import OTHER, STYLES, style_key

_NAME = re.compile(r"^([A-Za-z]+?)(\d*)('*)$")
_TEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}


def _tex_text(text: str) -> str:
    return "".join(_TEX_SPECIALS.get(c, c) for c in text)


def _tex_name(name: str) -> str:
    """``i1`` → ``i_{1}``, ``ci'`` → ``\\mathrm{ci}'``; anything else as upright text."""
    match = _NAME.match(name)
    if not match:
        return rf"\text{{{_tex_text(name)}}}"
    letters, digits, primes = match.groups()
    base = letters if len(letters) == 1 else rf"\mathrm{{{letters}}}"
    return base + (f"_{{{digits}}}" if digits else "") + primes


def _tex_node(node: Node) -> str:
    if node.kind == "pattern":
        match = PATTERN_NAME.match(node.name)
        return r"\Pi" + ((f"_{{{match.group(1)}}}" if match.group(1) else "") + match.group(2) if match else "")
    if node.kind == "identity":
        return r"\delta"
    if node.kind == "ones":
        return r"\mathbf{1}"
    if node.kind == "scalar":
        return rf"\times {scalar_text(node.value)}"
    if node.kind == "constant" and node.network is not None and node.network.nodes:
        return r"\Sigma " + _tex_node(node.network.nodes[0])
    if node.name.endswith("_dot") and _NAME.match(node.name[:-4]):
        return rf"\dot{{{_tex_name(node.name[:-4])}}}"
    return _tex_name(node.name)


def _tex_leg(network: TensorNetwork, leg: str, show_sizes: bool) -> str:
    return f"${_tex_name(leg)}{f' = {network.size(leg)}' if show_sizes else ''}$"


def to_latex(network: TensorNetwork, *, simplified: bool = False, show_sizes: bool = False) -> str:
    """The network as a TikZ picture (``\\begin{tikzpicture} … \\end{tikzpicture}``).

    Uses tnconv's layout; one ``\\node`` per vertex (network nodes, junction dots, open
    ends) and one ``\\draw`` per edge. Needs ``\\usepackage{tikz}`` and
    ``\\usetikzlibrary{shapes.geometric}`` in the preamble.

    >>> import tnconv
    >>> tikz = to_latex(tnconv.networks.conv((2, 4, 8), (6, 4, 3)))
    >>> tikz.splitlines()[0]
    '% needs \\\\usepackage{tikz} and \\\\usetikzlibrary{shapes.geometric}'
    """
    network = network_to_draw(network, simplified)
    layout = diagram(network)
    nodes = {node.name: node for node in network.nodes}
    ids = {vertex.id: f"v{i}" for i, vertex in enumerate(layout.vertices)}
    styles = [
        r"  every node/.style={font=\small},",
        r"  leg/.style={font=\scriptsize, fill=white, inner sep=1pt},",
        r"  junction/.style={circle, fill=black, inner sep=0pt, minimum size=3.5pt},",
        r"  summed/.style={circle, draw, fill=white, inner sep=0pt, minimum size=3.5pt},",
        r"  open/.style={font=\scriptsize, inner sep=1.5pt},",
    ]
    for kind, style in (STYLES | {"other": OTHER}).items():
        colour = style.fill.lstrip("#").upper()
        styles.append(
            rf"  {kind}/.style={{{style.tikz_shape}, draw, fill={{rgb,255:red,{int(colour[:2], 16)};"
            rf"green,{int(colour[2:4], 16)};blue,{int(colour[4:], 16)}}}, text={style.text_colour}, "
            rf"minimum size={style.tikz_size}, inner sep=1pt}},"
        )
    lines = [
        r"% needs \usepackage{tikz} and \usetikzlibrary{shapes.geometric}",
        r"\begin{tikzpicture}[x=1.5cm, y=1.5cm,",
        *styles,
        "]",
    ]
    for vertex, (x, y) in zip(layout.vertices, layout.positions):
        at = f"({ids[vertex.id]}) at ({x:.3f}, {y:.3f})"
        if vertex.node is not None:
            node = nodes[vertex.node]
            lines.append(rf"\node[{style_key(node.kind)}] {at} {{${_tex_node(node)}$}};")
        elif vertex.kind == "open":
            lines.append(rf"\node[open] {at} {{{_tex_leg(network, vertex.leg, show_sizes)}}};")
        else:
            style = "junction" if vertex.kind == "junction" else "summed"
            label = ""
            if layout.label_vertex(vertex.leg) == vertex.id:
                label = f", label={{[leg]above right:{_tex_leg(network, vertex.leg, show_sizes)}}}"
            lines.append(rf"\node[{style}{label}] {at} {{}};")
    for index, edge in enumerate(layout.edges):
        bend = layout.bends[index]
        path = "--" if bend == 0 else f"to[bend {'left' if bend > 0 else 'right'}={_bend_degrees(bend):.0f}]"
        label = f" node[leg] {{{_tex_leg(network, edge.leg, show_sizes)}}}" if edge.labelled else ""
        lines.append(rf"\draw ({ids[edge.a]}) {path}{label} ({ids[edge.b]});")
    lines.append(r"\end{tikzpicture}")
    return "\n".join(lines) + "\n"


def _bend_degrees(bend: float) -> float:
    """TikZ's ``bend`` angle of a quadratic curve whose control point is ``bend`` chords off the middle."""
    return math.degrees(math.atan(2 * abs(bend)))
