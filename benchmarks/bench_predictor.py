"""Time `set_image` and `predict` (one box) of the predictor; optionally the official code too.

    python benchmarks/bench_predictor.py [--image truck.jpg] [--threads 2] [--repeats 5]
        [--checkpoint mobile_sam.pt] [--official DIR_CONTAINING_mobile_sam]

Without a checkpoint it uses the parity fixture's synthetic weights (speed does not
depend on the values). Prints milliseconds (median, min-max) per stage with the thread count.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from mobilesam import SamPredictor, build_sam, tune_allocator  # noqa: E402
from mobilesam.bench import BOX, timed  # noqa: E402

sys.path.insert(0, str(HERE))
from _synthetic import synthetic_weights  # noqa: E402


def bench(name: str, predictor, image: np.ndarray, repeats: int) -> dict[str, list[float]]:
    rows = {"set_image": timed(lambda: predictor.set_image(image), repeats)}
    box = torch.as_tensor(predictor.transform.apply_boxes(BOX, predictor.original_size), dtype=torch.float)

    def decode_only():
        with torch.inference_mode():
            if hasattr(predictor, "decode"):  # ours: prompt encoder + decoder, per-image work cached
                predictor.decode(None, None, box, None, False)
                return
            pe = predictor.model.prompt_encoder
            sparse, dense = pe(None, box, None)
            predictor.model.mask_decoder(predictor.features, pe.get_dense_pe(), sparse, dense, False)

    rows["predict (decoder, low-res)"] = timed(decode_only, repeats * 4)
    rows["predict (full-res masks)"] = timed(
        lambda: predictor.predict(box=BOX, multimask_output=False), repeats * 4
    )
    return {f"{name}: {k}": v for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", default=str(HERE.parents[1] / "shared"))
    parser.add_argument("--image", default=None, help="default: shared/images/truck.jpg")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checkpoint")
    parser.add_argument("--official", help="folder containing the official `mobile_sam` package")
    parser.add_argument("--no-tune-allocator", action="store_true", help="keep glibc's default malloc")
    args = parser.parse_args()
    tuned = not args.no_tune_allocator and tune_allocator()
    torch.set_num_threads(args.threads)
    image_path = Path(args.image or Path(args.shared) / "images" / "truck.jpg")
    image = np.asarray(Image.open(image_path).convert("RGB"))

    sam = build_sam("vit_t", args.checkpoint)
    if args.checkpoint is None:
        synthetic_weights(sam, Path(args.shared))
    results = bench("mobilesam", SamPredictor(sam), image, args.repeats)
    if args.official:
        from _official import import_official

        official = import_official(args.official)
        ref = official.sam_model_registry["vit_t"]()
        ref.load_state_dict(sam.state_dict())
        ref.eval()
        results.update(bench("official", official.SamPredictor(ref), image, args.repeats))

    print(
        f"# {image_path.name} {image.shape[1]}x{image.shape[0]}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"allocator tuned: {tuned} (for both implementations)"
    )
    print(f"{'stage':48} {'median ms':>10} {'min':>8} {'max':>8}")
    for key, times in results.items():
        print(f"{key:48} {statistics.median(times):10.1f} {min(times):8.1f} {max(times):8.1f}")


if __name__ == "__main__":
    main()
