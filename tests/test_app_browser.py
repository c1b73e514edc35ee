"""interactdiffusion-app in a real browser: Playwright drives the system Chromium, headless, on localhost.

Draw a subject box, name the triplet, see the "missing box" message, draw the object box, generate (an
image appears, no request leaves localhost), export the scene JSON (the drawn boxes, normalised, within
one pixel), import a scene with a zero-area box (its message appears), import a valid two-interaction
scene (its rows appear). A screenshot of every step is kept
under logs/test-artifacts/app-browser/. Without Chromium (``make chromium`` installs it where apt-get is
available) or the playwright package, the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
from hydra import compose, initialize_config_dir

from interactdiffusion.config_path import REPO_ROOT, config_dir

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO_ROOT / "logs" / "test-artifacts" / "app-browser"
CANVAS = 512
SUBJECT = (60, 100, 250, 480)  # image pixels of the 512x512 canvas, xyxy
OBJECT = (280, 200, 460, 400)


def chromium() -> str:
    """The system Chromium: $CHROMIUM_PATH when set, else /usr/bin/chromium or chromium(-browser) on PATH."""
    chosen = os.environ.get("CHROMIUM_PATH")
    candidates = [chosen] if chosen else ["/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip(f"browser test skipped: no Chromium at {', '.join(c for c in candidates if c) or 'PATH'} "
                "(`make chromium` installs it with apt-get)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium_executable() -> str:
    """Skips (with the reason) before the app starts when there is nothing to drive it with."""
    pytest.importorskip("playwright.sync_api", reason="browser test skipped: pip package playwright")
    return chromium()


@pytest.fixture(scope="module")
def app_url(chromium_executable, tmp_path_factory):
    from interactdiffusion.app.launch import build_app, launch

    out = tmp_path_factory.mktemp("app")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("app", overrides=[f"paths.root_dir={REPO_ROOT}", "device=cpu", "steps=2",
                                        f"app.output_dir={out}", f"app.port={free_port()}"])
    page, model = build_app(cfg, {"backbone": "shapes", "model": "shapes_interactdiffusion"})
    assert model.pipe is not None, model.loaded
    url = launch(page, cfg, block=False)
    yield url
    page.close()


@pytest.fixture
def browser_page(chromium_executable):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_executable, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        page.set_default_timeout(20_000)
        yield page
        browser.close()


class Canvas:
    """Image pixels ↔ screen points of the annotation canvas (the image is fitted and centred in it)."""

    def __init__(self, page):
        self.page = page
        rect = page.locator("#layout canvas").first.bounding_box()
        self.scale = min(rect["width"] / CANVAS, rect["height"] / CANVAS)
        self.left = rect["x"] + (rect["width"] - CANVAS * self.scale) / 2
        self.top = rect["y"] + (rect["height"] - CANVAS * self.scale) / 2

    def drag(self, box):
        x1, y1, x2, y2 = box
        mouse = self.page.mouse
        mouse.move(self.left + x1 * self.scale, self.top + y1 * self.scale)
        mouse.down()
        mouse.move(self.left + x2 * self.scale, self.top + y2 * self.scale, steps=8)
        mouse.up()

    def draw(self, box, label: str):
        """Drag a box, then give it its role in the component's dialog."""
        self.drag(box)
        dialog = self.page.locator("#model-box-edit")
        field = dialog.locator("input[aria-label='Label']")
        field.click()
        field.fill(label)
        dialog.get_by_role("option", name=label, exact=True).click()
        dialog.get_by_role("button", name="OK").click()
        dialog.wait_for(state="hidden")


def pick(page, elem_id: str, value: str):
    field = page.locator(f"#{elem_id} input")
    field.click()
    field.fill(value)
    field.press("Enter")


def status_shows(page, text: str):
    page.locator("#status", has_text=text).wait_for()
    return page.locator("#status").inner_text()


def test_draw_generate_export_and_refuse_in_chromium(app_url, browser_page, tmp_path, capsys):
    page = browser_page
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    shots = iter(range(1, 100))

    def shot(name: str):
        page.screenshot(path=str(ARTIFACTS / f"{next(shots):02d}-{name}.png"), full_page=True)

    host = urlparse(app_url).hostname
    elsewhere = []
    page.on("request", lambda r: elsewhere.append(r.url) if urlparse(r.url).hostname not in (host, None) else None)
    page.goto(app_url)
    page.locator("#layout canvas").wait_for()
    status_shows(page, "Loaded")
    shot("opened")
    canvas = Canvas(page)

    canvas.draw(SUBJECT, "subject 1")
    pick(page, "subject-1", "person")
    pick(page, "action-1", "holding")
    pick(page, "object-1", "umbrella")
    shot("subject-box-and-triplet")
    page.locator("#generate").click()
    assert "has no object box: draw one and label it 'object 1'" in status_shows(page, "Error")
    shot("missing-object-box-refused")

    canvas.draw(OBJECT, "object 1")
    shot("object-box")
    page.locator("#generate").click()
    status_shows(page, "Generated 1 image")
    page.locator("#gallery img").first.wait_for()
    page.locator("#overlay img").first.wait_for()
    shot("generated")

    page.locator("#export").click()
    status_shows(page, "Scene written to")
    with page.expect_download() as download:
        page.locator("#scene-file a").first.click()
    path = tmp_path / "scene.json"
    download.value.save_as(path)
    shot("exported")
    (scene,) = json.loads(path.read_text())
    assert (scene["width"], scene["height"]) == (CANVAS, CANVAS)
    (inter,) = scene["interactions"]
    assert (inter["subject"], inter["action"], inter["object"]) == ("person", "holding", "umbrella")
    for name, drawn in (("subject_box", SUBJECT), ("object_box", OBJECT)):
        pixels = [v * CANVAS for v in inter[name]]
        assert max(abs(a - b) for a, b in zip(pixels, drawn)) <= 1.0, (name, pixels, drawn, ARTIFACTS)
    assert "interactdiffusion-generate" in page.locator("#command textarea").input_value()

    bad = tmp_path / "zero_area.json"
    bad.write_text(json.dumps([{**scene, "interactions": [{**inter, "object_box": [0.5, 0.2, 0.5, 0.6]}]}]))
    with page.expect_file_chooser() as chooser:
        page.locator("#import").click()
    chooser.value.set_files(str(bad))
    text = status_shows(page, "Error")
    assert "interactions[0].object_box" in text and "is empty" in text, text
    shot("zero-area-box-refused")

    second = {"subject": "person", "action": "kicking", "object": "sports ball",
              "subject_box": [0.1, 0.1, 0.3, 0.9], "object_box": [0.6, 0.7, 0.8, 0.9]}
    good = tmp_path / "two.json"
    good.write_text(json.dumps([{**scene, "seed": 1234, "interactions": [inter, second]}]))
    with page.expect_file_chooser() as chooser:
        page.locator("#import").click()
    chooser.value.set_files(str(good))
    status_shows(page, "Imported scene 'scene' from two.json")
    page.locator("#object-2 input").wait_for(state="visible")
    assert page.locator("#object-2 input").input_value() == "sports ball"
    assert page.locator("#seed input").input_value() == "1234"
    shot("imported-two-interactions")
    assert elsewhere == [], f"requests left localhost: {elsewhere}"
    with capsys.disabled():
        print(f"\nbrowser test screenshots: {ARTIFACTS}")
