"""
Render the documentation's math to MathML when the HTML is built, so that formulas show
with no JavaScript and no network: browsers draw MathML natively (MathML Core), which is
what readers on clusters and air-gapped machines need. The conversion is
``latex2mathml``'s (a pure-Python package from the index).

A formula that uses a command latex2mathml does not know would come out as raw text; the
build warns about it instead (and ``-W`` makes that an error), naming the formula.
"""

import re

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.util import logging

logger = logging.getLogger(__name__)

# Operator names latex2mathml does not define, written as the operator names they are.
_OPERATORS = {"arg"}
_OPERATOR = re.compile(r"\\(" + "|".join(sorted(_OPERATORS)) + r")(?![A-Za-z])")

# latex2mathml writes an unknown command as an identifier that still holds its backslash.
_UNKNOWN = re.compile(r"<m[io][^>]*>(\\[A-Za-z]+)</m[io]>")


def to_mathml(latex, display, location=None):
    """MathML for one formula; warns (naming the command) when a command is unknown."""
    latex = _OPERATOR.sub(r"\\operatorname{\1}", latex)
    mathml = convert(latex, display="block" if display else "inline")
    unknown = _UNKNOWN.findall(mathml)
    if unknown:
        logger.warning("math: %s not understood by latex2mathml in %r",
                       ", ".join(sorted(set(unknown))), latex, location=location)
    return mathml


def _block_source(node):
    # As Sphinx's MathJax renderer: several equations separated by blank lines are
    # separate displays; an equation with line breaks or alignment is a split.
    if node.get("nowrap"):
        return [node.astext()]
    parts = [p for p in node.astext().split("\n\n") if p.strip()]
    return [r"\begin{split}" + p + r"\end{split}" if ("\\\\" in p or "&" in p)
            and r"\begin{" not in p else p for p in parts]


def visit_inline(self, node):
    self.body.append(to_mathml(node.astext(), display=False, location=node))
    raise nodes.SkipNode


def visit_block(self, node):
    self.body.append(self.starttag(node, "div", CLASS="math notranslate nohighlight"))
    if node.get("number"):
        number = node["number"]
        self.body.append(f'<span class="eqno">({number})</span>')
    for latex in _block_source(node):
        self.body.append(to_mathml(latex, display=True, location=node))
    self.body.append("</div>\n")
    raise nodes.SkipNode


def setup(app):
    app.add_html_math_renderer("mathml", (visit_inline, None), (visit_block, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
