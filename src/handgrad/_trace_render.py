"""The views of a :class:`handgrad.tracing.Trace`: terminal text, Markdown, LaTeX and HTML.

All four show the same things in the same order: the example and the weights, then each
step's equation id, formula, shape, values (small arrays in full, large ones summarised by
norms and their largest entries) and check. A check that passes shows its worst relative
error as a bound (``< 1e-9``): the digits below that are rounding noise, which differs from
one machine to the next, so documents generated from a trace are reproducible; a check
that fails shows the error itself. The exact errors are in :meth:`Trace.to_dict`.
"""

from __future__ import annotations

import math
import textwrap
from html import escape

import numpy as np

MAX_ENTRIES = 120  # arrays with more entries are summarised
MAX_COLUMNS = 12  # ... and so are matrices wider than this
TOP_ENTRIES = 5  # largest entries listed in a summary

SECTION_TITLES = {"forward": "Forward pass (F1–F5)",
                  "seed": "Backward pass: the seed (B2a, B1, B2)"}


# --------------------------------------------------------------------------- #
# Shared pieces
# --------------------------------------------------------------------------- #


def _number(v, decimals):
    """Fixed decimals, or scientific where fixed would show a non-zero value as 0."""
    v = float(v)
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if v == 0:
        return f"{0:.{decimals}f}"
    if abs(v) < 0.5 * 10.0 ** -decimals or abs(v) >= 1e6:
        return f"{v:.{max(decimals - 2, 1)}e}"
    return f"{v:.{decimals}f}"


def _error_text(check):
    """A pass as a power-of-ten bound (machine-independent); a failure as its value."""
    err = check.error
    if not check.passed:
        return "inf" if math.isinf(err) else ("nan" if math.isnan(err) else f"{err:.1e}")
    if err < 1e-15:
        return "< 1e-15"
    return f"< 1e-{max(0, math.floor(-math.log10(err)))}"


def _check_line(step):
    c = step.check
    if c is None:
        return "not checked"
    if c.entries == 1:
        entries = "the value" if c.checked else "nothing (at a kink)"
    elif c.checked == c.entries:
        entries = f"all {c.entries:,} entries"
    else:
        entries = f"{c.checked:,} of {c.entries:,} entries"
    if c.passed and c.entries == 1:
        return f"✓ {c.method}: relative error {_error_text(c)}"
    if c.passed:
        return f"✓ {c.method}: worst relative error {_error_text(c)} over {entries}"
    where = "" if c.worst_index is None else f" at {list(c.worst_index)}"
    return (f"✗ {c.method}: worst relative error {_error_text(c)}{where} exceeds the "
            f"tolerance {c.tolerance:.0e} ({entries} checked)")


def _summary_lines(a, decimals):
    """Norm, range and the largest entries of a large array, as lines of text."""
    flat = a.reshape(-1)
    finite = flat[np.isfinite(flat)]
    lines = [
        f"‖·‖ = {_number(np.linalg.norm(finite), decimals)}"
        f" · min {_number(finite.min(), decimals) if finite.size else 'nan'}"
        f" · max {_number(finite.max(), decimals) if finite.size else 'nan'}"
        f" · mean {_number(finite.mean(), decimals) if finite.size else 'nan'}"
        f" · {np.count_nonzero(flat):,} of {flat.size:,} entries non-zero"
        + ("" if finite.size == flat.size else f" · {flat.size - finite.size:,} not finite")]
    order = np.argsort(-np.abs(np.nan_to_num(flat, nan=np.inf)), kind="stable")[:TOP_ENTRIES]
    items = [f"{[int(k) for k in np.unravel_index(int(i), a.shape)]} "
             f"{_number(flat[i], decimals)}" for i in order]
    lines.append("largest |entries|: " + " · ".join(items))
    return lines


def _is_large(a):
    """Summarised rather than shown: many entries, or a matrix too wide to read."""
    return a.size > MAX_ENTRIES or (a.ndim >= 2 and a.shape[-1] > MAX_COLUMNS)


def _rows(a):
    """A 0-, 1- or 2-D array as rows of at most MAX_COLUMNS (a long vector wraps)."""
    if a.ndim == 2:
        return list(a)
    flat = a.reshape(-1)
    return [flat[i:i + MAX_COLUMNS] for i in range(0, max(flat.size, 1), MAX_COLUMNS)]


def _sections(trace):
    """``[(title, [steps])]``: forward, the seed, then each layer's gradients downward."""
    K = len(trace.network["layer_sizes"]) - 1
    groups = {}
    for step in trace.steps:
        if step.eq.startswith("F"):
            key = "forward"
        elif step.eq in ("B2a", "B1", "B2"):
            key = "seed"
        else:
            key = step.layer
        groups.setdefault(key, []).append(step)
    out = []
    for key, steps in groups.items():
        if key in SECTION_TITLES:
            title = SECTION_TITLES[key]
        elif key == K:
            title = f"Backward pass: the output layer (layer {K})"
        else:
            title = f"Backward pass: hidden layer {key}"
        out.append((title, steps))
    return out


# --------------------------------------------------------------------------- #
# One entry of each step, worked out with numbers (one-example traces)
# --------------------------------------------------------------------------- #

_SUP = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
MAX_TERMS = 6  # a sum with more terms is shown by its first few and its last


def _sub(*indices):
    return "".join(str(i + 1).translate(_SUB) for i in indices)


def _product_sum(pairs, extra, decimals):
    """``(a)(b) + (a)(b) + … + extra``, shortened when long."""
    def term(a, b):
        return f"({_number(a, decimals)})({_number(b, decimals)})"

    pairs = list(pairs)
    terms = [term(a, b) for a, b in pairs]
    if len(terms) > MAX_TERMS:
        terms = terms[:3] + [f"… ({len(pairs)} products)"] + terms[-1:]
    if extra is not None:
        terms.append(_number(extra, decimals))
    return " + ".join(terms).replace("+ -", "− ")


def worked(trace, step, decimals):
    """One entry of ``step`` computed from the numbers before it, as plain text; None for
    a batch, where each entry is a sum over examples."""
    if trace.batched:
        return None
    K = len(trace.network["layer_sizes"]) - 1
    spec = K == 2

    def n(v):
        return _number(v, decimals)

    def name(base, l):  # the plain name and the printed symbol of a layer's quantity
        if l == K and base == "Q":
            return "O", "O"
        if l == 0 and base == "h":
            return None, "x"
        plain = base if spec else f"{base}{l}"
        return plain, base if spec else base + str(l).translate(_SUP)

    def val(base, l):
        if l == 0 and base == "h":
            return trace.x
        return trace[name(base, l)[0]].value

    eq, l, v = step.eq, step.layer, step.value
    act = trace.network["activation"]
    y = trace.y
    c = int(np.argmax(y))  # the target class (the largest target for soft targets)
    if eq in ("F1", "F3"):
        W, b = trace.params[f"W{l}"], trace.params[f"b{l}"]
        A = val("h", l - 1)
        sym = name("Q", l)[1]
        return (f"{sym}{_sub(0)} = Σₖ W{str(l).translate(_SUP)}{_sub(0)}ₖ "
                f"{name('h', l - 1)[1]}ₖ + b{str(l).translate(_SUP)}{_sub(0)} = "
                f"{_product_sum(zip(W[0], A), b[0], decimals)} = {n(v[0])}")
    if eq == "F2":
        q, h = name("Q", l)[1], name("h", l)[1]
        fn = {"relu": "max(0, {})", "tanh": "tanh({})", "logistic": "σ({})",
              "identity": q + _sub(0) + " = {}"}[act]
        return f"{h}{_sub(0)} = {fn.format(n(val('Q', l)[0]))} = {n(v[0])}"
    if eq == "F4":
        O = trace["O"].value
        e = np.exp(O - O.max())
        scale = math.exp(O.max())
        return (f"P{_sub(0)} = exp(O{_sub(0)}) / Σₖ exp(Oₖ) = {n(e[0] * scale)} / "
                f"{n(e.sum() * scale)} = {n(v[0])}")
    if eq == "F5":
        P = trace["P"].value
        if np.count_nonzero(y) == 1:
            return f"L = −log P{_sub(c)} = −log({n(P[c])}) = {n(v)}"
        return None
    if eq == "B2a":
        P = trace["P"].value
        return f"∂L/∂P{_sub(c)} = −y{_sub(c)}/P{_sub(c)} = −{n(y[c])}/{n(P[c])} = {n(v[c])}"
    if eq == "B1":
        P = trace["P"].value
        return (f"∂P{_sub(0)}/∂O{_sub(0)} = P{_sub(0)}(1 − P{_sub(0)}) = "
                f"({n(P[0])})({n(1 - P[0])}) = {n(v[0, 0])};  "
                f"∂P{_sub(0)}/∂O{_sub(1)} = −P{_sub(0)}P{_sub(1)} = "
                f"−({n(P[0])})({n(P[1])}) = {n(v[0, 1])}").replace("−(-", "(")
    if eq == "B2":
        P = trace["P"].value
        return f"∂L/∂O{_sub(0)} = P{_sub(0)} − y{_sub(0)} = {n(P[0])} − {n(y[0])} = {n(v[0])}"
    up = name("Q", l)[1]
    if step.name.startswith("dL/db"):
        return (f"∂L/∂b{str(l).translate(_SUP)}{_sub(0)} = ∂L/∂{up}{_sub(0)} = {n(v[0])}")
    if step.name.startswith("dL/dW"):
        g = trace[f"dL/d{name('Q', l)[0]}"].value[0]
        below = name("h", l - 1)[1]
        return (f"∂L/∂W{str(l).translate(_SUP)}{_sub(0, 0)} = (∂L/∂{up}{_sub(0)}) "
                f"{below}{_sub(0)} = ({n(g)})({n(val('h', l - 1)[0])}) = {n(v[0, 0])}")
    if eq == "B5":
        W = trace.params[f"W{l + 1}"]
        g = trace[f"dL/d{name('Q', l + 1)[0]}"].value
        above = name("Q", l + 1)[1]
        return (f"∂L/∂{name('h', l)[1]}{_sub(0)} = Σᵢ W{str(l + 1).translate(_SUP)}ᵢ{_sub(0)}"
                f" ∂L/∂{above}ᵢ = {_product_sum(zip(W[:, 0], g), None, decimals)} = "
                f"{n(v[0])}")
    if eq == "B6a":
        a, q, h = name("a", l)[1], val("Q", l)[0], val("h", l)[0]
        qs, hs = name("Q", l)[1], name("h", l)[1]
        return {"relu": f"{a}{_sub(0)} = 1[{qs}{_sub(0)} > 0] = 1[{n(q)} > 0] = {n(v[0])}",
                "tanh": f"{a}{_sub(0)} = 1 − ({hs}{_sub(0)})² = 1 − ({n(h)})² = {n(v[0])}",
                "logistic": f"{a}{_sub(0)} = {hs}{_sub(0)}(1 − {hs}{_sub(0)}) = "
                            f"({n(h)})({n(1 - h)}) = {n(v[0])}",
                "identity": f"{a}{_sub(0)} = 1"}[act]
    if eq == "B6":
        a = name("a", l)
        dh = trace[f"dL/d{name('h', l)[0]}"].value[0]
        return (f"∂L/∂{name('Q', l)[1]}{_sub(0)} = (∂L/∂{name('h', l)[1]}{_sub(0)}) "
                f"{a[1]}{_sub(0)} = ({n(dh)})({n(trace[a[0]].value[0])}) = {n(v[0])}")
    return None


def _inputs(trace):
    """``[(name, array)]``: the example, the target and the parameters."""
    items = [("x", trace.x), ("y", trace.y)]
    items += list(trace.params.items())
    return items


def _headline(trace):
    sizes = "-".join(str(s) for s in trace.network["layer_sizes"])
    n = "a batch of %d examples" % trace.x.shape[0] if trace.batched else "one example"
    return (f"{sizes} network ({trace.network['activation']}, {trace.network['dtype']}), "
            f"{n}, loss L = {_number(trace.loss, trace.decimals)}")


def _verdict(trace):
    checked = [s for s in trace.steps if s.check is not None]
    if trace.ok:
        worst = max((s.check for s in checked), key=lambda c: c.error, default=None)
        bound = "" if worst is None else f", worst relative error {_error_text(worst)}"
        return (f"✓ all {len(checked)} steps agree with their independent checks"
                f"{bound} (tolerance {trace.tolerance:.0e})")
    bad = ", ".join(f"{s.eq} {s.name}" for s in trace.failed)
    return f"✗ {len(trace.failed)} of {len(checked)} steps FAIL their checks: {bad}"


PREAMBLE = ("Every value comes from handgrad's own layer functions (src/handgrad/model.py), "
            "computed in float64; every check is computed without them: an independent "
            "forward pass for F1–F5, central finite differences of the loss for each "
            "gradient, the numerical Jacobian of the softmax for B1. ✓ marks a value that "
            "agrees with its check within the tolerance; errors are shown as bounds, since "
            "the digits below them are rounding noise. Equation ids refer to "
            "docs/derivation.md; subscripts in the worked entries count from 1, "
            "[i, j] positions from 0.")


# --------------------------------------------------------------------------- #
# Plain text
# --------------------------------------------------------------------------- #


def _grid(a, decimals):
    """Rows of right-aligned numbers for a small 0-, 1- or 2-D array."""
    if a.ndim == 0:
        return [_number(a, decimals)]
    cells = [[_number(v, decimals) for v in row] for row in _rows(a)]
    width = max(len(c) for row in cells for c in row)
    lines = []
    for i, row in enumerate(cells):
        body = " ".join(c.rjust(width) for c in row)
        last = i == len(cells) - 1
        if a.ndim == 1:  # a long vector wraps inside one pair of brackets
            lines.append(("[" if i == 0 else " ") + body + ("]" if last else ""))
        else:
            lines.append(("[[" if i == 0 else " [") + body + ("]]" if last else "]"))
    return lines


def _value_lines(a, decimals, batch_label="example"):
    if _is_large(a):
        return _summary_lines(a, decimals)
    if a.ndim <= 2:
        return _grid(a, decimals)
    lines = []
    for n, block in enumerate(a):
        lines.append(f"{batch_label} {n}:")
        lines += ["  " + line for line in _value_lines(block, decimals)]
    return lines


def render_text(trace, decimals, color=False):
    green, red, bold, reset = ("\033[32m", "\033[31m", "\033[1m", "\033[0m") if color \
        else ("", "", "", "")
    out = [f"{bold}handgrad trace{reset}: {_headline(trace)}"]
    if trace.description:
        out.append(trace.description)
    out += textwrap.wrap(PREAMBLE, 96)
    out.append("")
    out.append(f"{bold}The example and the weights{reset}")
    width = max(len(s.name) for s in trace.steps)
    for name, a in _inputs(trace):
        lines = _value_lines(a, decimals)
        out.append(f"  {name:<4} {str(tuple(a.shape)):<10} {lines[0]}")
        out += [" " * 18 + line for line in lines[1:]]
    for title, steps in _sections(trace):
        out.append("")
        out.append(f"{bold}{title}{reset}")
        for step in steps:
            mark = "" if step.check is None else (f"{green}✓{reset}" if step.passed
                                                   else f"{red}✗{reset}")
            out.append("")
            out.append(f"{step.eq:<4} {step.name:<{width}}  {step.text}    "
                       f"{tuple(step.shape)}  {mark}")
            out += ["     " + line for line in _value_lines(step.value, decimals)]
            for label, extra in step.also.items():
                out.append(f"     = {label}:")
                out += ["       " + line for line in _value_lines(extra, decimals)]
            by_hand = worked(trace, step, decimals)
            if by_hand:
                out.append(f"     one entry by hand: {by_hand}")
            check = _check_line(step)
            paint = green if step.passed else red
            out.append(f"     {paint}{check}{reset}")
    out.append("")
    out.append((green if trace.ok else red) + _verdict(trace) + reset)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- #
# Markdown
# --------------------------------------------------------------------------- #


def _md_block(lines):
    return "```text\n" + "\n".join(lines) + "\n```"


def render_markdown(trace, decimals):
    out = ["# The derivation with numbers", ""]
    out.append(f"*{_headline(trace)}.* " + (f"{_md_escape(_sentence(trace.description))}."
                                             if trace.description else ""))
    out += ["", PREAMBLE.replace("src/handgrad/model.py", "`src/handgrad/model.py`")
            .replace("docs/derivation.md", "`docs/derivation.md`"), ""]
    out += ["## The example and the weights", ""]
    for name, a in _inputs(trace):
        out.append(f"`{name}` {tuple(a.shape)}")
        out.append("")
        out.append(_md_block(_value_lines(a, decimals)))
        out.append("")
    for title, steps in _sections(trace):
        out += [f"## {title}", ""]
        for step in steps:
            out += [f"### {step.eq} · `{step.name}`", "", f"$${step.latex}$$", "",
                    _md_escape(step.note), "", _md_block(_value_lines(step.value, decimals)), ""]
            for label, extra in step.also.items():
                out += [f"The same, as the chain rule {_md_escape(label)}:", "",
                        _md_block(_value_lines(extra, decimals)), ""]
            by_hand = worked(trace, step, decimals)
            if by_hand:
                out += [f"One entry by hand: `{by_hand}`", ""]
            out += [f"shape {tuple(step.shape)} · {_check_line(step)}", ""]
    out += ["## Verdict", "", _verdict(trace), ""]
    return "\n".join(out)


def _sentence(text):
    """Capitalised as a sentence, unless it starts with a name (a file's, e.g.)."""
    first = text.split(" ", 1)[0]
    return text[:1].upper() + text[1:] if first.isalpha() and first.islower() else text


def _md_escape(text):
    return text.replace("*", r"\*").replace("_", r"\_")


# --------------------------------------------------------------------------- #
# LaTeX
# --------------------------------------------------------------------------- #

_LATEX_TEXT = {"−": "$-$", "²": "$^2$", "∂": r"$\partial$", "⊙": r"$\odot$", "σ": r"$\sigma$",
               "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$", "‖": r"$\|$", "·": r"$\cdot$",
               "✓": r"$\checkmark$", "✗": r"$\times$", "Σ": r"$\Sigma$", "ᵢ": r"$_i$",
               "ⱼ": r"$_j$", "–": "--", "—": "---", "δ": r"$\delta$", "…": r"\dots{}",
               "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
               "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "\\": r"\textbackslash{}", "<": r"$<$", ">": r"$>$", "|": r"$|$",
               "ₖ": r"$_k$", "ⁿ": r"$^n$", "ˡ": r"$^\ell$"}
_LATEX_TEXT.update({sup: f"$^{d}$" for d, sup in zip("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")})
_LATEX_TEXT.update({sub: f"$_{d}$" for d, sub in zip("0123456789", "₀₁₂₃₄₅₆₇₈₉")})


def _latex_text(text):
    out = []
    for c in text:
        if c in _LATEX_TEXT:
            out.append(_LATEX_TEXT[c])
        elif ord(c) < 128:
            out.append(c)
        else:
            out.append("?")  # outside what pdflatex's default fonts hold
    return "".join(out)


def _latex_number(v, decimals):
    s = _number(v, decimals)
    if "e" in s and s not in ("inf", "-inf"):
        mantissa, exponent = s.split("e")
        return rf"{mantissa}{{\times}}10^{{{int(exponent)}}}"
    return {"inf": r"\infty", "-inf": r"-\infty", "nan": r"\mathrm{NaN}"}.get(s, s)


def _latex_value(a, decimals):
    if _is_large(a):
        return None
    if a.ndim == 0:
        return _latex_number(a, decimals)
    if a.ndim == 1 and a.size > MAX_COLUMNS:  # a long vector wraps, read row by row
        rows = r" \\ ".join(" & ".join(_latex_number(v, decimals) for v in r) for r in _rows(a))
        return rf"\left[\begin{{array}}{{{'r' * MAX_COLUMNS}}} {rows} \end{{array}}\right]^{{\top}}"
    if a.ndim == 1:
        row = " & ".join(_latex_number(v, decimals) for v in a)
        return rf"\begin{{bmatrix}} {row} \end{{bmatrix}}^{{\top}}"
    if a.ndim == 2:
        rows = r" \\ ".join(" & ".join(_latex_number(v, decimals) for v in r) for r in a)
        return rf"\begin{{bmatrix}} {rows} \end{{bmatrix}}"
    return None


def _latex_array_block(symbol, a, decimals, batch_label="example"):
    value = _latex_value(a, decimals)
    if value is not None:
        return [rf"\[ {symbol} = {value} \]"]
    if a.ndim == 3 and not _is_large(a[0]):
        out = []
        for n, block in enumerate(a):
            out.append(rf"\[ {symbol}_{{[{n}]}} = {_latex_value(block, decimals)} \]")
        return out
    lines = _summary_lines(a, decimals)
    return [r"\begin{quote}\small", rf"${symbol}$: " + _latex_text(lines[0]) + r"\\",
            *(_latex_text(line) + r"\\" for line in lines[1:]), r"\end{quote}"]


def render_latex(trace, decimals, standalone):
    body = [r"\section*{The derivation with numbers}",
            _latex_text(_headline(trace)) + "."
            + (" " + _latex_text(trace.description) + "." if trace.description else ""),
            "", _latex_text(PREAMBLE), "", r"\subsection*{The example and the weights}"]
    for name, a in _inputs(trace):
        sym = {"x": "x", "y": "y"}.get(name, f"{name[0]}^{{{name[1:]}}}")
        body += _latex_array_block(sym, a, decimals)
    for title, steps in _sections(trace):
        body += ["", rf"\subsection*{{{_latex_text(title)}}}"]
        for step in steps:
            symbol = step.symbol.latex()
            body += [rf"\paragraph{{{step.eq}: \texttt{{{_latex_text(step.name)}}}}}"
                     rf" {_latex_text(step.note)}",
                     rf"\[ {step.latex} \]"]
            body += _latex_array_block(symbol, step.value, decimals)
            for label, extra in step.also.items():
                body.append(rf"The same, as the chain rule {_latex_text(label)}:")
                body += _latex_array_block(symbol, extra, decimals)
            by_hand = worked(trace, step, decimals)
            if by_hand:
                body.append(r"\noindent One entry by hand: " + _latex_text(by_hand) + r"\\")
            body.append(r"\noindent{\small " + _latex_text(
                f"shape {tuple(step.shape)} · {_check_line(step)}") + "}")
    body += ["", r"\subsection*{Verdict}", _latex_text(_verdict(trace))]
    text = "\n".join(body) + "\n"
    if not standalone:
        return text
    return ("\\documentclass[10pt]{article}\n\\usepackage[T1]{fontenc}\n"
            "\\usepackage{amsmath,amssymb}\n\\usepackage[margin=2cm]{geometry}\n"
            "\\setcounter{MaxMatrixCols}{20}\n\\begin{document}\n"
            + text + "\\end{document}\n")


# --------------------------------------------------------------------------- #
# HTML (Jupyter's _repr_html_ and --format html): MathML, no scripts, nothing fetched
# --------------------------------------------------------------------------- #

STYLE = """
.hg-trace { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; line-height: 1.4;
  color: #1f2328; max-width: 72rem; }
.hg-trace h2 { font-size: 1.35rem; margin: 0.6rem 0 0.3rem; }
.hg-trace h3 { font-size: 1.1rem; margin: 1.4rem 0 0.4rem; border-bottom: 1px solid #d0d7de;
  padding-bottom: 0.2rem; }
.hg-trace .hg-step { border-left: 4px solid #1a7f37; padding: 0.3rem 0.8rem; margin: 0.7rem 0;
  background: #f6f8fa; }
.hg-trace .hg-step.hg-fail { border-left-color: #cf222e; background: #fff5f5; }
.hg-trace .hg-head { display: flex; gap: 0.8rem; align-items: baseline; flex-wrap: wrap; }
.hg-trace .hg-eq { font-weight: 700; font-family: ui-monospace, monospace; min-width: 2.6rem; }
.hg-trace .hg-name { font-family: ui-monospace, monospace; }
.hg-trace .hg-shape { color: #57606a; font-family: ui-monospace, monospace; }
.hg-trace .hg-ok { color: #1a7f37; }
.hg-trace .hg-bad { color: #cf222e; font-weight: 700; }
.hg-trace .hg-note { margin: 0.2rem 0; color: #424a53; }
.hg-trace .hg-formula { margin: 0.5rem 0 0.5rem 1rem; }
.hg-trace .hg-formula math { font-size: 1.3rem; math-style: normal; }
.hg-trace table.hg-matrix { border-collapse: collapse; font-family: ui-monospace, monospace;
  font-size: 0.85rem; margin: 0.3rem 0; border-left: 2px solid #57606a;
  border-right: 2px solid #57606a; }
.hg-trace table.hg-matrix td { padding: 0.05rem 0.45rem; text-align: right; }
.hg-trace table.hg-matrix td.hg-neg { color: #0550ae; }
.hg-trace table.hg-inputs td, .hg-trace table.hg-inputs th { padding: 0.2rem 0.6rem;
  vertical-align: top; text-align: left; }
.hg-trace .hg-summary { font-family: ui-monospace, monospace; font-size: 0.85rem;
  margin: 0.3rem 0; }
.hg-trace .hg-check { font-size: 0.9rem; margin: 0.2rem 0; }
.hg-trace .hg-worked { font-size: 0.9rem; margin: 0.3rem 0; }
.hg-trace .hg-worked code { white-space: normal; }
.hg-trace .hg-verdict { font-weight: 700; margin: 1rem 0; }
.hg-trace .hg-image { display: block; margin: 0.2rem 0 0.4rem; border: 1px solid #d0d7de; }
"""


NEG_CELL = '<td class="hg-neg">'


def _html_matrix(a, decimals):
    rows = []
    for r in _rows(a):
        cells = "".join((NEG_CELL if v < 0 else "<td>") + escape(_number(v, decimals)) + "</td>"
                        for v in r)
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="hg-matrix">{"".join(rows)}</table>'


def _html_value(a, decimals, batch_label="example"):
    if _is_large(a):
        lines = _summary_lines(a, decimals)
        return "".join(f'<div class="hg-summary">{escape(line)}</div>' for line in lines)
    if a.ndim <= 2:
        return _html_matrix(a, decimals)
    parts = []
    for n, block in enumerate(a):
        parts.append(f'<div class="hg-summary">{batch_label} {n}</div>'
                     + _html_value(block, decimals))
    return "".join(parts)


def _svg_image(x, shape, pixel=4):
    """An image input (one example) drawn as an inline SVG, darkest = smallest value."""
    if shape is None or len(shape) != 2 or x.ndim != 1 or x.size != shape[0] * shape[1]:
        return ""
    lo, hi = float(np.min(x)), float(np.max(x))
    levels = np.zeros(x.shape) if hi <= lo else (x - lo) / (hi - lo)
    rows, cols = shape
    rects = []
    for k in np.flatnonzero(levels > 0):
        g = int(round(255 * levels[k]))
        rects.append(f'<rect x="{k % cols}" y="{k // cols}" width="1" height="1" '
                     f'fill="rgb({g},{g},{g})"/>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="hg-image" width="{cols * pixel}" '
            f'height="{rows * pixel}" viewBox="0 0 {cols} {rows}" shape-rendering="crispEdges">'
            f'<rect width="{cols}" height="{rows}" fill="black"/>{"".join(rects)}</svg>')


def render_html(trace, decimals, standalone):
    ok = "hg-ok" if trace.ok else "hg-bad"
    parts = [f'<div class="hg-trace"><style>{STYLE}</style>',
             "<h2>The derivation with numbers</h2>",
             f"<p><strong>{escape(_headline(trace))}</strong>"
             + (f"<br/>{escape(trace.description)}" if trace.description else "") + "</p>",
             f'<p class="hg-note">{escape(PREAMBLE)}</p>',
             f'<p class="hg-verdict {ok}">{escape(_verdict(trace))}</p>',
             "<h3>The example and the weights</h3>", '<table class="hg-inputs">']
    for name, a in _inputs(trace):
        picture = _svg_image(a, trace.input_shape) if name == "x" else ""
        parts.append(f'<tr><th><code>{escape(name)}</code></th>'
                     f'<td class="hg-shape">{escape(str(tuple(a.shape)))}</td>'
                     f"<td>{picture}{_html_value(a, decimals)}</td></tr>")
    parts.append("</table>")
    for title, steps in _sections(trace):
        parts.append(f"<h3>{escape(title)}</h3>")
        for step in steps:
            fail = "" if step.passed else " hg-fail"
            mark = ('<span class="hg-ok">✓</span>' if step.passed
                    else '<span class="hg-bad">✗</span>')
            anchor = f"step-{step.eq}-{step.name}".replace("/", "-")
            parts.append(
                f'<div class="hg-step{fail}" id="{escape(anchor)}"><div class="hg-head">'
                f'<span class="hg-eq">{escape(step.eq)}</span>'
                f'<code class="hg-name">{escape(step.name)}</code>'
                f'<span class="hg-shape">{escape(str(tuple(step.shape)))}</span>{mark}</div>'
                f'<div class="hg-formula">{step.formula.math(display=False)}</div>'
                f'<p class="hg-note">{escape(step.note)}</p>'
                f"{_html_value(step.value, decimals)}")
            for label, extra in step.also.items():
                parts.append(f'<p class="hg-note">The same, as the chain rule '
                             f"{escape(label)}:</p>{_html_value(extra, decimals)}")
            by_hand = worked(trace, step, decimals)
            if by_hand:
                parts.append(f'<p class="hg-worked">One entry by hand: '
                             f"<code>{escape(by_hand)}</code></p>")
            cls = "hg-ok" if step.passed else "hg-bad"
            parts.append(f'<p class="hg-check {cls}">{escape(_check_line(step))}</p></div>')
    parts.append(f'<p class="hg-verdict {ok}">{escape(_verdict(trace))}</p></div>')
    fragment = "\n".join(parts)
    if not standalone:
        return fragment
    sizes = "-".join(str(s) for s in trace.network["layer_sizes"])
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
            f"<title>handgrad trace of a {escape(sizes)} network</title></head>\n"
            f"<body>\n{fragment}\n</body></html>\n")
