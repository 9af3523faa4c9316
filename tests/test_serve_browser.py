"""``chainrule serve`` driven in real headless Chromium, Debian's ``chromium`` package through
its ``chromedriver`` (never a downloaded browser). A missing browser fails these tests.

Set ``CHAINRULE_SCREENSHOT=path.png`` to keep the page's screenshot (the README's is made so).
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selenium import webdriver  # a test dependency: without it these tests error, never skip
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from _serve import X_TEST, running, trained_model

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).is_file(), (
            f"{path} is missing: install Debian's chromium and chromium-driver"
        )
    profile = tempfile.mkdtemp(prefix="chainrule-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,2200",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


def text(browser: webdriver.Chrome, id_: str) -> str:
    return browser.find_element(By.ID, id_).text


def probabilities(browser: webdriver.Chrome) -> list[float]:
    # read in one go: the page re-creates the bars with every answer
    return browser.execute_script(
        'return [...document.querySelectorAll("#bars .bar")]'
        ".map((b) => Number(b.dataset.probability));"
    )


def open_page(browser: webdriver.Chrome, server: Any) -> None:
    browser.get(server.url)
    wait(lambda: text(browser, "connection") in ("live", "실시간"), what="the event stream")


def draw_with_mouse(browser: webdriver.Chrome) -> None:
    """A 7, stroke by stroke, with the mouse (pointer events)."""
    pad = browser.find_element(By.ID, "pad")
    actions = ActionChains(browser, duration=20)
    actions.move_to_element_with_offset(pad, -80, -90).click_and_hold()
    for dx, dy in [(40, 0), (60, 0), (40, 0), (-20, 40), (-25, 50), (-20, 50), (-15, 40)]:
        actions.move_by_offset(dx, dy)
    actions.release().perform()


def paint_digit(browser: webdriver.Chrome, image: np.ndarray) -> None:
    """An MNIST digit onto the pad, each pixel a 10 x 10 square, then ask the page to predict."""
    browser.execute_script(
        """
        const [pixels] = arguments;
        const pad = document.getElementById("pad"); const ctx = pad.getContext("2d");
        ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, 280, 280);
        for (let i = 0; i < 784; i++) {
          const g = 255 - pixels[i];
          ctx.fillStyle = `rgb(${g},${g},${g})`;
          ctx.fillRect((i % 28) * 10, Math.floor(i / 28) * 10, 10, 10);
        }
        window.chainrulePredict();
        """,
        [int(v) for v in image.ravel()],
    )


@pytest.fixture(scope="module")
def model():
    return trained_model()


def test_drawing_with_the_mouse_gives_probabilities_that_sum_to_1(browser, model):
    with running(model=model.copy()) as server:
        open_page(browser, server)
        assert text(browser, "prediction") == "draw a digit"
        draw_with_mouse(browser)
        digit = wait(lambda: text(browser, "prediction").isdigit() and text(browser, "prediction"))
        time.sleep(0.5)  # the last answer of the stroke
        digit = text(browser, "prediction")
        p = probabilities(browser)
        assert len(p) == 10
        assert sum(p) == pytest.approx(1, abs=1e-6)
        assert int(digit) == int(np.argmax(p))
        # the explanation follows the end of the stroke: a gradient map and hidden activations
        wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#hidden .strip"), what="activations")
        browser.find_element(By.ID, "clear").click()
        wait(lambda: text(browser, "prediction") == "draw a digit", what="a blank pad")


def test_a_known_mnist_digit_gets_the_class_of_model_predict(browser, model):
    with running(model=model.copy()) as server:
        open_page(browser, server)
        for i in range(6):
            expected = int(model.predict(X_TEST[i : i + 1].reshape(1, -1))[0])
            paint_digit(browser, X_TEST[i, 0])
            wait(
                lambda e=expected: (
                    browser.find_element(By.ID, "prediction").get_attribute("data-digit") == str(e)
                ),
                what=f"test digit {i} classified as {expected}",
            )
            assert text(browser, "prediction") == str(expected)


def points(browser: webdriver.Chrome, id_: str) -> int:
    return int(browser.find_element(By.ID, id_).get_attribute("data-points") or 0)


def test_a_seeded_run_shows_curves_tiles_and_galleries_and_a_reload_restores_them(
    browser, tmp_path
):
    with running() as server:
        open_page(browser, server)
        browser.find_element(By.ID, "start").click()
        wait(lambda: points(browser, "loss-curve") >= 40, what="the loss curve")
        wait(lambda: points(browser, "acc-curve") >= 2, what="the accuracy curve")
        wait(
            lambda: len(browser.find_elements(By.CSS_SELECTOR, "#tiles canvas")) == 64, what="tiles"
        )
        wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#recognised .item"), what="gallery")
        assert browser.find_elements(By.CSS_SELECTOR, "#not-recognised .item")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#confusion td")) == 100
        assert len(browser.find_elements(By.CSS_SELECTOR, "#recognised .item .bar")) % 3 == 0
        # the toggle shows the gradients of the last step
        browser.find_element(By.ID, "tiles-toggle").click()
        assert browser.find_element(By.ID, "tiles").get_attribute("data-kind") == "gradients"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#tiles canvas")) == 64
        browser.find_element(By.ID, "tiles-toggle").click()
        # reload mid-run: the curves come back with every point, and keep growing
        before = points(browser, "loss-curve")
        browser.refresh()
        open_page(browser, server)
        wait(lambda: points(browser, "loss-curve") >= before, what="the curves restored")
        wait(
            lambda: len(browser.find_elements(By.CSS_SELECTOR, "#tiles canvas")) == 64,
            what="tiles again",
        )
        assert points(browser, "acc-curve") >= 2
        assert browser.find_elements(By.CSS_SELECTOR, "#recognised .item")
        wait(lambda: points(browser, "loss-curve") > before + 5, what="training to go on")
        if os.environ.get("CHAINRULE_SCREENSHOT"):  # a run long enough to show its curves
            wait(lambda: points(browser, "acc-curve") >= 12, timeout=60, what="a longer run")
        browser.find_element(By.ID, "pause").click()
        wait(lambda: text(browser, "state") == "paused", what="paused")
        draw_with_mouse(browser)
        wait(lambda: text(browser, "prediction").isdigit(), what="a prediction")
        wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#hidden .strip"), what="activations")
        wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#inspector tr"), what="inspector")
        time.sleep(0.3)  # the last frame of the curves
        shot = Path(os.environ.get("CHAINRULE_SCREENSHOT") or tmp_path / "serve.png")
        size = browser.execute_script(
            "const end = document.querySelector('footer').getBoundingClientRect().bottom;"
            "return [document.documentElement.scrollWidth, Math.ceil(end + scrollY)];"
        )
        clip = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        shot_data = browser.execute_cdp_cmd(  # the whole page, and no more
            "Page.captureScreenshot", {"format": "png", "clip": clip}
        )
        png = base64.b64decode(shot_data["data"])
        shot.write_bytes(png)
        assert png.startswith(b"\x89PNG")
        assert len(png) > 50_000


def test_pause_step_and_reset_move_the_step_counter_exactly(browser):
    with running() as server:
        open_page(browser, server)

        def step() -> int:
            return int(text(browser, "step-count"))

        browser.find_element(By.ID, "start").click()
        wait(lambda: step() > 5, what="training")
        browser.find_element(By.ID, "pause").click()
        wait(lambda: text(browser, "state") == "paused", what="paused")
        paused = step()
        assert paused == server.session.step
        time.sleep(0.5)
        assert step() == paused == server.session.step
        for k in (1, 2, 3):
            browser.find_element(By.ID, "step").click()
            wait(lambda k=k: step() == paused + k, what=f"step {paused + k}")
        time.sleep(0.3)
        assert step() == paused + 3 == server.session.step
        seed = browser.find_element(By.ID, "seed")
        seed.clear()
        seed.send_keys("7")
        browser.find_element(By.ID, "reset").click()
        wait(lambda: step() == 0, what="the reset")
        assert server.session.settings.seed == 7
        browser.find_element(By.ID, "step").click()
        wait(lambda: step() == 1, what="one step after the reset")
        # a learning rate that blows the loss up: the banner, and Start refused
        rate = browser.find_element(By.ID, "lr")
        rate.clear()
        rate.send_keys("1000000\n")
        wait(lambda: server.session.optimizer.lr == 1e6, what="the new learning rate")
        for _ in range(5):
            browser.find_element(By.ID, "step").click()
            time.sleep(0.15)
            if browser.find_element(By.ID, "banner").is_displayed():
                break
        wait(lambda: browser.find_element(By.ID, "banner").is_displayed(), what="the banner")
        assert "diverged" in text(browser, "banner")


def test_every_panel_has_help_in_english_and_korean(browser):
    with running() as server:
        open_page(browser, server)
        helps = browser.find_elements(By.CSS_SELECTOR, ".help p")
        assert len(helps) >= 5
        english = [h.get_attribute("textContent") for h in helps]
        assert all(len(t) > 80 for t in english)
        browser.find_element(By.ID, "lang").click()
        korean = [h.get_attribute("textContent") for h in helps]
        assert all(any("\uac00" <= c <= "\ud7a3" for c in t) for t in korean), korean
        assert text(browser, "prediction") == "숫자를 그리세요"
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ko"
        browser.find_element(By.ID, "lang").click()
        assert text(browser, "prediction") == "draw a digit"
        # a refused command is shown on the page
        batch = browser.find_element(By.ID, "batch")
        batch.clear()
        batch.send_keys("0\n")
        wait(lambda: "batch_size must be" in text(browser, "command-error"), what="the message")
