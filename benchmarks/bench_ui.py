"""`mobilesam ui` latency in a real browser (Chromium via Playwright), server on this machine.

    python benchmarks/bench_ui.py [--checkpoint mobile_sam.pt] [--clicks 20] [--threads 2] [--extra-images N]

Starts `mobilesam ui` on two photos (synthetic weights unless --checkpoint; with
--extra-images, in a folder holding N more, hard links to one photo: a big folder's
per-request costs), then:
- click to mask drawn: from the mouse click to the frame after the mask is painted
  (the page's own `performance.now()` stamps), median and max over --clicks clicks on
  a fresh object each time (each click decodes 3 candidates at full resolution, sends
  them as RLE, decodes and paints the chosen one); the server's share beside it;
- hover preview: mask updates painted per second while the mouse sweeps the image
  (superseded requests are cancelled, so the rate is what the server sustains);
- switching to an image whose embedding is cached: from the key press to the frame
  with the image and its saved objects;
- brush stroke to mask drawn: from releasing the mouse after a 140-pixel stroke to the
  frame after the server's painted mask is drawn (the mask's RLE there and back).
Synthetic weights make noise-like masks whose RLE is far longer than a real mask's, so
the wire and paint costs here are an upper bound.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))
SHARED = HERE.parent.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint")
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--extra-images", type=int, default=0, help="this many more images in the folder")
    args = ap.parse_args()
    from PIL import Image
    from playwright.sync_api import sync_playwright
    from test_ui_browser import Server

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        folder.mkdir()
        shutil.copy(SHARED / "images" / "truck.jpg", folder / "1_truck.jpg")
        Image.open(SHARED / "images" / "picture4.jpg").convert("RGB").save(folder / "2_picture.jpg")
        for i in range(args.extra_images):  # listed after the two measured
            os.link(folder / "1_truck.jpg", folder / f"3_extra_{i:06d}.jpg")
        checkpoint = args.checkpoint
        if checkpoint is None:
            from conftest import synthetic_state_dict

            checkpoint = tmp / "synthetic.pt"
            torch.save(synthetic_state_dict("vit_t"), checkpoint)
        server = Server(folder, Path(checkpoint), tmp / "out")
        server.args[server.args.index("--threads") + 1] = str(args.threads)
        server.start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(server.url)
                page.wait_for_function("window.app && app.ready && app.img", timeout=120_000)
                page.wait_for_timeout(3000)  # let the background encode of the next image finish
                rows = measure(page, args.clicks)
                browser.close()
        finally:
            server.kill()
    size = f", a folder of {args.extra_images + 2} images" if args.extra_images else ""
    print(f"\nmobilesam ui, {args.threads} threads, torch {torch.__version__}, Chromium (headless){size}")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def to_screen(page, x: float, y: float) -> tuple[float, float]:
    return tuple(
        page.evaluate(
            """([x, y]) => { const r = canvas.getBoundingClientRect(), d = canvas.width / r.width, v = app.view;
            return [r.left + (x * v.scale + v.ox) / d, r.top + (y * v.scale + v.oy) / d]; }""",
            [x, y],
        )
    )


def measure(page, clicks: int) -> list[tuple[str, str]]:
    page.uncheck("#hover")
    for i in range(clicks):
        page.keyboard.press("n")
        page.mouse.click(*to_screen(page, 200 + 60 * i, 300 + 20 * (i % 10)))
        page.wait_for_function(f"app.latencies.length >= {i + 1}", timeout=30_000)
        page.wait_for_timeout(150)
    lat = page.evaluate("app.latencies")
    total = [x["ms"] for x in lat]
    server = [x["server_ms"] for x in lat]
    rows = [
        ("click to mask drawn, median (max)", f"{statistics.median(total):.0f} ms ({max(total):.0f} ms)"),
        ("  of which the server (decode, upsample, RLE)", f"{statistics.median(server):.0f} ms"),
    ]
    page.check("#hover")
    page.evaluate("app.hoverCount = 0")
    start = time.perf_counter()
    for i in range(60):  # a 3-second sweep across the image
        page.mouse.move(*to_screen(page, 100 + 25 * i, 300 + 8 * i))
        page.wait_for_timeout(50)
    seconds = time.perf_counter() - start
    count = page.evaluate("app.hoverCount")
    rows.append(("hover preview, masks painted per second while sweeping", f"{count / seconds:.1f}/s"))
    page.uncheck("#hover")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
        page.wait_for_function("app.name === '2_picture.jpg'")
        page.wait_for_timeout(300)
        page.keyboard.press("ArrowLeft")
        page.wait_for_function("app.name === '1_truck.jpg'")
        page.wait_for_timeout(300)
    switches = [s["ms"] for s in page.evaluate("app.switches") if s["cached"]]
    rows.append(
        ("switch to an encoded image, median", f"{statistics.median(switches):.0f} ms (n={len(switches)})")
    )
    page.keyboard.press("b")
    for i in range(10):  # strokes on the last object's mask: it grows
        page.mouse.move(*to_screen(page, 200 + 100 * i, 500))
        page.mouse.down()
        page.mouse.move(*to_screen(page, 300 + 100 * i, 600), steps=8)
        page.mouse.up()
        page.wait_for_function(f"app.strokes.length >= {i + 1}", timeout=30_000)
        page.wait_for_timeout(150)
    strokes = [s["ms"] for s in page.evaluate("app.strokes")]
    rows.append(
        (
            "brush stroke to mask drawn, median (max)",
            f"{statistics.median(strokes):.0f} ms ({max(strokes):.0f} ms)",
        )
    )
    return rows


if __name__ == "__main__":
    main()
