"""The page in a real headless Chromium: draw a 7, read the prediction, learn from it.

Uses Debian's ``chromium`` (``.ci/run`` installs it) through Playwright; skips, saying
why, only where no browser can be had. Writes a screenshot of the page to
``test-artifacts/serve-page.png`` (or ``$HANDGRAD_ARTIFACTS``); the README's picture is
that file.
"""

import os
import shutil
from pathlib import Path

import pytest

import handgrad

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install '.[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

CHROMIUM = os.environ.get("HANDGRAD_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("HANDGRAD_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "test-artifacts"))


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set "
                    f"HANDGRAD_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as exc:  # a browser that cannot start here is a skip, not a pass
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {exc}")
        yield b
        b.close()


def probabilities(page):
    return [float(v) for v in page.eval_on_selector_all(
        "#probabilities .prob", "rows => rows.map(r => r.dataset.p)")]


def draw_seven(page):
    """A 7 as two mouse strokes: the top bar, then the diagonal."""
    box = page.locator("#pad").bounding_box()

    def stroke(points):
        x0, y0 = points[0]
        page.mouse.move(box["x"] + x0, box["y"] + y0)
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=12)
        page.mouse.up()

    stroke([(70, 62), (212, 62)])
    stroke([(212, 62), (132, 236)])


def test_draw_a_seven_then_learn_from_it(browser, live, make_app, mnist_model):
    server = live(make_app(mnist_model))
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#probabilities .prob').length === 10")
    assert page.text_content("#prediction") == "?"

    draw_seven(page)
    page.wait_for_function("document.querySelector('#prediction').textContent !== '?'")
    page.wait_for_function("document.querySelector('#probabilities .prob').dataset.p")
    first = page.text_content("#prediction")
    P = probabilities(page)
    assert abs(sum(P) - 1) < 1e-3 and first == str(max(range(10), key=P.__getitem__))
    if handgrad.load(mnist_model).training["data"] == "mnist":  # it reads a clean 7
        assert first == "7", P
    assert page.locator("#hidden-caption").text_content().startswith("Layer 1:")
    assert page.locator("#units canvas").count() == 8

    # pick a label it does not predict: the derivation shows, every check passing
    target = sorted(range(10), key=P.__getitem__)[-2]
    page.click(f"#labels button[data-label='{target}']")
    page.wait_for_function("document.querySelectorAll('#trace tbody tr').length >= 15")
    names = page.eval_on_selector_all("#trace td.name", "cells => cells.map(c => c.textContent)")
    assert names[:5] == ["Q", "h", "O", "P", "L"] and "dL/dW1" in names
    assert page.locator("#trace td.bad").count() == 0
    assert page.locator("#trace td.ok").count() == len(names)

    # learn from this until the network agrees; its confidence in the label only grows
    p = P[target]
    for step in range(1, 11):
        page.click("#learn")
        page.wait_for_function(
            f"document.querySelector('#steps').textContent.includes('{step} SGD step')")
        now = probabilities(page)
        assert now[target] > p, (step, now[target], p)
        p = now[target]
        # the derivation follows: it is traced again on the copy after this step
        page.wait_for_selector(f"#trace[data-steps='{step}']")
        if page.text_content("#prediction") == str(target):
            break
    assert page.text_content("#prediction") == str(target) != first
    # the derivation is of the same copy: its P (F4) is the probabilities shown
    row = page.eval_on_selector_all(
        "#trace tbody tr", "rows => rows.map(r => [...r.children].map(c => c.textContent))")
    P_traced = next(r for r in row if r[1] == "P")[4].strip("[]…, ").split(", ")
    assert abs(float(P_traced[target]) - probabilities(page)[target]) < 1e-3
    assert "loss" in page.text_content("#learn-status")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "serve-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # "forget my copy" returns to the served model
    page.click("#reset")
    page.wait_for_function(f"document.querySelector('#prediction').textContent === '{first}'")
    assert errors == []
    page.close()


def test_a_pen_stroke_and_clear(browser, live, make_app, digits_model):
    server = live(make_app(digits_model))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#probabilities .prob').length === 10")
    # a pen (pointerType "pen", with pressure) draws a 1 through pointer events
    page.evaluate("""() => {
        const pad = document.getElementById('pad');
        const r = pad.getBoundingClientRect();
        const ev = (type, y) => pad.dispatchEvent(new PointerEvent(type, {
            pointerId: 7, pointerType: 'pen', pressure: 0.8, bubbles: true,
            clientX: r.left + 140, clientY: r.top + y}));
        ev('pointerdown', 40);
        for (let y = 40; y <= 240; y += 10) ev('pointermove', y);
        ev('pointerup', 240);
    }""")
    page.wait_for_function("document.querySelector('#prediction').textContent !== '?'")
    assert page.text_content("#prediction") in [str(k) for k in range(10)]
    assert page.eval_on_selector("#seen", "c => c.width") == 8  # the model's 8×8 view
    page.click("#clear")
    assert page.text_content("#prediction") == "?"
    assert page.is_disabled("#learn")
    page.close()


def test_a_model_of_other_examples_shows_nothing_of_the_one_before(browser, live, make_app,
                                                                    digits_model, iris_model):
    """Drawn with digits, then iris chosen: its classes whole, no answer of digits' left
    (prediction, bars, activations, weights, derivation), no error; the drawing comes back
    with digits."""
    server = live(make_app(digits_model, iris_model))
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#probabilities .prob').length === 10")
    draw_seven(page)
    settled = ("document.querySelector('#status').textContent === 'ready' && "
               "document.querySelector('#probabilities .prob').dataset.p")
    page.wait_for_function(settled)  # the answer for the whole 7, not for its first stroke
    drawn = page.text_content("#prediction")
    page.click("#labels button[data-label='3']")
    page.wait_for_function("document.querySelectorAll('#trace tbody tr').length >= 15")

    page.select_option("#model", "iris")
    page.wait_for_function("document.querySelectorAll('#probabilities .prob').length === 3")
    assert page.is_visible("#notice") and "nothing to draw" in page.text_content("#notice")
    assert page.text_content("#prediction") == "?"
    assert page.text_content("#confidence") == "nothing to draw for this model"
    cells = page.eval_on_selector_all(
        "#probabilities .prob", "rows => rows.map(r => [r.querySelector('.cls').textContent, "
        "r.querySelector('.cls').scrollWidth <= r.querySelector('.cls').clientWidth, "
        "r.querySelector('.pct').textContent, r.dataset.p ?? null])")
    assert cells == [[name, True, "–", None] for name in ("setosa", "versicolor", "virginica")]
    for part in ("#pad", "#seen", "#hidden", "#units", "#labels", "#learn", "#trace"):
        assert not page.is_visible(part), part
    assert page.locator("#units canvas").count() == 0
    assert page.locator("#trace tr").count() == 0
    assert page.get_attribute("#status", "class") in (None, "")
    page.wait_for_timeout(400)  # an answer for digits still on its way must not land
    assert page.text_content("#prediction") == "?" and page.locator("#units canvas").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page-tabular.png"), full_page=True)

    page.select_option("#model", "digits")  # the drawing is still there, and looked at again
    page.wait_for_function("document.querySelectorAll('#probabilities .prob').length === 10")
    page.wait_for_function(settled)
    assert page.text_content("#prediction") == drawn
    assert page.locator("#units canvas").count() == 8
    assert errors == []
    page.close()


def test_an_empty_learning_rate_box_is_named_and_nothing_is_sent(browser, live, make_app,
                                                                 digits_model):
    server = live(make_app(digits_model))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#probabilities .prob').length === 10")
    draw_seven(page)
    page.wait_for_function("document.querySelector('#probabilities .prob').dataset.p")
    page.click("#labels button[data-label='1']")
    page.wait_for_function("document.querySelectorAll('#trace tbody tr').length >= 15")
    sent = []
    page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/learn") else None)
    page.fill("#lr", "")
    page.click("#learn")
    page.wait_for_function("document.querySelector('#status').classList.contains('error')")
    status = page.text_content("#status")
    assert "learning rate must be a number in (0, 10]" in status and "empty" in status
    assert "None" not in status and sent == [] and page.text_content("#steps") == ""
    page.fill("#lr", "0.01")  # a number again: it learns
    page.click("#learn")
    page.wait_for_function("document.querySelector('#steps').textContent.includes('1 SGD step')")
    assert len(sent) == 1
    page.close()
