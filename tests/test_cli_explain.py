"""``handgrad explain``: the derivation with numbers on the command line, its HTML in a browser."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import handgrad
import handgrad.model as hm
from handgrad.cli import ExitCode, main
from handgrad.tracing import Trace, explain

ROOT = Path(__file__).resolve().parents[1]
SPEC_NAMES = ["Q", "h", "O", "P", "L", "dL/dP", "dP/dO", "dL/dO", "dL/db2", "dL/dW2", "dL/dh",
              "a", "dL/dQ", "dL/db1", "dL/dW1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small network trained on the embedded 8×8 digits (no MNIST needed)."""
    path = tmp_path_factory.mktemp("explain") / "digits.safetensors"
    assert main(["train", "--epochs", "3", "--hidden", "32", "--quiet", "--out", str(path)]) == 0
    return path


def test_no_arguments_prints_the_whole_derivation_of_a_tiny_network(capsys):
    assert main(["explain"]) == ExitCode.OK
    out = capsys.readouterr().out
    t = explain()
    assert t.network["layer_sizes"] == [3, 4, 3]
    for step in t:
        assert f"{step.eq:<4} {step.name:<6}  {step.text}" in out
        if step.value.ndim == 1:  # every value, to 4 decimals
            assert " ".join(f"{v:.4f}" for v in step.value).replace("-0.0000", "0.0000") in \
                " ".join(out.split())
    assert out.count("one entry by hand: ") == len(SPEC_NAMES)
    assert out.rstrip().splitlines()[-1].startswith("✓ all 15 steps agree")
    assert "\033[" not in out  # no colour when not a terminal


def test_a_fresh_process_runs_it(tmp_path):
    run = subprocess.run([sys.executable, "-m", "handgrad", "explain"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert run.returncode == 0, run.stderr
    assert "dL/dW1" in run.stdout and run.stderr == ""


def test_json_output_parses_and_round_trips(capsys):
    assert main(["explain", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in d["steps"]] == SPEC_NAMES
    assert all(s["check_error"] < 1e-6 for s in d["steps"])
    assert Trace.from_dict(d).to_dict() == d


@pytest.mark.parametrize("fmt, start", [("markdown", "# The derivation with numbers"),
                                        ("latex", r"\documentclass"),
                                        ("html", "<!DOCTYPE html>"),
                                        ("text", "handgrad trace: 3-4-3")])
def test_formats_written_to_a_file(fmt, start, tmp_path, capsys):
    out = tmp_path / f"trace.{fmt}"
    assert main(["explain", "--format", fmt, "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: 15 steps, all checks pass\n"
    text = out.read_text(encoding="utf-8")
    assert text.startswith(start)
    assert text == {"markdown": explain().to_markdown(), "latex": explain().to_latex(),
                    "html": explain().to_html(), "text": explain().to_text()}[fmt]


def test_decimals_change_what_is_shown(capsys):
    assert main(["explain", "--decimals", "2"]) == 0
    out = capsys.readouterr().out
    assert "[ 1.26 -0.55  1.01 -0.23]" in out


def test_a_trained_model_on_a_test_example(trained, capsys):
    from handgrad.datasets import load_dataset

    ds = load_dataset("digits")
    assert main(["explain", str(trained), "--index", "7"]) == 0
    out = capsys.readouterr().out
    assert f"digits.safetensors on test example 7 of digits (label {ds.y_test[7]})" in out
    assert "64-32-10 network (relu, float32)" in out
    assert "‖·‖ = " in out and "largest |entries|" in out  # W1 and its gradient summarised
    assert main(["explain", str(trained), "--index", "7", "--label", "3", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert np.argmax(d["y"]) == 3 and d["ok"]


def test_a_trained_model_on_an_input_file(trained, tmp_path, capsys):
    from handgrad.datasets import load_digits

    images, labels = load_digits()
    np.save(tmp_path / "digit.npy", images[10])
    assert main(["explain", str(trained), str(tmp_path / "digit.npy"), "--label",
                 str(labels[10]), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    model = handgrad.load(trained)
    np.testing.assert_array_equal(d["x"], model.prepare(images[10:11])[0].astype(float))
    assert np.argmax(d["y"]) == labels[10]


@pytest.mark.parametrize("args, code, message", [
    (["explain", "--index", "2"], ExitCode.USAGE, "needs a MODEL"),
    (["explain", "{model}", "--index", "999"], ExitCode.USAGE, "index 999 is out of range"),
    (["explain", "{model}", "--label", "eleven"], ExitCode.USAGE, "neither a class index"),
    (["explain", "{model}", "--label", "10"], ExitCode.USAGE, "label 10 is out of range"),
    (["explain", "{model}", "--index", "-1"], ExitCode.USAGE, "must be 0 or more"),
    (["explain", "--format", "pdf"], ExitCode.USAGE, "invalid choice: 'pdf'"),
    (["explain", "--decimals", "40"], ExitCode.USAGE, "at most 15"),
    (["explain", "{missing}"], ExitCode.DATA, "missing.safetensors"),
    (["explain", "{model}", "{text}"], ExitCode.DATA, "none of the formats explain reads"),
    (["explain", "{model}", "{gone}"], ExitCode.DATA, "no such"),
    (["explain", "--out", "{nodir}"], ExitCode.USAGE, "does not exist"),
])
def test_errors_name_the_problem_with_the_usual_exit_codes(trained, tmp_path, capsys, args,
                                                           code, message):
    (tmp_path / "notes.txt").write_text("not an example")
    fill = {"model": str(trained), "missing": str(tmp_path / "missing.safetensors"),
            "text": str(tmp_path / "notes.txt"), "gone": str(tmp_path / "gone.png"),
            "nodir": str(tmp_path / "no" / "such" / "dir" / "t.html")}
    assert main([a.format(**fill) for a in args]) == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    if "handgrad: error: " in err:  # ours (argparse's own errors show the usage first)
        assert err.count("\n") == 1


def test_a_broken_backward_line_fails_the_command(monkeypatch, capsys):
    real = hm.linear_backward

    def broken(G, X, W, dW, db, dX=None, ones=None, columns=None):
        out = real(G, X, W, dW, db, dX, ones, columns)
        if db is not None:
            db *= 2.0  # B3 / B7 doubled
        return out

    monkeypatch.setattr(hm, "linear_backward", broken)
    assert main(["explain"]) == ExitCode.ERROR
    captured = capsys.readouterr()
    assert "✗" in captured.out
    assert "2 of 15 steps disagree with their independent checks: B3 dL/db2, B7 dL/db1" in \
        captured.err


# --------------------------------------------------------------------------- #
# The HTML page in a real browser
# --------------------------------------------------------------------------- #


def artifacts_dir():
    path = Path(os.environ.get("HANDGRAD_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def chromium_or_skip():
    """Playwright and a Chromium to drive, or a skip saying which is missing."""
    pytest.importorskip("playwright.sync_api",
                        reason="Playwright is not installed (pip install -e '.[test]')")
    for candidate in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(candidate)
        if found:
            return found
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    pytest.skip("no Chromium browser found (apt-get install -y chromium); .ci/run installs it")


def render_in_chromium(page_file, shot, n_steps):
    """Open ``page_file`` in headless Chromium, check the layout, write a full-page screenshot.

    Returns ``(title, requests, errors)``.
    """
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    requests, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            assert page.locator(".hg-step").count() == n_steps
            # MathML is laid out by the browser: every formula has a real size
            sizes = page.eval_on_selector_all(
                "math", "els => els.map(e => [e.getBoundingClientRect().width, "
                        "e.getBoundingClientRect().height])")
            assert len(sizes) == n_steps and all(w > 20 and h > 10 for w, h in sizes), sizes
            # a fraction is drawn as a fraction, taller than one line of text
            frac = page.eval_on_selector("#step-B4-dL-dW2 math",
                                         "e => e.getBoundingClientRect().height")
            line = page.eval_on_selector("#step-B4-dL-dW2 .hg-eq",
                                         "e => e.getBoundingClientRect().height")
            assert frac > 1.3 * line
            # the input drawn as an image
            box = page.eval_on_selector("svg.hg-image", "e => e.getBoundingClientRect().width")
            assert box > 20
            title = page.title()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    from PIL import Image

    with Image.open(shot) as img:
        assert img.width == 1200 and img.height > 3000  # the whole derivation
        gray = np.asarray(img.convert("L"), dtype=float)
    assert gray.std() > 20  # text and tables, not a blank page
    return title, requests, errors


def test_the_html_page_renders_in_chromium(trained, tmp_path):
    page_file = tmp_path / "t.html"
    assert main(["explain", str(trained), "--index", "0", "--format", "html",
                 "--out", str(page_file)]) == 0
    ET.fromstring(page_file.read_text(encoding="utf-8").split("\n", 1)[1])  # well formed
    title, requests, errors = render_in_chromium(page_file, artifacts_dir() / "explain-digits.png",
                                                 15)
    assert title == "handgrad trace of a 64-32-10 network"
    assert requests == [page_file.as_uri()]  # nothing fetched but the page itself
    assert errors == []


@pytest.mark.slow
def test_the_issue_s_mnist_command_renders_in_chromium(mnist_dir, tmp_path, monkeypatch):
    """``handgrad explain mnist.safetensors --index 0 --format html --out t.html`` on real MNIST."""
    chromium_or_skip()
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "mnist", "--hidden", "64", "--epochs", "1",
                 "--batch-size", "128", "--val-fraction", "0", "--quiet",
                 "--out", "mnist.safetensors"]) == 0
    assert main(["explain", "mnist.safetensors", "--index", "0", "--format", "html",
                 "--out", "t.html"]) == 0
    page_file = tmp_path / "t.html"
    title, requests, errors = render_in_chromium(page_file, artifacts_dir() / "explain-mnist.png",
                                                 15)
    assert title == "handgrad trace of a 784-64-10 network"
    assert requests == [page_file.as_uri()] and errors == []


# --------------------------------------------------------------------------- #
# The README's section runs as written
# --------------------------------------------------------------------------- #


def readme_section_blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Seeing the derivation")
    section = text[start:text.index("\n## ", start + 1)]
    blocks = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        blocks[lang] = body
    return blocks


def test_the_readme_commands_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for line in readme_section_blocks()["sh"].splitlines():
        command = shlex.split(line, comments=True)
        assert command[0] == "handgrad"
        assert main(command[1:]) == 0, line
    capsys.readouterr()
    assert (tmp_path / "trace.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    md = (tmp_path / "trace.md").read_text(encoding="utf-8")
    assert "traced with label 7" in md or "(label 7)" in md


def test_the_readme_python_runs_as_written(capsys):
    exec(compile(readme_section_blocks()["python"], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "['Q', 'h', 'O', 'P', 'L', 'dL/dP'" in out and "✓ all 15 steps agree" in out
