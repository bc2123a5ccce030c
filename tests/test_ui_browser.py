"""`mobilesam ui` in a real browser: Chromium (Debian's package) driven by Playwright,
against the real server (`python -m mobilesam ui -r`), on a folder of two photos, one of
them in a subfolder (named `cam2/2_picture.jpg` in the page and the API).

Screenshots go to tests/artifacts/ui/ (ignored by git; the README's is copied from it).
The server is killed mid-session and restarted: nothing saved is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import IMAGES, SMALL
from PIL import Image

from mobilesam.utils import rle

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts" / "ui"
if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium for the browser tests (apt-get install chromium)")
    pytest.skip("no chromium on this machine", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, folder: Path, checkpoint: Path, out: Path) -> None:
        self.folder = folder
        self.args = [
            sys.executable,
            "-m",
            "mobilesam",
            "ui",
            str(folder),
            "-r",
            "--checkpoint",
            str(checkpoint),
        ]
        self.args += ["--img-size", str(SMALL), "--out", str(out), "--threads", "2"]
        self.proc = None

    def start(self) -> str:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([*self.args, "--port", str(port)], start_new_session=True)
        for _ in range(300):
            try:
                urllib.request.urlopen(self.url + "/api/status", timeout=1)
                return self.url
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the ui server did not start")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def get(self, path: str) -> object:
        with urllib.request.urlopen(self.url + path) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict) -> object:
        req = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory, ckpt_vit_t):
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(IMAGES / "truck.jpg", folder / "1_truck.jpg")
    (folder / "cam2").mkdir()
    Image.open(IMAGES / "picture4.jpg").convert("RGB").save(folder / "cam2" / "2_picture.jpg")
    s = Server(folder, ckpt_vit_t, tmp_path_factory.mktemp("out"))
    s.start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def page(server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1400, "height": 900})
        pg.goto(server.url)
        pg.wait_for_function("window.app && window.app.ready && window.app.img", timeout=60_000)
        yield pg
        browser.close()


def _screen(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y)."""
    return tuple(
        page.evaluate(
            """([x, y]) => {
            const r = canvas.getBoundingClientRect(), d = canvas.width / r.width, v = app.view;
            return [r.left + (x * v.scale + v.ox) / d, r.top + (y * v.scale + v.oy) / d];
        }""",
            [x, y],
        )
    )


def _wait_saved(page, revision: int) -> None:
    page.wait_for_function(f"app.revision >= {revision} && !app.saving", timeout=30_000)


def test_label_two_images_in_the_browser(page, server):
    pycocotools = pytest.importorskip("pycocotools.mask")
    page.uncheck("#hover")
    # 1. A foreground point: a mask appears, drawn on the canvas.
    page.mouse.click(*_screen(page, 500, 375))
    page.wait_for_function("app.latencies.length >= 1 && app.objects[0] && app.objects[0].rle")
    tinted = page.evaluate(
        """() => {
            const grab = () => ctx.getImageData(0, 0, canvas.width, canvas.height).data;
            const withMasks = grab();
            app.drawMasks = false; render();
            const without = grab();
            app.drawMasks = true; render();
            let changed = 0;
            for (let i = 0; i < without.length; i += 4) if (withMasks[i] !== without[i]) changed++;
            return changed / (without.length / 4);
        }"""
    )
    area = page.evaluate("app.objects[0].rle.size[0] * app.objects[0].rle.size[1]")
    fraction = rle.decode(page.evaluate("app.objects[0].rle")).sum() / area
    assert tinted > 0.2 * fraction  # the mask tints the image where it lies
    page.screenshot(path=str(ARTIFACTS / "point.png"))

    # 2. A box for the same object: its saved mask equals the API's for the same prompts.
    x0, y0 = _screen(page, 300, 200)
    x1, y1 = _screen(page, 1100, 800)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    page.wait_for_function("app.latencies.length >= 2 && app.objects[0].box")
    _wait_saved(page, 2)
    saved = server.get("/api/images/1_truck.jpg/annotations")["objects"][0]
    api = server.post(
        "/api/images/1_truck.jpg/predict", {"points": saved["points"], "box": saved["box"], "multimask": True}
    )
    assert saved["rle"] == api["mask"]["rle"] and saved["mask_id"] == api["mask"]["mask_id"]
    assert len(saved["points"]) == 1 and saved["box"] == pytest.approx([300, 200, 1100, 800], abs=2)

    # 3. Another candidate, picked with the keyboard: its mask is the API's for that mask_id.
    other = next(c for c in api["candidates"] if c["mask_id"] != saved["mask_id"])
    page.keyboard.press(str(other["mask_id"]))
    page.wait_for_function(f"app.objects[0].mask_id === {other['mask_id']}")
    assert page.locator("#candidates button.chosen").count() == 1
    _wait_saved(page, 3)
    want = server.post(
        "/api/images/1_truck.jpg/predict",
        {"points": saved["points"], "box": saved["box"], "mask_id": other["mask_id"]},
    )
    assert server.get("/api/images/1_truck.jpg/annotations")["objects"][0]["rle"] == want["mask"]["rle"]

    # 4. A second object, then undo its point: one object with a mask remains.
    page.keyboard.press("n")
    page.mouse.click(*_screen(page, 1300, 700))
    page.wait_for_function("app.objects.length === 2 && app.objects[1].rle")
    _wait_saved(page, 4)
    assert len(server.get("/api/images/1_truck.jpg/annotations")["objects"]) == 2
    page.screenshot(path=str(ARTIFACTS / "two_objects.png"))
    page.keyboard.press("Control+z")
    page.wait_for_function("!app.objects[1] || !app.objects[1].rle")
    _wait_saved(page, 5)
    assert len(server.get("/api/images/1_truck.jpg/annotations")["objects"]) == 1
    page.keyboard.press("Control+y")
    page.wait_for_function("app.objects[1] && app.objects[1].rle")
    _wait_saved(page, 6)
    page.locator("#objects li").nth(1).locator("input").fill("wheel")
    page.locator("#objects li").nth(1).locator("input").press("Enter")  # commits and leaves the field
    _wait_saved(page, 7)

    # 5. Next image and back: the work is still there; the switch back is fast (cached).
    page.keyboard.press("ArrowRight")
    page.wait_for_function("app.name === 'cam2/2_picture.jpg' && app.switches.length >= 2")
    page.mouse.click(*_screen(page, 100, 100))
    page.wait_for_function("app.objects[0] && app.objects[0].rle")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("app.name === '1_truck.jpg' && app.objects.length === 2")
    assert [o["label"] for o in page.evaluate("app.objects.map(o => ({label: o.label}))")] == [
        "object",
        "wheel",
    ]
    switch = page.evaluate("app.switches[app.switches.length - 1]")
    assert switch["cached"]
    page.screenshot(path=str(ARTIFACTS / "page.png"))

    # Segment everything with its knobs: its masks become objects (one undo takes them back).
    page.fill("#everything-form input[name=points_per_side]", "4")
    page.fill("#everything-form input[name=iou_thres]", "0.5")
    page.fill("#everything-form input[name=stability_score_thres]", "0.5")
    page.select_option("#everything-form select[name=decoder_precision]", "bf16")
    with page.expect_request(lambda r: r.url.endswith("/everything") and r.method == "POST") as sent:
        page.click("#everything")
    body = sent.value.post_data_json
    assert body["decoder_precision"] == "bf16" and body["points_per_side"] == 4
    page.wait_for_function("document.getElementById('everything-progress').textContent.includes('masks in')")
    added = page.evaluate("app.objects.length") - 2
    assert added > 0 and page.evaluate("app.objects.slice(2).every(o => o.source === 'everything' && o.rle)")
    page.check("#cutout-soft")  # an everything mask (selected: the last) has no prompts, the run's edge
    with page.expect_download() as download:
        page.click("#export-cutout")
    alpha = np.asarray(Image.open(download.value.path()))[..., 3]
    made = rle.decode(page.evaluate("app.objects[app.selected].rle"))
    assert (alpha >= 128).sum() == made.sum() and ((alpha > 0) & (alpha < 255)).any()
    page.uncheck("#cutout-soft")
    page.keyboard.press("Control+z")
    page.wait_for_function("app.objects.length === 2 && !app.saving")
    page.wait_for_timeout(300)
    page.wait_for_function("!app.saving")

    # 6. Export: one COCO file for the folder, valid for pycocotools.
    coco = page.evaluate("fetch('/api/export/coco').then(r => r.json())")
    assert [c["name"] for c in coco["categories"]] == ["object", "wheel"]
    assert len(coco["annotations"]) == 3
    for ann in coco["annotations"]:
        seg = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
        assert pycocotools.area(seg) == ann["area"]

    # 7. Kill the server mid-session and restart it: everything saved is there.
    before = {n: server.get(f"/api/images/{n}/annotations") for n in ("1_truck.jpg", "cam2/2_picture.jpg")}
    server.kill()
    server.start()
    after = {n: server.get(f"/api/images/{n}/annotations") for n in ("1_truck.jpg", "cam2/2_picture.jpg")}
    assert after == before and len(after["cam2/2_picture.jpg"]["objects"]) == 1


def test_brush_and_eraser_correct_a_mask_in_the_browser(page, server):
    """Brush (B) and eraser (E) on the selected object: each stroke painted by the server
    exactly as `strokes.paint` paints it; undo takes a stroke back; a later point prompt
    keeps the strokes over the new prediction; after a reload the strokes are still there."""
    from mobilesam.ui.strokes import paint

    page.goto(server.url)  # the first test restarted the server on another port
    page.wait_for_function("window.app && window.app.ready && window.app.img", timeout=60_000)
    page.keyboard.press("ArrowRight")
    page.wait_for_function("app.name === 'cam2/2_picture.jpg' && app.objects.length === 1")
    page.uncheck("#hover")
    page.keyboard.press("n")
    page.keyboard.press("b")
    page.fill("#brush-size", "8")
    page.press("#brush-size", "Enter")
    assert page.evaluate("[app.tool, app.brush]") == ["brush", 8]

    def drag(a, b):
        page.mouse.move(*_screen(page, *a))
        page.mouse.down()
        page.mouse.move(*_screen(page, *b), steps=12)
        page.mouse.up()

    def selected():
        return page.evaluate(
            "(({rle, strokes, painted}) => ({rle, strokes, painted}))(app.objects[app.selected])"
        )

    # 1. A brush stroke on a new object: a band of radius 8 from (50, 50) to (150, 50).
    drag((50, 50), (150, 50))
    page.wait_for_function("app.strokes.length >= 1")
    obj = selected()
    (stroke,) = obj["strokes"]
    assert stroke["mode"] == "add" and stroke["radius"] == 8 and len(stroke["points"]) > 2
    px = page.evaluate("canvas.width / canvas.getBoundingClientRect().width / app.view.scale")
    # where the mouse went, to the CSS pixel (here 2.4 image pixels); a point per half radius
    assert np.allclose(stroke["points"][0], [50, 50], atol=px)
    assert np.allclose(stroke["points"][-1], [150, 50], atol=4 + px)
    brushed = rle.decode(obj["rle"])
    assert np.array_equal(brushed, paint(np.zeros(brushed.shape, bool), [stroke]))
    assert abs(brushed.sum() - (100 * 16 + np.pi * 64)) < 0.15 * (100 * 16 + np.pi * 64)

    # 2. The eraser cuts the band in two; undo puts the cut back.
    page.keyboard.press("e")
    drag((100, 30), (100, 70))
    page.wait_for_function("app.strokes.length >= 2")
    obj = selected()
    erased = rle.decode(obj["rle"])
    assert obj["strokes"][1]["mode"] == "erase" and np.array_equal(erased, paint(brushed, obj["strokes"][1:]))
    assert not erased[50, 100] and erased[50, 60] and erased[50, 140]
    page.screenshot(path=str(ARTIFACTS / "brush.png"))
    page.keyboard.press("Control+z")
    page.wait_for_function("app.objects[app.selected].strokes.length === 1")
    assert np.array_equal(rle.decode(selected()["rle"]), brushed)

    # 3. Back to prompts: a point on the same object; its mask is the prediction with the
    # stroke painted over it, as the API computes it, and the brushed band stays.
    page.keyboard.press("Escape")
    assert page.evaluate("app.tool") == "prompt"
    page.mouse.click(*_screen(page, 1000, 700))
    page.wait_for_function("app.objects[app.selected].points.length === 1 && app.objects[app.selected].score")
    obj = selected()
    points = page.evaluate("app.objects[app.selected].points")
    want = server.post(
        "/api/images/cam2/2_picture.jpg/predict",
        {
            "points": points,
            "strokes": obj["strokes"],
            "mask_id": page.evaluate("app.objects[app.selected].mask_id"),
        },
    )
    assert obj["rle"] == want["mask"]["rle"] and rle.decode(obj["rle"])[50, 60:141].all()

    # 4. Saved with its strokes; after a reload the object is as it was.
    page.wait_for_function("!app.saving")
    page.wait_for_timeout(300)
    page.wait_for_function("!app.saving")
    saved = server.get("/api/images/cam2/2_picture.jpg/annotations")["objects"][-1]
    assert saved["strokes"] == obj["strokes"] and saved["rle"] == obj["rle"]
    page.reload()
    page.wait_for_function("window.app && window.app.ready && window.app.img", timeout=60_000)
    page.keyboard.press("ArrowRight")
    page.wait_for_function("app.name === 'cam2/2_picture.jpg' && app.objects.length === 2")
    again = page.evaluate("(({rle, strokes, painted}) => ({rle, strokes, painted}))(app.objects[1])")
    assert again == {"rle": obj["rle"], "strokes": obj["strokes"], "painted": 1}


def test_class_list_in_the_browser(page, tmp_path, ckpt_vit_t):
    """`ui --classes`: each object's label is a choice among the classes; a new object takes
    the class chosen last; a label outside the list (here a detector's box, `--import`ed
    and segmented by the server) is shown as such, not lost, nor is the detector's score.
    Imported images are marked to review until saved; R goes to the next one (a TIFF,
    which Chromium cannot draw: the server sends it as a PNG)."""
    folder, out = tmp_path / "photos", tmp_path / "out"
    folder.mkdir()
    shutil.copy(IMAGES / "truck.jpg", folder / "truck.jpg")
    Image.open(IMAGES / "picture4.jpg").save(folder / "truck_2.tif")  # a TIFF: no browser draws one
    (tmp_path / "classes.txt").write_text("car\nwheel\nperson\n")
    box = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [100, 200, 900, 500], "score": 0.7}
    box2 = {"id": 2, "image_id": 2, "category_id": 3, "bbox": [10, 20, 100, 50]}
    images = [{"id": 1, "file_name": "truck.jpg"}, {"id": 2, "file_name": "truck_2.tif"}]
    coco = {"images": images, "annotations": [box, box2]}
    (tmp_path / "boxes.json").write_text(json.dumps({**coco, "categories": [{"id": 3, "name": "lorry"}]}))
    server = Server(folder, ckpt_vit_t, out)
    server.args += ["--classes", str(tmp_path / "classes.txt"), "--import", str(tmp_path / "boxes.json")]
    server.start()
    try:
        page = page.context.browser.new_page(viewport={"width": 1400, "height": 900})  # the module's browser
        try:
            page.goto(server.url)
            page.wait_for_function("window.app && app.ready && app.img", timeout=60_000)
            page.uncheck("#hover")
            marks = page.locator("#image-list li span")
            assert [marks.nth(i).get_attribute("class") for i in range(2)] == ["review", "review"]
            first = page.locator("#objects li").nth(0).locator("select")
            assert first.input_value() == "lorry"
            assert first.locator("option").all_inner_texts() == [
                "car",
                "wheel",
                "person",
                "lorry (not a class)",
            ]
            # The imported object came with no candidates listed: a key asks for its box's.
            other = 1 if page.evaluate("app.objects[0].mask_id") != 1 else 2
            page.locator("#objects li").nth(0).locator(".swatch").click()
            page.keyboard.press(str(other))
            page.wait_for_function(
                f"app.objects[0].mask_id === {other} && app.objects[0].candidates.length === 3"
            )
            page.keyboard.press("n")
            page.mouse.click(*_screen(page, 500, 375))
            page.wait_for_function("app.objects[1] && app.objects[1].rle")
            assert page.evaluate("app.objects[1].label") == "car"  # the first class to begin with
            page.locator("#objects li").nth(1).locator("select").select_option("wheel")
            page.keyboard.press("n")
            page.mouse.click(*_screen(page, 1300, 700))
            page.wait_for_function("app.objects[2] && app.objects[2].rle && !app.saving")
            page.keyboard.press("Shift+Digit3")  # the selected (new) object becomes a person
            page.keyboard.press("Shift+Digit9")  # no ninth class: nothing changes
            page.wait_for_timeout(300)
            page.wait_for_function("!app.saving")
            saved = server.get("/api/images/truck.jpg/annotations")["objects"]
            assert [o["label"] for o in saved] == ["lorry", "wheel", "person"]
            assert page.evaluate("app.label") == "person"  # and the next new object
            assert saved[0]["box"] == [100, 200, 1000, 700] and saved[0]["box_score"] == 0.7
            assert saved[0]["mask_id"] == other
            assert marks.nth(0).get_attribute("class") == "done"  # saved by a person: reviewed
            page.keyboard.press("r")  # this one is reviewed: on to the next one to review
            page.wait_for_function("app.name === 'truck_2.tif' && app.objects.length === 1")
            # drawn: the server sent the TIFF's pixels as a PNG
            assert page.evaluate("[app.img.naturalWidth, app.img.naturalHeight]") == [2048, 1365]
            page.keyboard.press("r")  # its imported object is right as it is
            page.wait_for_function(
                "document.querySelector('#status').textContent === 'no image left to review'"
            )
            assert [i["review"] for i in server.get("/api/images")] == [False, False]
            assert marks.nth(1).get_attribute("class") == "done"
            page.check("#export-reviewed")  # the folder's exports of the reviewed images only
            kinds = ("coco", "yolo", "labelme", "label-maps", "instance-maps", "label-studio")
            links = [page.get_attribute(f"#export-{k}", "href") for k in kinds]
            assert links == [
                "/api/export/coco?reviewed=true",
                "/api/export/yolo.zip?reviewed=true",
                "/api/export/labelme.zip?reviewed=true",
                "/api/export/label-maps.zip?reviewed=true",
                "/api/export/instance-maps.zip?reviewed=true",
                "/api/export/label-studio.zip?reviewed=true",
            ]
            page.uncheck("#export-reviewed")
            assert page.get_attribute("#export-yolo", "href") == "/api/export/yolo.zip"
            coco = server.get("/api/export/coco")
            assert [c["name"] for c in coco["categories"]] == ["car", "wheel", "person", "lorry"]
        finally:
            page.close()
    finally:
        server.kill()


def test_previous_images_objects_carried_over_in_the_browser(page, server):
    """`P` on an image: the previous image's objects appear here with their labels, each
    prompted by its box; one undo takes them all back."""
    page.goto(server.url)
    page.wait_for_function("window.app && app.ready && app.name === '1_truck.jpg'", timeout=60_000)
    source = [o["label"] for o in server.get("/api/images/1_truck.jpg/annotations")["objects"]]
    assert source
    page.keyboard.press("ArrowRight")
    page.wait_for_function("app.name === 'cam2/2_picture.jpg' && !app.saving")
    before = page.evaluate("app.objects.length")
    page.keyboard.press("p")
    page.wait_for_function(f"app.objects.length === {before + len(source)}")
    added = page.evaluate(f"app.objects.slice({before}).map(o => [o.label, o.source, o.box.length, !!o.rle])")
    assert added == [[label, "propagated", 4, True] for label in source]
    page.wait_for_function("!app.saving && app.revision > 0")
    page.wait_for_timeout(300)
    page.wait_for_function("!app.saving")
    assert len(server.get("/api/images/cam2/2_picture.jpg/annotations")["objects"]) == before + len(source)
    page.keyboard.press("Control+z")
    page.wait_for_function(f"app.objects.length === {before}")
    page.wait_for_timeout(300)
    page.wait_for_function("!app.saving")
    assert len(server.get("/api/images/cam2/2_picture.jpg/annotations")["objects"]) == before


def test_polygon_fills_its_inside_in_the_browser(page, server):
    """Polygon (G): clicked vertices, closed by a click on the first one or a double click,
    fill the selected object exactly as `strokes.paint` fills a closed stroke; Backspace
    takes back a vertex, Esc drops an unfinished polygon."""
    from mobilesam.ui.strokes import paint

    page.goto(server.url)
    page.wait_for_function("window.app && app.ready && app.name === '1_truck.jpg'", timeout=60_000)
    page.uncheck("#hover")
    page.keyboard.press("n")
    page.keyboard.press("g")
    corners = [(300, 300), (600, 320), (560, 650), (320, 600)]
    for corner in [*corners, (800, 800)]:
        page.mouse.click(*_screen(page, *corner))
    page.keyboard.press("Backspace")  # the stray fifth vertex
    assert len(page.evaluate("app.poly")) == 4
    page.mouse.click(*_screen(page, *corners[0]))  # the first vertex closes it
    page.wait_for_function("app.objects[app.selected].painted === 1 && app.objects[app.selected].rle")
    (stroke,) = page.evaluate("app.objects[app.selected].strokes")
    assert stroke["closed"] and stroke["mode"] == "add" and len(stroke["points"]) == 4
    mask = rle.decode(page.evaluate("app.objects[app.selected].rle"))
    assert np.array_equal(mask, paint(np.zeros(mask.shape, bool), [stroke]))
    assert mask[450, 450] and not mask[200, 200] and abs(mask.sum() - 85_400) < 3_000  # the shoelace area

    page.mouse.click(*_screen(page, 900, 200))
    page.mouse.click(*_screen(page, 1000, 200))
    page.keyboard.press("Escape")  # drops the polygon, stays with the tool
    assert page.evaluate("[app.poly, app.tool]") == [None, "polygon"]
    for corner in [(900, 100), (1100, 120)]:
        page.mouse.click(*_screen(page, *corner))
    page.mouse.dblclick(*_screen(page, 1000, 300))  # a third vertex, and closed
    page.wait_for_function("app.objects[app.selected].painted === 2")
    strokes = page.evaluate("app.objects[app.selected].strokes")
    assert len(strokes[1]["points"]) == 3
    assert np.array_equal(
        rle.decode(page.evaluate("app.objects[app.selected].rle")), paint(mask, strokes[1:])
    )
    page.keyboard.press("Shift+G")  # the polygon eraser: a hole in the first polygon
    for corner in [(350, 350), (500, 350), (450, 500)]:
        page.mouse.click(*_screen(page, *corner))
    page.keyboard.press("Enter")
    page.wait_for_function("app.objects[app.selected].painted === 3")
    hole = page.evaluate("app.objects[app.selected].strokes[2]")
    assert hole["mode"] == "erase" and hole["closed"]
    holed = rle.decode(page.evaluate("app.objects[app.selected].rle"))
    assert (
        np.array_equal(holed, paint(mask, [*strokes[1:], hole])) and not holed[400, 450] and holed[550, 550]
    )
    assert page.evaluate("[app.tool, app.polyErase, document.getElementById('tool').value]") == [
        "polygon",
        True,
        "polygon-erase",
    ]
    page.keyboard.press("g")  # from the eraser to the polygon that adds: still a polygon
    assert page.evaluate("[app.tool, app.polyErase]") == ["polygon", False]
    page.keyboard.press("g")  # the same key again: back to prompts
    assert page.evaluate("app.tool") == "prompt"


def _new_square(page, x0: float, y0: float, x1: float, y1: float) -> None:
    """A new object: the square drawn with the polygon tool (closed on its first vertex)."""
    page.keyboard.press("n")
    page.keyboard.press("g")
    for corner in [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]:
        page.mouse.click(*_screen(page, *corner))
    page.wait_for_function("app.objects[app.selected].painted === 1 && app.objects[app.selected].rle")
    page.keyboard.press("g")


def test_vertices_edit_a_masks_outline_in_the_browser(page, server):
    """Vertices (V): the selected mask's outline, its vertices dragged, one added on an edge,
    one removed with Shift+click; Enter makes it the object's mask (the server's paint of
    the edited strokes, prompts dropped), Esc and undo leave the mask as it was."""
    from mobilesam.ui.strokes import paint

    page.goto(server.url)
    page.wait_for_function("window.app && app.ready && app.name === '1_truck.jpg'", timeout=60_000)
    page.uncheck("#hover")
    _new_square(page, 300, 300, 600, 600)
    before = page.evaluate("app.objects[app.selected].rle")

    page.keyboard.press("v")
    page.wait_for_function("app.edit")
    (ring,) = page.evaluate("app.edit.strokes")
    assert ring["mode"] == "add" and ring["closed"] and len(ring["points"]) == 4  # a square's 4 corners
    n_objects = page.evaluate("app.objects.length")
    page.mouse.move(*_screen(page, *ring["points"][0]))
    page.keyboard.press("Delete")  # the vertex under the cursor, not the object
    assert len(page.evaluate("app.edit.strokes[0].points")) == 3
    page.keyboard.press("Escape")  # cancelled: nothing changes
    assert page.evaluate("[app.tool, app.edit, app.objects[app.selected].rle, app.objects.length]") == [
        "prompt",
        None,
        before,
        n_objects,
    ]
    page.keyboard.press("v")
    page.wait_for_function("app.edit")
    page.mouse.click(*_screen(page, *ring["points"][1]))  # a vertex pressed, not moved
    page.keyboard.press("Enter")  # nothing changed: nothing applied (no simplification)
    kept = "(o => [app.tool, o.rle, o.strokes[0].radius])(app.objects[app.selected])"
    assert page.evaluate(kept) == ["prompt", before, 0.5]  # still the polygon's stroke

    page.keyboard.press("v")
    page.wait_for_function("app.edit")
    points = page.evaluate("app.edit.strokes[0].points")
    nearest = lambda x, y: min(points, key=lambda p: (p[0] - x) ** 2 + (p[1] - y) ** 2)  # noqa: E731
    top_right, bottom_left = nearest(600, 300), nearest(300, 600)
    for start, end in ((top_right, (750, 250)), ((450, bottom_left[1]), (450, 700))):  # a vertex; an edge
        page.mouse.move(*_screen(page, *start))
        page.mouse.down()
        page.mouse.move(*_screen(page, *end), steps=4)
        page.mouse.up()
    page.keyboard.down("Shift")
    page.mouse.click(*_screen(page, *bottom_left))
    page.keyboard.up("Shift")
    page.screenshot(path=str(ARTIFACTS / "vertices.png"))
    edited = page.evaluate("app.edit.strokes[0].points")
    assert len(edited) == 4 and bottom_left not in edited
    page.keyboard.press("Control+z")  # inside the edit: the removal taken back, the edit goes on
    assert page.evaluate("[app.tool, app.edit.strokes[0].points.length]") == ["vertices", 5]
    page.keyboard.press("Control+y")
    assert page.evaluate("app.edit.strokes[0].points") == edited
    page.keyboard.press("Enter")
    page.wait_for_function(
        "(o => app.tool === 'prompt' && o.strokes[0].radius < 0.1 && o.painted === 1)(app.objects[app.selected])"
    )
    obj = page.evaluate("app.objects[app.selected]")
    assert obj["points"] == [] and obj["box"] is None and len(obj["strokes"]) == 1
    mask = rle.decode(obj["rle"])
    assert np.array_equal(mask, paint(np.zeros(mask.shape, bool), obj["strokes"]))
    assert mask[280, 680] and mask[650, 450]  # pulled out by the two dragged vertices
    assert not mask[590, 310] and mask[320, 320]  # cut off with the removed corner
    _wait_saved(page, 1)
    saved = page.evaluate("fetch('/api/images/1_truck.jpg/annotations').then(r => r.json())")
    assert saved["objects"][-1]["strokes"] == obj["strokes"]
    page.keyboard.press("Control+z")
    assert page.evaluate("app.objects[app.selected].rle") == before

    # M hides the masks (the photo alone), F fits the image to the view after zooming
    shown = page.evaluate("app.pixelAt(450, 450)")
    page.keyboard.press("m")
    hidden = page.evaluate("app.pixelAt(450, 450)")
    page.keyboard.press("m")
    assert hidden != shown and page.evaluate("app.pixelAt(450, 450)") == shown
    fitted = page.evaluate("({...app.view})")
    page.mouse.move(*_screen(page, 900, 600))
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"app.view.scale > {fitted['scale']} * 1.2")
    page.keyboard.press("f")
    assert page.evaluate("({...app.view})") == fitted

    # "Cutout (PNG)": the selected object on a transparent background, downloaded
    with page.expect_download() as download:
        page.click("#export-cutout")
    assert download.value.suggested_filename.startswith("1_truck_")
    cut = np.asarray(Image.open(download.value.path()))
    selected = rle.decode(before)
    assert cut.shape[2] == 4 and (cut[..., 3] > 0).sum() == selected.sum()
    page.check("#cutout-soft")  # the model's soft edge: a polygon drawn by hand has none
    page.click("#export-cutout")
    page.wait_for_function("document.querySelector('#status').textContent.includes('soft edge')")
    assert page.evaluate("document.querySelector('#status').className") == "error"
    page.keyboard.press("n")  # a point prompt: the model's mask, cut out with its soft edge
    page.mouse.click(*_screen(page, 1000, 500))
    page.wait_for_function("app.objects[app.selected].rle")
    predicted = rle.decode(page.evaluate("app.objects[app.selected].rle"))
    with page.expect_download() as download:
        page.click("#export-cutout")
    alpha = np.asarray(Image.open(download.value.path()))[..., 3]
    assert (alpha >= 128).sum() == predicted.sum() and ((alpha > 0) & (alpha < 255)).any()
    page.uncheck("#cutout-soft")
    page.keyboard.press("Delete")  # the prompted object goes; the edit below starts from the square

    # another object picked in the list while editing: the edits so far applied, its outline next
    first = page.evaluate("app.selected")
    _new_square(page, 900, 700, 1000, 800)
    page.click(f"#objects li:nth-child({first + 1})")
    page.keyboard.press("v")
    page.wait_for_function("app.edit")
    corner = min(
        page.evaluate("app.edit.strokes[0].points"), key=lambda p: (p[0] - 600) ** 2 + (p[1] - 600) ** 2
    )
    page.mouse.move(*_screen(page, *corner))
    page.mouse.down()
    page.mouse.move(*_screen(page, 650, 650), steps=3)
    page.mouse.up()
    page.click(f"#objects li:nth-child({first + 2})")
    page.wait_for_function(f"app.edit && app.edit.obj === app.objects[{first + 1}]")
    page.wait_for_function(
        f"app.objects[{first}].strokes[0].radius < 0.1 && app.objects[{first}].painted === 1"
    )
    assert rle.decode(page.evaluate(f"app.objects[{first}].rle"))[640, 640]  # the dragged corner applied
    page.keyboard.press("Escape")


def test_objects_not_selected_are_painted_where_their_masks_lie(page, server):
    """The objects not being edited are painted from their runs into one layer the size of
    the screen (no canvas per object): a pixel is tinted exactly where a mask lies, with the
    image fitted, zoomed in and zoomed out."""
    name = "cam2/2_picture.jpg"
    info = server.post(f"/api/images/{name}/open", {})
    h, w = info["height"], info["width"]
    masks = np.zeros((3, h, w), bool)
    masks[0, :10, :10] = True  # the selected one, out of the way
    masks[1, h // 4 : h // 2, w // 4 : w // 2] = True
    masks[2, h // 2 : 3 * h // 4, w // 2 : 3 * w // 4] = True
    revision = server.get(f"/api/images/{name}/annotations")["revision"]
    body = {"revision": revision, "objects": [{"label": "x", "rle": rle.encode(m)} for m in masks]}
    req = urllib.request.Request(
        f"{server.url}/api/images/{name}/annotations", json.dumps(body).encode(), method="PUT"
    )
    req.add_header("Content-Type", "application/json")
    urllib.request.urlopen(req).read()
    page.goto(server.url)
    page.wait_for_function("window.app && app.ready", timeout=60_000)
    page.evaluate(f"openImage({json.dumps(name)})")
    page.wait_for_function(f"app.name === {json.dumps(name)} && app.objects.length === 3")
    page.uncheck("#hover")
    fx, fy = np.meshgrid(np.linspace(0.27, 0.73, 9), np.linspace(0.27, 0.73, 9))
    points = [(int(x * w) + 0.5, int(y * h) + 0.5) for x, y in zip(fx.ravel(), fy.ravel())]
    for d in (-12, -6, 6, 12):  # either side of every edge: a misplaced layer shows there first
        points += [(e + d + 0.5, int(0.45 * h) + 0.5) for e in (w // 4, w // 2)]
        points += [(e + d + 0.5, int(0.6 * h) + 0.5) for e in (w // 2, 3 * w // 4)]
        points += [(int(0.4 * w) + 0.5, e + d + 0.5) for e in (h // 4, h // 2)]
        points += [(int(0.6 * w) + 0.5, e + d + 0.5) for e in (h // 2, 3 * h // 4)]
    inside = [bool(masks[1:, int(y), int(x)].any()) for x, y in points]

    def tinted() -> list[bool | None]:
        return page.evaluate(
            """(points) => {
            const r = canvas.getBoundingClientRect(), v = app.view;
            const seen = () => points.map(([x, y]) => app.pixelAt(x, y).join());
            const shown = seen(); app.drawMasks = false; render();
            const bare = seen(); app.drawMasks = true; render();
            return points.map(([x, y], i) => {
                const sx = x * v.scale + v.ox, sy = y * v.scale + v.oy;
                const onScreen = sx >= 0 && sy >= 0 && sx < canvas.width && sy < canvas.height;
                return onScreen ? shown[i] !== bare[i] : null;
            });
        }""",
            points,
        )

    def near_edge(x: float, y: float, margin: float) -> bool:
        return any(abs(x - e) < margin for e in (w // 4, w // 2, 3 * w // 4)) or any(
            abs(y - e) < margin for e in (h // 4, h // 2, 3 * h // 4)
        )

    for zoom in (0, -600, 900):  # fitted, zoomed in, zoomed out
        if zoom:
            page.keyboard.press("f")
            page.mouse.move(*_screen(page, w * 0.45, h * 0.45))
            page.mouse.wheel(0, zoom)
            page.wait_for_timeout(100)
        scale = page.evaluate("app.view.scale")
        got = tinted()
        checked = [
            (g, want)
            for g, want, (x, y) in zip(got, inside, points)
            if g is not None and not near_edge(x, y, 2 + 1 / scale)
        ]
        assert len(checked) > 20 and all(g == want for g, want in checked), (zoom, scale)

    focus = page.evaluate("document.activeElement.id")
    page.keyboard.press("Tab")  # the next object, and round again; the focus stays
    assert page.evaluate("app.selected") == 1
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("[app.selected, document.activeElement.id]") == [2, focus]

    # a mask canvas capped below the image's size: nearest-neighbour samples of the mask
    shown = page.evaluate(
        """(rle) => { const c = maskCanvas(rle, [255, 0, 0], 5000);
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        return [c.width, c.height, Array.from(d.filter((_, i) => i % 4 === 3))]; }""",
        rle.encode(masks[1]),
    )
    cw, ch, alpha = shown
    f = min(1, (5000 / (w * h)) ** 0.5)
    assert (cw, ch) == (max(1, round(w * f)), max(1, round(h * f))) and cw < w
    cols, rows = ((np.arange(n) + 0.5) * size / n for n, size in ((cw, w), (ch, h)))
    want = masks[1][rows.astype(int)][:, cols.astype(int)]
    assert np.array_equal(np.array(alpha).reshape(ch, cw) > 0, want)

    # decoded images kept for going back: at most app.imageCachePx pixels of them (and 4)
    assert page.evaluate("imageCache.size") == 2  # the first image, this one
    page.evaluate("app.imageCachePx = 3e6; imageCache.delete('1_truck.jpg')")  # less than both (2.2 MP, this)
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("app.name === '1_truck.jpg'")
    assert page.evaluate("[...imageCache.keys()]") == ["1_truck.jpg"]

    # the hover preview: the mask under the cursor, asked for at most 2 MP, drawn scaled up
    page.keyboard.press("n")  # a new object: the point under the cursor is the preview's only prompt
    page.check("#hover")
    page.evaluate("app.hoverCount = 0")
    page.mouse.move(*_screen(page, 700, 500))
    page.mouse.move(*_screen(page, 702, 501))
    page.wait_for_function("app.hoverCount >= 1 && app.hover")
    assert page.evaluate("[app.hover.width, app.hover.height]") == [1732, 1154]  # 1800x1200 scaled to 2 MP
    page.evaluate("window.lit = ctx.getImageData(0, 0, canvas.width, canvas.height).data")
    page.keyboard.press("h")  # hover off: the preview goes
    changed = page.evaluate(
        "(now => now.reduce((n, v, i) => n + (v !== lit[i]), 0))"
        "(ctx.getImageData(0, 0, canvas.width, canvas.height).data)"
    )
    assert page.evaluate("app.hoverOn") is False and changed > 0


def test_a_folder_of_hundreds_lists_only_the_rows_in_view(page, server):
    """The image list holds rows for the images in view only, each at its place: scrolling
    draws the others, a click opens one, and opening an image scrolls its row into view.
    (Last in the module: it adds 400 images to the module's folder.)"""
    folder = server.folder
    for i in range(400):
        os.link(folder / "1_truck.jpg", folder / f"x_{i:04d}.jpg")
    page.goto(server.url)
    page.wait_for_function("window.app && app.ready && app.img", timeout=60_000)
    rows = page.locator("#image-list li")
    assert 10 < rows.count() < 40 and rows.nth(0).get_attribute("data-name") == "1_truck.jpg"
    assert page.evaluate("document.getElementById('image-list').offsetHeight") == 402 * 50
    page.evaluate("document.getElementById('images').scrollTop = 200 * 50")
    row = page.locator('#image-list li[data-name="x_0199.jpg"]')
    row.wait_for()
    assert rows.count() < 40
    row.click()
    page.wait_for_function("app.name === 'x_0199.jpg'")
    assert "current" in row.get_attribute("class")
    page.evaluate("openImage('x_0399.jpg')")  # far below: its row is scrolled into view
    page.wait_for_function("app.name === 'x_0399.jpg'")
    last = page.locator('#image-list li[data-name="x_0399.jpg"]')
    last.wait_for()
    assert "current" in last.get_attribute("class") and last.is_visible()
    box = page.evaluate("(r => [r.top, r.bottom])(document.getElementById('images').getBoundingClientRect())")
    top, bottom = page.evaluate(
        "(r => [r.top, r.bottom])(document.querySelector('#image-list li.current').getBoundingClientRect())"
    )
    assert box[0] <= top and bottom <= box[1]
