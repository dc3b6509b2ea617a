"""Diagrams of tensor networks: matplotlib pictures, Graphviz DOT and TikZ.

All three draw the same graph (:mod:`.graph`) with the same layout (:mod:`.layout`) and
the same style per node kind (:mod:`.style`): data inputs (blue circles), index patterns
(orange squares), identities (grey diamonds), all-ones vectors (green triangles), scalars
(purple hexagons) — one line per contracted leg labelled with its name, open lines for
the output legs, and a small black dot where a leg joins more than two places.

Only :func:`draw` (:mod:`.picture`) needs matplotlib (``pip install tnconv[plot]``);
:func:`to_dot` (:mod:`.dot`) and :func:`to_latex` (:mod:`.tikz`) return text and need no
binary at run time.

>>> import tnconv
>>> tn = tnconv.networks.conv((2, 4, 8), (6, 4, 3))
>>> print(to_dot(tn).splitlines()[0])
graph tnconv {
>>> d = diagram(tn)
>>> [v.id for v in d.vertices if v.node is None]
['open:n', 'open:g', 'junction:g', 'open:o1', 'open:co']
>>> sorted(e.b for e in d.edges if e.a == "junction:g")   # g joins x, w and the output
['open:g', 'w', 'x']
"""

from ..symbolic.network import register_extension
from .dot import to_dot
from .layout import Diagram, diagram
from .picture import FORMATS, draw
from .style import STYLES, NodeStyle, style_of
from .tikz import to_latex

__all__ = ["FORMATS", "STYLES", "Diagram", "NodeStyle", "diagram", "draw", "style_of", "to_dot", "to_latex"]

register_extension("to_dot", to_dot)
register_extension("to_latex", to_latex)
