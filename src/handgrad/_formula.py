"""A small formula language for the trace: each formula renders as plain text, LaTeX and MathML.

The steps of :mod:`handgrad.tracing` are shown in a terminal (Unicode text), in Markdown and
LaTeX documents, and in HTML for Jupyter, where formulas must be MathML because a notebook
may have no network access for a typesetting script. Building each formula once from these
nodes keeps the three renderings in agreement; none is parsed from another.

``Sym("W", sup=2)`` renders as ``W²``, ``W^{2}`` and ``<msup><mi>W</mi><mn>2</mn></msup>``.
"""

from __future__ import annotations

from html import escape

_SUPERSCRIPTS = str.maketrans("0123456789+-=()nil", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱˡ")
_SUBSCRIPTS = str.maketrans("0123456789+-=()ijknl", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ᵢⱼₖₙₗ")
# Greek and other letters LaTeX spells by name
_LATEX_NAMES = {"σ": r"\sigma", "δ": r"\delta", "ℓ": r"\ell", "∂": r"\partial",
                "Σ": r"\sum", "⊙": r"\odot", "−": "-", "⊤": r"\top", "·": r"\cdot",
                "≥": r"\geq", "≤": r"\leq", "×": r"\times"}


class Node:
    """A formula: :meth:`text`, :meth:`latex` and :meth:`mathml` of the same expression."""

    def text(self):
        raise NotImplementedError

    def latex(self):
        raise NotImplementedError

    def mathml(self):
        raise NotImplementedError

    # A node "has a script" when a further superscript (ᵀ) needs brackets in text.
    scripted = False

    def math(self, display=True):
        """The whole formula as a ``<math>`` element."""
        mode = ' display="block"' if display else ""
        return (f'<math xmlns="http://www.w3.org/1998/Math/MathML"{mode}>'
                f"<mrow>{self.mathml()}</mrow></math>")


def _latex_of(s):
    return "".join(_LATEX_NAMES.get(c, c) for c in s)


class Mi(Node):
    """An identifier: a variable or function name (``x``, ``softmax``)."""

    def __init__(self, name, upright=False):
        self.name, self.upright = name, upright

    def text(self):
        return self.name

    def latex(self):
        if self.upright and len(self.name) > 1:
            return rf"\operatorname{{{self.name}}}"
        return _latex_of(self.name)

    def mathml(self):
        variant = ' mathvariant="normal"' if self.upright and len(self.name) == 1 else ""
        return f"<mi{variant}>{escape(self.name)}</mi>"


class Mn(Node):
    """A number."""

    def __init__(self, value):
        self.value = str(value)

    def text(self):
        return self.value

    def latex(self):
        return self.value

    def mathml(self):
        return f"<mn>{escape(self.value)}</mn>"


class Mo(Node):
    """An operator; ``spaced`` ones (``=``, ``+``) get spaces around them in text."""

    def __init__(self, op, spaced=True, latex=None):
        self.op, self.spaced, self._latex = op, spaced, latex

    def text(self):
        return f" {self.op} " if self.spaced else self.op

    def latex(self):
        out = self._latex if self._latex is not None else _latex_of(self.op)
        if out.startswith("\\") and out[-1].isalpha():
            out += " "
        return out

    def mathml(self):
        return f"<mo>{escape(self.op)}</mo>"


class Row(Node):
    """Items side by side."""

    def __init__(self, *items):
        self.items = [_node(i) for i in items]

    def text(self):
        return "".join(i.text() for i in self.items).strip()

    def latex(self):
        return "".join(i.latex() for i in self.items).strip()

    def mathml(self):
        return "<mrow>" + "".join(i.mathml() for i in self.items) + "</mrow>"


class Space(Node):
    """A thin space between factors (``W¹ x``)."""

    def text(self):
        return " "

    def latex(self):
        return r"\, "

    def mathml(self):
        return '<mspace width="0.17em"/>'


class Scripts(Node):
    """``base`` with a superscript and/or subscript."""

    scripted = True

    def __init__(self, base, sup=None, sub=None):
        self.base = _node(base)
        self.sup = None if sup is None else _node(sup)
        self.sub = None if sub is None else _node(sub)

    def text(self):
        out = self.base.text()
        if self.base.scripted and self.sup is not None:
            out = f"({out})"
        if self.sub is not None:
            sub = self.sub.text()
            translated = sub.translate(_SUBSCRIPTS)
            out += translated if _all_scripted(sub, _SUBSCRIPTS) else f"_{sub}"
        if self.sup is not None:
            sup = self.sup.text()
            translated = sup.translate(_SUPERSCRIPTS)
            out += translated if _all_scripted(sup, _SUPERSCRIPTS) or sup == "⊤" else f"^{sup}"
        return out.replace("⊤", "ᵀ")

    def latex(self):
        base = self.base.latex()
        if self.base.scripted or len(base) > 1 and not base.startswith("\\"):
            base = f"{{{base}}}"
        out = base
        if self.sub is not None:
            out += f"_{{{self.sub.latex().strip()}}}"
        if self.sup is not None:
            out += f"^{{{self.sup.latex().strip()}}}"
        return out

    def mathml(self):
        base = self.base.mathml()
        if self.sup is not None and self.sub is not None:
            return f"<msubsup>{base}{self.sub.mathml()}{self.sup.mathml()}</msubsup>"
        if self.sup is not None:
            return f"<msup>{base}{self.sup.mathml()}</msup>"
        return f"<msub>{base}{self.sub.mathml()}</msub>"


def _all_scripted(s, table):
    return all(ord(c) in table for c in s)


class TextParen(Node):
    """Brackets in plain text only, where ``a/b c`` would be ambiguous; none in LaTeX or MathML."""

    def __init__(self, inner):
        self.inner = _node(inner)

    def text(self):
        return f"({self.inner.text()})"

    def latex(self):
        return self.inner.latex()

    def mathml(self):
        return self.inner.mathml()


class Frac(Node):
    """``num / den``: a stacked fraction in LaTeX and MathML."""

    def __init__(self, num, den):
        self.num, self.den = _node(num), _node(den)

    def text(self):
        num, den = self.num.text(), self.den.text()
        if " " in num and not num.startswith("("):
            num = f"({num})"
        if " " in den and not den.startswith("("):
            den = f"({den})"
        return f"{num}/{den}"

    def latex(self):
        return rf"\frac{{{self.num.latex()}}}{{{self.den.latex()}}}"

    def mathml(self):
        return f"<mfrac>{self.num.mathml()}{self.den.mathml()}</mfrac>"


class Fenced(Node):
    """``(inner)``, or with other brackets."""

    def __init__(self, inner, left="(", right=")"):
        self.inner, self.left, self.right = _node(inner), left, right

    def text(self):
        return f"{self.left}{self.inner.text()}{self.right}"

    def latex(self):
        left = {"[": "[", "(": "(", "{": r"\{"}.get(self.left, self.left)
        right = {"]": "]", ")": ")", "}": r"\}"}.get(self.right, self.right)
        return rf"\left{left}{self.inner.latex()}\right{right}"

    def mathml(self):
        return (f'<mrow><mo fence="true">{escape(self.left)}</mo>{self.inner.mathml()}'
                f'<mo fence="true">{escape(self.right)}</mo></mrow>')


class Func(Node):
    """A named function applied to arguments: ``max(0, Q)``."""

    def __init__(self, name, *args, latex=None):
        self.name, self.args, self._latex = name, [_node(a) for a in args], latex

    def text(self):
        return f"{self.name}({', '.join(a.text() for a in self.args)})"

    def latex(self):
        name = self._latex or rf"\operatorname{{{self.name}}}"
        return rf"{name}\left({', '.join(a.latex() for a in self.args)}\right)"

    def mathml(self):
        args = '<mo separator="true">,</mo>'.join(a.mathml() for a in self.args)
        variant = ' mathvariant="normal"' if len(self.name) == 1 else ""
        return (f"<mrow><mi{variant}>{escape(self.name)}</mi><mo>&#x2061;</mo>"
                f'<mrow><mo fence="true">(</mo>{args}<mo fence="true">)</mo></mrow></mrow>')


class Sum(Node):
    """``Σ_index body``."""

    def __init__(self, index, body):
        self.index, self.body = _node(index), _node(body)

    def text(self):
        index = self.index.text()
        translated = index.translate(_SUBSCRIPTS)
        return f"Σ{translated if _all_scripted(index, _SUBSCRIPTS) else '_' + index} " \
               f"{self.body.text()}"

    def latex(self):
        return rf"\sum_{{{self.index.latex()}}} {self.body.latex()}"

    def mathml(self):
        return (f"<mrow><munder><mo>&#x2211;</mo>{self.index.mathml()}</munder>"
                f"{self.body.mathml()}</mrow>")


class Indicator(Node):
    """``1[condition]``: 1 where the condition holds, else 0."""

    def __init__(self, condition):
        self.condition = _node(condition)

    def text(self):
        return f"1[{self.condition.text()}]"

    def latex(self):
        return rf"\mathbf{{1}}\left[{self.condition.latex()}\right]"

    def mathml(self):
        return (f'<mrow><mn mathvariant="bold">1</mn><mo fence="true">[</mo>'
                f'{self.condition.mathml()}<mo fence="true">]</mo></mrow>')


def _node(item):
    if isinstance(item, Node):
        return item
    if isinstance(item, int):
        return Mn(item)
    if isinstance(item, str):
        return Mi(item)
    raise TypeError(f"not a formula node: {item!r}")


# --------------------------------------------------------------------------- #
# The derivation's vocabulary
# --------------------------------------------------------------------------- #


def sym(name, sup=None, sub=None):
    """A symbol with an optional layer superscript and index subscript."""
    if sup is None and sub is None:
        return Mi(name)
    return Scripts(Mi(name), None if sup is None else _node(sup),
                   None if sub is None else _node(sub))


def partial(of, wrt):
    """``∂of/∂wrt``."""
    return Frac(Row(Mo("∂", spaced=False), _node(of)), Row(Mo("∂", spaced=False), _node(wrt)))


def factor(node):
    """A fraction used as a factor of a product: bracketed in plain text."""
    return TextParen(node)


def transpose(node):
    """``xᵀ``; ``(W²)ᵀ`` for a symbol that has a superscript already."""
    node = _node(node)
    return Scripts(Fenced(node) if node.scripted else node, sup=Mo("⊤", spaced=False))


def eq(*sides):
    """``a = b = c``."""
    items = []
    for i, side in enumerate(sides):
        if i:
            items.append(Mo("="))
        items.append(_node(side))
    return Row(*items)


def op(symbol):
    return Mo(symbol)


def minus():
    return Mo("−", spaced=False)
