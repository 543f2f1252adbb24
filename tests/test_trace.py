"""handgrad.trace: every step of the derivation against PyTorch autograd, its checks, its views."""

import html.parser
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import handgrad
import handgrad.model as hm
from handgrad.cli import main
from handgrad.model import ACTIVATIONS
from handgrad.tracing import (MAX_BATCH, TRACE_FORMAT, Trace, TraceArgumentError, demo, explain,
                            trace)

ROOT = Path(__file__).resolve().parents[1]
SPEC_NAMES = ["Q", "h", "O", "P", "L", "dL/dP", "dP/dO", "dL/dO", "dL/db2", "dL/dW2", "dL/dh",
              "a", "dL/dQ", "dL/db1", "dL/dW1"]
SPEC_EQS = ["F1", "F2", "F3", "F4", "F5", "B2a", "B1", "B2", "B3", "B4", "B5", "B6a", "B6",
            "B7", "B7"]
NETWORKS = [(), (5,), (6, 4), (4, 5, 3)]


def torch_or_skip():
    """PyTorch, or a skip of this test alone where it is not installed."""
    return pytest.importorskip("torch", reason="PyTorch (the test oracle) is not installed")


def random_case(rng, hidden, activation, batch):
    model = handgrad.MLP(6, hidden, 4, activation=activation, dtype="float64",
                         seed=int(rng.integers(1 << 30)))
    for name, p in model.params.items():  # non-zero biases, so every term of F1/F3 shows
        if name.startswith("b"):
            p[...] = rng.normal(0, 0.3, p.shape)
    if batch:
        return model, rng.normal(size=(batch, 6)) * 1.5, rng.integers(0, 4, size=batch)
    return model, rng.normal(size=6) * 1.5, int(rng.integers(0, 4))


def torch_steps(model, x, y):
    """Every quantity of the trace from PyTorch autograd in float64 (and jacrev for B1)."""
    torch = torch_or_skip()
    acts = {"relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid,
            "identity": lambda t: t}
    act = acts[model.config.activation]
    batched = np.ndim(x) == 2
    X = torch.tensor(np.atleast_2d(np.asarray(x, dtype=np.float64)))
    B, M, K = X.shape[0], model.n_classes, model.n_layers
    Y = torch.zeros(B, M, dtype=torch.float64)
    Y[torch.arange(B), torch.tensor(np.atleast_1d(y))] = 1.0
    params = {k: torch.tensor(v.astype(np.float64), requires_grad=True)
              for k, v in model.params.items()}
    spec = K == 2
    name = (lambda base, l: base) if spec else (lambda base, l: f"{base}{l}")
    out, keep = {}, {}
    A = X
    for l in range(1, K + 1):
        Q = A @ params[f"W{l}"].T + params[f"b{l}"]
        if l < K:
            Q.retain_grad()
            h = act(Q)
            h.retain_grad()
            keep[name("Q", l)], keep[name("h", l)] = Q, h
            Qd = Q.detach().requires_grad_()
            (a,) = torch.autograd.grad(act(Qd).sum(), Qd)  # the activation's derivative
            out[name("a", l)] = a
            A = h
        else:
            O = Q
            O.retain_grad()
    P = torch.softmax(O, dim=1)
    P.retain_grad()
    L = -(Y * torch.log(P)).sum() / B
    L.backward()
    out.update({k: v for k, v in keep.items()})
    out["O"], out["P"], out["L"] = O, P, L
    # ∂L/∂P with P a leaf (F5 alone), the softmax Jacobian by jacrev, one example at a time
    Pleaf = P.detach().requires_grad_()
    (out["dL/dP"],) = torch.autograd.grad(-(Y * torch.log(Pleaf)).sum() / B, Pleaf)
    jac = torch.func.vmap(torch.func.jacrev(lambda o: torch.softmax(o, dim=0)))
    out["dP/dO"] = jac(O.detach())
    out["dL/dO"] = O.grad
    for k, v in keep.items():
        out[f"dL/d{k}"] = v.grad
    for k, v in params.items():
        out[f"dL/d{k}"] = v.grad
    result = {}
    for k, v in out.items():
        v = v.detach().numpy()
        per_example = not (k == "L" or k.startswith(("dL/dW", "dL/db")))
        result[k] = v[0] if (per_example and not batched) else v
    return result


# --------------------------------------------------------------------------- #
# The steps: names, order, equation ids
# --------------------------------------------------------------------------- #


def test_the_specification_network_has_exactly_the_issue_s_steps():
    model, x, y = demo()
    t = trace(model, x, y)
    assert t.names == SPEC_NAMES
    assert [s.eq for s in t.steps] == SPEC_EQS
    shapes = {"Q": (4,), "h": (4,), "O": (3,), "P": (3,), "L": (), "dL/dP": (3,),
              "dP/dO": (3, 3), "dL/dO": (3,), "dL/db2": (3,), "dL/dW2": (3, 4), "dL/dh": (4,),
              "a": (4,), "dL/dQ": (4,), "dL/db1": (4,), "dL/dW1": (4, 3)}
    assert {s.name: s.shape for s in t.steps} == shapes
    assert t["dL/dW2"].latex == (r"\frac{\partial L}{\partial W^{2}}="
                                 r"\frac{\partial L}{\partial O}\, h^{\top}")
    assert t["Q"].text == "Q = W¹ x + b¹"


def test_deeper_networks_number_their_layers_and_repeat_b5_to_b7():
    model = handgrad.MLP(5, (4, 3), 2, seed=0)
    t = trace(model, np.ones(5), 1)
    assert t.names == ["Q1", "h1", "Q2", "h2", "O", "P", "L", "dL/dP", "dP/dO", "dL/dO",
                       "dL/db3", "dL/dW3", "dL/dh2", "a2", "dL/dQ2", "dL/db2", "dL/dW2",
                       "dL/dh1", "a1", "dL/dQ1", "dL/db1", "dL/dW1"]
    assert [s.eq for s in t.steps][10:] == ["B3", "B4", "B5", "B6a", "B6", "B7", "B7",
                                            "B5", "B6a", "B6", "B7", "B7"]
    assert t["Q2"].text == "Q² = W² h¹ + b²" and t["dL/dh1"].text == "∂L/∂h¹ = (W²)ᵀ ∂L/∂Q²"
    assert t["Q2"].layer == 2 and t["dL/dW3"].layer == 3
    logistic_regression = trace(handgrad.MLP(5, (), 3, seed=0), np.ones(5), 0)
    assert logistic_regression.names == ["O", "P", "L", "dL/dP", "dP/dO", "dL/dO", "dL/db1",
                                         "dL/dW1"]
    assert logistic_regression["dL/dW1"].text == "∂L/∂W¹ = (∂L/∂O) xᵀ"


def test_every_equation_id_is_listed_in_the_derivation():
    doc = (ROOT / "docs" / "derivation.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| (F\d|B\d+[a-z]?) \|", doc, flags=re.M))
    used = set()
    for hidden in NETWORKS:
        for act in ACTIVATIONS:
            used |= {s.eq for s in trace(handgrad.MLP(3, hidden, 3, activation=act, seed=0),
                                         np.ones(3), 0)}
    assert used <= listed, f"ids missing from docs/derivation.md: {sorted(used - listed)}"
    assert {"B2a", "B6a"} <= used


# --------------------------------------------------------------------------- #
# Values against PyTorch autograd; checks pass on sound code
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("batch", [None, 3])
@pytest.mark.parametrize("hidden", NETWORKS, ids=lambda h: "x".join(map(str, h)) or "none")
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_step_equals_pytorch_autograd(activation, hidden, batch):
    rng = np.random.default_rng(abs(hash((activation, hidden, batch))) % 2**32)
    model, x, y = random_case(rng, hidden, activation, batch)
    expected = torch_steps(model, x, y)
    t = trace(model, x, y)
    assert set(t.names) == set(expected)
    for step in t:
        np.testing.assert_allclose(step.value, expected[step.name], rtol=1e-10, atol=1e-13,
                                   err_msg=f"{step.eq} {step.name}")
    # B2's product through the Jacobian is P − y
    (chain,) = t["dL/dO"].also.values()
    np.testing.assert_allclose(chain, expected["dL/dO"], rtol=1e-10, atol=1e-13)
    assert t.ok, [(s.name, s.check.error) for s in t.failed]


@pytest.mark.parametrize("scale", [0.3, 3.0, 10.0])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_checks_pass_on_sound_code_across_scales(activation, scale):
    """Larger inputs saturate softmax and units: the checks' noise floors keep them ✓."""
    rng = np.random.default_rng(int(scale * 10) + len(activation))
    for hidden, batch in [((7,), None), ((6, 5), 4), ((20, 10), None)]:
        model, x, y = random_case(rng, hidden, activation, batch)
        t = trace(model, x * scale, y)
        assert t.ok, [(s.name, f"{s.check.error:.1e}") for s in t.failed]
        for step in t:
            assert step.check.checked >= 1 or step.check.entries == 0


def test_soft_targets_are_traced_and_rescaled_to_sum_to_one():
    torch = torch_or_skip()
    model, x, _ = random_case(np.random.default_rng(3), (5,), "tanh", None)
    y = np.array([0.1, 0.6, 0.2, 0.10001])  # sums to 1.00001: within the model's tolerance
    t = trace(model, x, y)
    assert t.ok
    np.testing.assert_allclose(t.y.sum(), 1.0, rtol=0, atol=1e-15)
    O = torch.tensor(t["O"].value, requires_grad=True)
    loss = -(torch.tensor(t.y) * torch.log_softmax(O, dim=0)).sum()
    loss.backward()
    np.testing.assert_allclose(t["dL/dO"].value, O.grad.numpy(), rtol=1e-12)
    assert t.loss == pytest.approx(float(loss.detach()), rel=1e-13)


def test_a_unit_exactly_at_the_relu_kink_is_checked_from_its_inactive_side():
    model = handgrad.MLP(3, 4, 3, dtype="float64", seed=1)
    model.params["W1"][2] = 0.0  # unit 2: Q = 0 exactly for every input
    model.params["b1"][...] = 0.0
    t = trace(model, np.array([0.5, -1.0, 2.0]), 1)
    assert t["Q"].value[2] == 0 and t["a"].value[2] == 0  # a = 1[Q > 0]
    assert t.ok, [(s.name, s.check.error) for s in t.failed]
    # the gradients of the dead unit's parameters are 0 and checked, not skipped
    assert t["dL/db1"].check.checked == 4 and t["dL/db1"].value[2] == 0


def test_a_float32_model_is_traced_in_float64_with_its_exact_weights():
    model = handgrad.MLP(6, 5, 3, dtype="float32", seed=2)
    x = np.random.default_rng(2).normal(size=6)
    t32, t64 = trace(model, x, 1), trace(model.copy(dtype="float64"), x, 1)
    for a, b in zip(t32, t64):
        assert a.value.dtype == np.float64
        np.testing.assert_array_equal(a.value, b.value)
    assert t32.network["dtype"] == "float32"


def test_large_steps_check_a_sample_including_their_largest_entries():
    rng = np.random.default_rng(0)
    model = handgrad.MLP(40, 30, 5, dtype="float64", seed=0)
    t = trace(model, rng.normal(size=40), 2, max_checks=50)
    step = t["dL/dW1"]
    assert step.check.entries == 1200 and step.check.checked == 50
    checked = ~np.isnan(step.check.value)
    assert checked.sum() == 50
    largest = np.argsort(-np.abs(step.value).ravel())[:12]
    assert checked.ravel()[largest].all()
    assert t["dL/db2"].check.checked == 5  # small steps are checked whole
    assert t.ok


def test_an_underflowed_probability_gives_an_infinite_b2a_that_checks():
    model = handgrad.MLP(3, 4, 3, dtype="float64", seed=0)
    model.params["W2"][...] *= 1e4
    x = np.array([1.0, -2.0, 0.5])
    target = int(np.argmin(model.predict_proba(x[None])[0]))
    t = trace(model, x, target)
    assert t["P"].value[target] == 0.0 and np.isneginf(t["dL/dP"].value[target])
    assert np.isfinite(t.loss) and t.ok


# --------------------------------------------------------------------------- #
# Planted errors: one backward (or forward) line broken on purpose
# --------------------------------------------------------------------------- #


def first_failure(t):
    failed = [s.name for s in t.failed]
    return failed[0] if failed else None


def test_a_broken_b4_line_is_marked_and_nothing_before_it(monkeypatch):
    real = hm.linear_backward

    def broken(G, X, W, dW, db, dX=None, ones=None, columns=None):
        out = real(G, X, W, dW, db, dX, ones, columns)
        if dW is not None:
            np.matmul(G.T, X, out=dW)
            dW *= 1.001  # B4 / B7 off by 0.1%
        return out

    monkeypatch.setattr(hm, "linear_backward", broken)
    model, x, y = demo()
    t = trace(model, x, y)
    assert not t.ok
    assert [s.name for s in t.failed] == ["dL/dW2", "dL/dW1"]
    assert t["dL/dW2"].check.error == pytest.approx(1e-3, rel=1e-3)
    text = str(t)
    assert "✗" in text and "FAIL" in text and "dL/dW2" in text.splitlines()[-1]


def test_a_broken_b6_derivative_is_marked_from_a_on(monkeypatch):
    real = hm.activation_backward

    def broken(name, G, Q, h, scratch):
        if name != "tanh":
            return real(name, G, Q, h, scratch)
        np.subtract(1.0, h, out=scratch)  # 1 − h instead of 1 − h²
        G *= scratch
        return G

    monkeypatch.setattr(hm, "activation_backward", broken)
    model, x, y = random_case(np.random.default_rng(5), (5,), "tanh", None)
    t = trace(model, x, y)
    assert first_failure(t) == "a"
    assert [s.name for s in t.failed] == ["a", "dL/dQ", "dL/db1", "dL/dW1"]
    assert t["dL/dh"].passed and t["dL/dW2"].passed


def test_a_broken_b2_is_marked_at_dl_do(monkeypatch):
    def broken(P, target, w, out):
        np.copyto(out, P)
        out[np.arange(len(target)), target] -= 1.0
        return out  # forgets the 1/B weight

    monkeypatch.setattr(hm, "softmax_cross_entropy_backward", broken)
    model, x, y = random_case(np.random.default_rng(6), (5,), "relu", 3)
    t = trace(model, x, y)
    assert first_failure(t) == "dL/dO"
    assert t["dP/dO"].passed and t["dL/dP"].passed


def test_a_broken_forward_line_is_marked_at_its_step(monkeypatch):
    real = hm.linear_forward

    def broken(X, W, b, out):
        np.matmul(X, W.T, out=out)  # F1/F3 without the bias
        return out

    monkeypatch.setattr(hm, "linear_forward", broken)
    model, x, y = demo()
    t = trace(model, x, y)
    assert first_failure(t) == "Q"
    assert real is not broken


# --------------------------------------------------------------------------- #
# JSON, HTML, Markdown, LaTeX, text
# --------------------------------------------------------------------------- #


def test_json_round_trips_exactly():
    model, x, y = random_case(np.random.default_rng(7), (6, 4), "logistic", 2)
    t = trace(model, x, y)
    d = json.loads(json.dumps(t.to_dict(), allow_nan=False))
    assert d["format"] == TRACE_FORMAT and d["ok"] is True
    assert [s["name"] for s in d["steps"]] == t.names
    for sd, step in zip(d["steps"], t.steps):
        assert set(sd) >= {"eq", "name", "shape", "value", "check_error"}
        assert tuple(sd["shape"]) == step.shape
        assert sd["check_error"] == step.check.error
    back = Trace.from_dict(d)
    assert back.to_dict() == d
    for a, b in zip(back, t):
        np.testing.assert_array_equal(a.value, b.value)
        assert (a.eq, a.name, a.latex, a.check.error) == (b.eq, b.name, b.latex, b.check.error)
    assert str(back) == str(t) and back.to_html() == t.to_html()


def test_json_keeps_infinities_and_nans_as_strings():
    model = handgrad.MLP(3, 4, 3, dtype="float64", seed=0)
    model.params["W2"][...] *= 1e4
    x = np.array([1.0, -2.0, 0.5])
    t = trace(model, x, int(np.argmin(model.predict_proba(x[None])[0])))
    text = json.dumps(t.to_dict(), allow_nan=False)  # valid JSON: no bare NaN or Infinity
    assert '"-inf"' in text and '"nan"' in text  # ∂L/∂P = −∞; its product with B1 is ∞·0
    back = Trace.from_dict(json.loads(text))
    np.testing.assert_array_equal(back["dL/dP"].value, t["dL/dP"].value)


def test_from_dict_refuses_what_is_not_a_trace():
    with pytest.raises(ValueError, match="not a handgrad trace"):
        Trace.from_dict({"format": "something-else"})
    d = trace(*demo()).to_dict()
    with pytest.raises(ValueError, match="version 99"):
        Trace.from_dict({**d, "format_version": 99})
    broken = json.loads(json.dumps(d))
    del broken["steps"][0]["value"]
    with pytest.raises(ValueError, match="damaged trace"):
        Trace.from_dict(broken)
    broken = json.loads(json.dumps(d))
    broken["steps"][0]["eq"] = "B7"
    with pytest.raises(ValueError, match="does not belong"):
        Trace.from_dict(broken)


class _TagBalance(html.parser.HTMLParser):
    VOID = {"meta", "br", "mspace", "img", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags = [], [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.add(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


@pytest.mark.parametrize("hidden", [(5,), (6, 4)])
def test_html_is_well_formed_mathml_and_fetches_nothing(hidden):
    model, x, y = random_case(np.random.default_rng(8), hidden, "relu", None)
    t = trace(model, x, y)
    page, fragment = t.to_html(), t._repr_html_()
    ET.fromstring(fragment)  # XML-well-formed (raises otherwise)
    root = ET.fromstring(page.split("\n", 1)[1])  # the page after its <!DOCTYPE html>
    assert root.tag == "html"
    mathml = "{http://www.w3.org/1998/Math/MathML}math"
    assert len(root.findall(f".//{mathml}")) == len(t.steps)
    checker = _TagBalance()
    checker.feed(page)
    assert not checker.errors and not checker.stack
    assert "script" not in checker.tags
    assert not re.search(r"\b(src|href)\s*=|@import|url\(", page)
    assert page.count('class="hg-step') == len(t.steps)


def test_views_show_every_step_its_formula_and_its_check():
    model, x, y = demo()
    t = trace(model, x, y)
    text, md, tex = str(t), t.to_markdown(), t.to_latex()
    for step in t:
        assert f"{step.text}" in text
        assert f"### {step.eq} · `{step.name}`" in md and f"$${step.latex}$$" in md
        assert rf"\[ {step.latex} \]" in tex
    checks = [line for line in text.splitlines() if line.startswith("     ✓ ")]
    assert len(checks) == len(t.steps)  # each step's check line
    assert text.splitlines()[-1].startswith("✓ all 15 steps agree")
    # the values at the specified 4 decimals
    assert "[ 1.2600 -0.5500  1.0100 -0.2300]" in text
    assert tex.count(r"\begin{") == tex.count(r"\end{")
    assert tex.startswith(r"\documentclass") and tex.rstrip().endswith(r"\end{document}")


def test_large_arrays_are_summarised_with_norms_and_largest_entries():
    rng = np.random.default_rng(9)
    model = handgrad.MLP(64, 32, 10, seed=0)
    t = trace(model, rng.random(64), 3)
    text = str(t)
    block = text[text.index("dL/dW1  "):]
    norm = np.linalg.norm(t["dL/dW1"].value)
    assert f"‖·‖ = {norm:.4f}" in block
    i, j = np.unravel_index(np.argmax(np.abs(t["dL/dW1"].value)), (32, 64))
    assert f"largest |entries|: [{i}, {j}] {t['dL/dW1'].value[i, j]:.4f}" in block
    assert len(text.splitlines()) < 200  # no 2,048-number dumps


def test_latex_compiles_where_pdflatex_is_installed(tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-recommended)")
    model, x, y = random_case(np.random.default_rng(10), (5,), "logistic", 2)
    wide = handgrad.MLP(64, 32, 10, seed=0)  # long vectors, summarised matrices
    cases = [("demo", trace(*demo())), ("batch", trace(model, x, y)),
             ("wide", trace(wide, np.random.default_rng(0).random(64), 3))]
    for name, t in cases:
        (tmp_path / f"{name}.tex").write_text(t.to_latex(), encoding="utf-8")
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                              f"{name}.tex"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stdout[-2000:]
        assert (tmp_path / f"{name}.pdf").stat().st_size > 1000


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #


def test_bad_inputs_are_refused_with_the_reason():
    model = handgrad.MLP(3, 4, 3, seed=0)
    with pytest.raises(ValueError, match="3 features but the model expects 3|expects 3"):
        trace(model, np.ones(5), 0)
    with pytest.raises(ValueError, match="label 7 is out of range"):
        trace(model, np.ones(3), 7)
    with pytest.raises(ValueError, match="NaN"):
        trace(model, np.array([1.0, np.nan, 0.0]), 0)
    with pytest.raises(ValueError, match=f"at most {MAX_BATCH} examples"):
        trace(model, np.ones((MAX_BATCH + 1, 3)), np.zeros(MAX_BATCH + 1, int))
    with pytest.raises(ValueError, match="a class index or a row of 3"):
        trace(model, np.ones(3), [0, 1])
    with pytest.raises(ValueError, match="must sum to 1"):
        trace(model, np.ones(3), [0.5, 0.2, 0.2])
    with pytest.raises(ValueError, match="one example .D,. or a batch"):
        trace(model, np.ones((1, 1, 3)), 0)
    with pytest.raises(TypeError, match="needs a handgrad.MLP"):
        trace("model.safetensors", np.ones(3), 0)
    with pytest.raises(ValueError, match="max_checks"):
        trace(model, np.ones(3), 0, max_checks=0)
    with pytest.raises(KeyError, match="no step named 'dL/dW9'"):
        trace(model, np.ones(3), 0)["dL/dW9"]


# --------------------------------------------------------------------------- #
# explain(): the demonstration network and examples of a trained model
# --------------------------------------------------------------------------- #


def test_the_demonstration_network_is_small_and_shows_every_case():
    model, x, y = demo()
    assert model.config.layer_sizes == (3, 4, 3) and model.config.activation == "relu"
    for p in list(model.params.values()) + [x]:
        np.testing.assert_array_equal(p, np.round(p, 1))  # one decimal: checkable by hand
    assert np.all(model.params["b1"] != 0) and np.all(model.params["b2"] != 0)
    t = explain()
    a = t["a"].value
    assert 0 < a.sum() < a.size  # active and inactive units both
    assert np.min(np.abs(t["Q"].value)) > 0.1  # no unit near the kink
    assert t.decimals == 4 and t.ok and "seed" in t.description
    assert str(explain()) == str(t)  # fixed: the same every time


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "digits.safetensors"
    assert main(["train", "--epochs", "3", "--hidden", "24", "--quiet", "--out", str(path)]) == 0
    return path


def test_explain_a_test_example_of_the_recorded_data_set(digits_model):
    from handgrad.datasets import load_dataset

    ds = load_dataset("digits")
    model = handgrad.load(digits_model)
    t = explain(digits_model, index=5)
    assert t.ok and t.names == SPEC_NAMES
    np.testing.assert_array_equal(t.x, model.prepare(ds.x_test[5:6])[0].astype(np.float64))
    assert t.y.argmax() == ds.y_test[5]
    assert f"test example 5 of digits (label {ds.y_test[5]})" in t.description
    other = (int(ds.y_test[5]) + 1) % 10
    t2 = explain(model, index=5, label=str(other))  # a class name of the model
    assert t2.y.argmax() == other and "instead" in t2.description
    with pytest.raises(TraceArgumentError, match="index 359 is out of range.*359 examples"):
        explain(digits_model, index=359)
    with pytest.raises(TraceArgumentError, match="neither a class index nor a class name"):
        explain(digits_model, label="cat")


def test_explain_an_input_file(digits_model, tmp_path):
    from handgrad.datasets import load_digits

    images, labels = load_digits()
    model = handgrad.load(digits_model)
    np.save(tmp_path / "one.npy", images[3])
    t = explain(digits_model, tmp_path / "one.npy", label=labels[3])
    np.testing.assert_array_equal(t.x, model.prepare(images[3:4])[0])
    assert t.y.argmax() == labels[3] and "one.npy" in t.description
    t = explain(digits_model, tmp_path / "one.npy")  # no label: the model's prediction
    assert t.y.argmax() == model.predict(model.prepare(images[3:4]))[0]
    assert "the model's prediction" in t.description
    np.save(tmp_path / "rows.npy", images[:4].reshape(4, -1))
    t = explain(digits_model, tmp_path / "rows.npy", index=2, label=0)
    np.testing.assert_array_equal(t.x, model.prepare(images[2:3])[0])
    assert "rows.npy[2]" in t.description
    with pytest.raises(TraceArgumentError, match="holds 4 examples; pick one with index="):
        explain(digits_model, tmp_path / "rows.npy")
    np.save(tmp_path / "wrong.npy", np.ones((2, 5)))
    with pytest.raises(handgrad.DataError, match="shape \\(2, 5\\)"):
        explain(digits_model, tmp_path / "wrong.npy", index=0)
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(handgrad.DataError, match="none of the formats explain reads"):
        explain(digits_model, tmp_path / "x.txt")


def test_explain_an_image(digits_model, tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    from PIL import ImageDraw

    img = Image.new("L", (60, 80), 255)
    ImageDraw.Draw(img).line([(30, 10), (30, 70)], fill=0, width=8)  # a "1"
    img.save(tmp_path / "one.png")
    t = explain(digits_model, tmp_path / "one.png", label=1)
    assert t.ok and t.y.argmax() == 1 and t.x.shape == (64,)
    assert 0 <= t.x.min() and t.x.max() <= 1.0  # the digits' ÷ 16 scaling


def test_explain_refuses_what_it_cannot_trace(digits_model):
    with pytest.raises(TraceArgumentError, match="needs a MODEL"):
        explain(index=3)
    model = handgrad.MLP(64, 8, 10, seed=0)  # records no data set
    with pytest.raises(handgrad.DataError, match="does not record the data set"):
        explain(model)
    with pytest.raises(handgrad.ModelFileError):
        explain(digits_model.parent / "missing.safetensors")
