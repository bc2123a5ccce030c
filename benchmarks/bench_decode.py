"""How fast distillation's DataLoader delivers images, with the resize in the workers
(PIL, the CPU default) or on the device (the GPU default: the workers only decode).

    python benchmarks/bench_decode.py [--workers 2] [--images 64] [--device cpu|cuda]
        [--size 2250x1500] [--img-size 1024]

Writes JPEGs of SA-1B's typical size (2250 x 1500: shorter side 1500) made from
../shared/images/truck.jpg, then reads the folder twice per mode with persistent
workers and reports the second pass (the first includes the workers' start-up):
images/s, and CPU milliseconds per image in a worker. On a CPU the device resize runs
on the same cores as the workers, so its rate here says little; the worker time is
what carries over to a GPU machine, where `bench_gpu.py` reports these rows too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from mobilesam.distill.inputs import DecodedImages, resize_and_pad  # noqa: E402
from mobilesam.distill.sources import list_images  # noqa: E402


def write_jpegs(folder: Path, photo: Path, n: int, size: tuple[int, int]) -> None:
    image = Image.open(photo).convert("RGB").resize(size)
    for i in range(n):
        image.save(folder / f"{i:05d}.jpg", quality=90)


def loader_rate(folder: Path, workers: int, img_size: int, device: torch.device, on_device: bool) -> float:
    """Images/s of the second pass over `folder`, batches of 16 ready on `device`."""
    loader = torch.utils.data.DataLoader(
        DecodedImages(list_images(folder), img_size, resize=not on_device),
        batch_size=16,
        num_workers=workers,
        collate_fn=list,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    rate = 0.0
    for _ in range(2):
        start, count = time.perf_counter(), 0
        for batch in loader:
            images = [item[1] for item in batch]
            if on_device:
                padded, _ = resize_and_pad(images, img_size, device)
            else:
                padded = torch.stack(images).to(device, non_blocking=True)
            count += len(padded)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rate = count / (time.perf_counter() - start)
    return rate


def worker_ms(folder: Path, img_size: int, on_device: bool, repeat: int = 8) -> float:
    """One worker's milliseconds per image in this process: the median of a second pass
    over `repeat` images (the first pays for fresh memory pages, as a worker does once)."""
    data = DecodedImages(list_images(folder)[:repeat], img_size, resize=not on_device)
    for _ in range(2):
        times = []
        for i in range(len(data)):
            start = time.perf_counter()
            data[i]
            times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", default="2250x1500", help="W x H of the JPEGs")
    ap.add_argument("--img-size", type=int, default=1024)
    ap.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_jpegs(folder, args.shared / "images" / "truck.jpg", args.images, (w, h))
        print(f"{args.images} JPEGs {w}x{h} -> {args.img_size} px, {args.workers} workers, device {device}")
        print("| resize | worker ms per image | loader images/s (second pass) |")
        print("| --- | --- | --- |")
        for on_device in (False, True):
            name = "on the device" if on_device else "in the workers (PIL)"
            ms = worker_ms(folder, args.img_size, on_device)
            rate = loader_rate(folder, args.workers, args.img_size, device, on_device)
            print(f"| {name} | {ms:.1f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
