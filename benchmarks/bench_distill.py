"""Throughput of both distillation stages, data pipeline included, on synthetic weights.

    python benchmarks/bench_distill.py [--img-size 256] [--teacher vit_b] [--images 32]
        [--device cpu|cuda] [--batch-size 8] [--steps 20] [--precision float32|bf16]
        [--compile] [--workers N] [--threads 2]

Writes JPEGs (photos from ../shared/images resized to 1500x1000; SA-1B's are larger,
2250x1500, see bench_decode.py for what that costs a worker) into a temporary folder, caches the
teacher's embeddings of them (`mobilesam distill cache`'s code), then trains the
vit_t student on the cache (`mobilesam distill train`'s code, DataLoader workers and
all). Prints images/s of caching and of training; training's rate is taken after
the first logged steps (warm-up, compilation) from the run's own log.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from mobilesam import build_sam  # noqa: E402
from mobilesam.distill.cache import EmbeddingCache  # noqa: E402
from mobilesam.distill.train import TrainConfig, train  # noqa: E402

PHOTOS = HERE.parent.parent / "shared" / "images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--teacher", default="vit_b")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--precision", default="float32")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        for i in range(args.images):
            img = Image.open(photos[i % len(photos)]).convert("RGB").resize((1500, 1000))
            img.save(root / "images" / f"{i:05d}.jpg", quality=90)
        teacher = build_sam(args.teacher, img_size=args.img_size).to(args.device).eval()
        start = time.perf_counter()
        EmbeddingCache(root / "cache").build(teacher, root / "images", args.teacher)
        cache_rate = args.images / (time.perf_counter() - start)
        cfg = TrainConfig(
            cache=str(root / "cache"),
            images=str(root / "images"),
            out=str(root / "run"),
            img_size=args.img_size,
            steps=args.steps,
            batch_size=args.batch_size,
            warmup_steps=2,
            log_every=1,
            save_every=10**9,
            device=args.device,
            precision=args.precision,
            compile=args.compile,
            workers=args.workers,
        )
        train(cfg)
        with open(root / "run" / "log.csv") as f:
            rates = [float(r["images_per_s"]) for r in csv.DictReader(f)]
    steady = sorted(rates[len(rates) // 4 :])
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")
    print(f"device {args.device}, {args.img_size}-px images, 1500x1000 JPEG sources")
    print(f"teacher caching ({args.teacher}, batch 1): {cache_rate:.2f} images/s")
    print(
        f"student training (vit_t, batch {args.batch_size}, {args.precision}"
        f"{', compiled' if args.compile else ''}): {steady[len(steady) // 2]:.2f} images/s "
        f"(median of steps {len(rates) // 4 + 1}-{len(rates)})"
    )


if __name__ == "__main__":
    main()
