"""The drawing page in a real browser: Debian's headless Chromium, driven by Playwright, draws digits with the
mouse on the canvas of a running `mnist-edge serve`, uploads a photo, and checks what a person would see.

Skips, saying why, when Chromium (apt-get install chromium) or Playwright (pip) is missing. Playwright's own
browser download is never used: the Debian build is launched by path.
"""

from __future__ import annotations

import math
import shutil

import pytest

from serve_helpers import SAMPLES, Server

pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]' in the checkout")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium)", allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "is_mobile": True, "has_touch": True}

# Strokes in canvas units (0..1), drawn with the mouse: a digit as a person would draw it.
DIGITS = {
    "7": [[(0.25, 0.2), (0.75, 0.2), (0.42, 0.85)]],
    "1": [[(0.5, 0.15), (0.5, 0.85)]],
    "4": [[(0.3, 0.15), (0.25, 0.6), (0.78, 0.6)], [(0.62, 0.3), (0.62, 0.88)]],  # open-topped, as most people write it
}


@pytest.fixture(scope="module")
def server():
    with Server() as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=12)
        page.mouse.up()


def answer(page) -> str:
    """The digit shown, once the answer to everything drawn so far has arrived (each stroke asks anew)."""
    # Locators, not wait_for_function: the page's Content-Security-Policy forbids eval.
    sync_api.expect(page.locator(".result")).to_have_attribute("aria-busy", "false")
    sync_api.expect(page.locator("#status")).to_contain_text("It is a")
    return page.locator("#digit").text_content()


@pytest.mark.parametrize("digit", sorted(DIGITS))
def test_drawn_digit_is_recognized_and_what_the_model_saw_is_shown(server, browser, digit):
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    draw(page, DIGITS[digit])
    assert answer(page) == digit
    bars = page.locator("#top li")
    assert bars.count() == 3 and bars.first.locator(".label").text_content() == digit
    assert page.locator("#status").get_attribute("aria-live") == "polite"
    preview = page.locator("#preview")
    assert preview.is_visible() and preview.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("[preview.naturalWidth, preview.naturalHeight]") == [28, 28]
    page.close()


def test_clear_and_upload_work_from_the_keyboard(server, browser):
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    draw(page, DIGITS["1"])
    assert answer(page) == "1"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "clear"
    page.keyboard.press("Enter")
    assert page.locator("#digit").text_content() == "?" and not page.locator("#preview").is_visible()
    assert page.evaluate(
        "document.getElementById('pad').getContext('2d').getImageData(0, 0, 280, 280).data.every(v => v === 255)"
    )
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "file"  # the upload is the next stop
    page.set_input_files("#file", str(SAMPLES / "paper-3.png"))
    assert answer(page) == "3"
    page.close()


def test_bad_upload_shows_the_servers_error(server, browser, tmp_path):
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    (tmp_path / "notes.png").write_bytes(b"not an image")
    page.set_input_files("#file", str(tmp_path / "notes.png"))
    sync_api.expect(page.locator("#status")).to_have_class("error")
    assert "notes.png: not a supported image format" in page.locator("#status").text_content()
    page.close()


def test_phone_layout_fits_and_draws(server, browser):
    context = browser.new_context(**PHONE)
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] >= 250 and pad["x"] >= 0 and pad["x"] + pad["width"] <= 390
    draw(page, DIGITS["7"])
    assert answer(page) == "7"
    # Buttons big enough for a finger (about 44 CSS pixels).
    assert page.locator("#clear").bounding_box()["height"] >= 40
    context.close()


SMALL_PHONE = {**PHONE, "viewport": {"width": 360, "height": 640}, "device_scale_factor": 2}


def _predict_requests(page) -> list[str]:
    """The POST /predict requests PAGE makes from now on (a list that grows)."""
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/predict" in request.url else None)
    return asked


def test_a_two_stroke_digit_is_answered_once_after_the_pen_rests(server, browser):
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    asked = _predict_requests(page)
    first, second = DIGITS["4"]
    draw(page, [first])
    page.wait_for_timeout(300)  # a person moving to the second stroke: shorter than the pause
    assert asked == [] and page.locator(".result").get_attribute("aria-busy") == "true"
    assert page.locator("#status").text_content() == "Nothing drawn yet."
    draw(page, [second])
    assert answer(page) == "4" and len(asked) == 1
    page.close()


def test_a_stroke_while_an_answer_is_on_its_way_discards_that_answer(server, browser):
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    asked = _predict_requests(page)
    page.route("**/predict*", lambda route: (page.wait_for_timeout(600), route.continue_()))  # a slow network
    shown = "new MutationObserver(() => window.shown.push(digit.textContent)).observe(digit, {childList: true})"
    page.evaluate(f"window.shown = []; {shown}")
    first, second = DIGITS["4"]
    draw(page, [first])
    page.wait_for_timeout(900)  # the pause is over: the first stroke's question is on its way
    draw(page, [second])
    assert answer(page) == "4" and len(asked) == 2
    assert page.evaluate("window.shown") == ["4"]  # the answer to half a 4 was never shown
    page.close()


def test_a_dot_asks_for_a_digit_in_plain_words(server, browser):
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    draw(page, [[(0.5, 0.5)]])
    sync_api.expect(page.locator("#status")).to_have_class("error")
    assert page.locator("#status").text_content() == "Draw a digit \u2013 that was too small to read."
    page.close()


def test_not_a_digit_is_said_so(server, browser):
    """The server's coming "not a digit" answer (digit null), served here by the page's own route."""
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    row = {"file": "drawing.png", "digit": None, "probability": 0.1, "not_digit": 0.9,
           "top": [{"digit": 1, "probability": 0.1}], "preview": "data:image/png;base64,"}
    page.route("**/predict*", lambda route: route.fulfill(status=200, json=[row]))
    draw(page, DIGITS["1"])
    sync_api.expect(page.locator("#status")).to_have_text("That does not look like a digit.")
    assert page.locator("#digit").text_content() != "1"
    page.close()


def _heart(t: float) -> tuple[float, float]:
    y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
    return 0.5 + 0.3 * math.sin(t) ** 3, 0.45 - 0.02 * y


# Shapes a person draws on the page that are not digits: the shipped model itself must say so (no route faked).
NOT_DIGITS = {
    "heart": [[_heart(2 * math.pi * k / 40) for k in range(41)]],
    "star": [[(0.5, 0.1), (0.62, 0.85), (0.15, 0.38), (0.85, 0.38), (0.38, 0.85), (0.5, 0.1)]],
    "spiral": [[(0.5 + (0.02 + k * 0.0065) * math.cos(k * 0.35), 0.5 + (0.02 + k * 0.0065) * math.sin(k * 0.35))
                for k in range(60)]],
}


@pytest.mark.parametrize("shape", sorted(NOT_DIGITS))
def test_a_drawn_shape_is_not_a_digit_says_the_real_model(server, browser, shape):
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    draw(page, NOT_DIGITS[shape])
    sync_api.expect(page.locator("#status")).to_have_text("That does not look like a digit.", timeout=15_000)
    page.close()


def test_the_page_loads_without_a_missing_file_and_has_an_icon(server, browser):
    page = browser.new_page()
    failed: list[str] = []
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    page.goto(f"http://127.0.0.1:{server.port}/")
    page.wait_for_load_state("networkidle")
    assert failed == []
    icon = page.evaluate("document.querySelector('link[rel=icon]').href")
    for url in (icon, f"http://127.0.0.1:{server.port}/favicon.ico"):
        response = page.request.get(url)
        assert response.status == 200 and response.headers["content-type"] == "image/svg+xml"
        assert response.body().startswith(b"<svg")
    page.close()


def test_a_small_phone_shows_pad_buttons_and_the_whole_answer_at_once(server, browser, tmp_path):
    context = browser.new_context(**SMALL_PHONE)
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    draw(page, DIGITS["7"])
    assert answer(page) == "7"
    page.screenshot(path=str(tmp_path / "phone-360x640.png"))  # to look at: pytest --basetemp DIR keeps it
    height = SMALL_PHONE["viewport"]["height"]
    for part in ("#pad", "#clear", ".file-button", "#status", "#digit", "#preview", "#top"):
        box = page.locator(part).bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height, part
    assert page.locator("#pad").bounding_box()["width"] >= 250  # still big enough to draw on with a finger
    context.close()
