"""Student-vs-teacher agreement, as the MobileSAM paper measures it.

For each image, the teacher segments a grid of points (its best multi-mask candidate);
from every non-empty teacher mask come three prompts: its bounding box, one point and
two points drawn inside it (seeded). Teacher and student each answer every prompt
with a single mask; the score is the mean IoU per prompt kind, plus the mean squared
error between the two image embeddings. Identical models give 1.0 and 0.

With `clicks` N, each model also gets N correction clicks after the one-point prompt,
as in interactive use (and in `finetune-decoder --click-rounds`): each drawn uniformly
(seeded, the same stream for both models) from where its mask differs from the
teacher's grid mask, labelled as that mask there, with the earlier points kept and its
previous logits as the mask prompt. The score after k clicks is each model's mean IoU
with the teacher's grid mask: the student's curve against the teacher's own.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ImageLoadError
from ..modeling.sam import Sam
from ..predictor import SamPredictor
from ..utils.amg import build_point_grid
from ..utils.boxes import masks_to_boxes
from ..utils.regions import mask_iou
from .sources import list_images

KINDS = ("box", "point", "two_points")


def evaluate(student: Sam, teacher: Sam, images: str, grid: int = 3, seed: int = 0, clicks: int = 0) -> dict:
    """mIoU per prompt kind, embedding MSE and (with `clicks`) both models' mIoU after
    each correction click, over the images of a folder or SA-1B tars."""
    sp, tp = SamPredictor(student), SamPredictor(teacher)
    rng = np.random.default_rng(seed)
    click_rng = np.random.default_rng([seed, 1])  # its own stream: clicks change no other score
    ious: dict[str, list[float]] = {k: [] for k in KINDS}
    clicked: dict[str, list[list[float]]] = {"student": [], "teacher": []}
    mses, failures = [], {}
    for ref in list_images(images):
        try:
            rgb = ref.load()
        except ImageLoadError as exc:
            failures[ref.id] = str(exc)
            continue
        tp.set_image(rgb)
        sp.set_image(rgb)
        mses.append(torch.mean((sp.features - tp.features) ** 2).item())
        h, w = rgb.shape[:2]
        for x, y in build_point_grid(grid) * np.array([w, h]):
            masks, scores, _ = tp.predict(np.array([[x, y]]), np.array([1]))
            mask = masks[int(np.argmax(scores))]
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            picks = rng.choice(len(xs), size=2, replace=len(xs) < 2)
            pts = np.stack([xs[picks], ys[picks]], axis=1).astype(float)
            prompts = {
                "box": {"box": masks_to_boxes(mask[None])[0].astype(float)},
                "point": {"point_coords": pts[:1], "point_labels": np.array([1])},
                "two_points": {"point_coords": pts, "point_labels": np.array([1, 1])},
            }
            for kind, prompt in prompts.items():
                want = tp.predict(**prompt, multimask_output=False)[0][0]
                got = sp.predict(**prompt, multimask_output=False)[0][0]
                ious[kind].append(mask_iou(got, want))
            if clicks:
                stream = int(click_rng.integers(2**32))
                for name, predictor in (("student", sp), ("teacher", tp)):
                    curve = _with_clicks(predictor, mask, pts[:1], clicks, np.random.default_rng(stream))
                    clicked[name].append(curve)
    curves = {k: np.mean(v, axis=0).tolist() if v else None for k, v in clicked.items()}
    return {
        "miou": {k: float(np.mean(v)) if v else None for k, v in ious.items()},
        **({"clicks_miou": curves} if clicks else {}),
        "embedding_mse": float(np.mean(mses)) if mses else None,
        "n_images": len(mses),
        "n_masks": len(ious["box"]),
        "failures": failures,
    }


def _with_clicks(
    predictor: SamPredictor, target: np.ndarray, first: np.ndarray, clicks: int, rng: np.random.Generator
) -> list[float]:
    """IoU with `target` after each of `clicks` correction clicks following the point `first`."""
    coords, labels = first, np.array([1])
    masks, _, logits = predictor.predict(coords, labels, multimask_output=False)
    out = []
    for _ in range(clicks):
        error = masks[0] ^ target
        ys, xs = np.nonzero(error if error.any() else target)
        i = rng.integers(len(xs))
        coords = np.vstack([coords, [[xs[i], ys[i]]]])
        labels = np.append(labels, int(target[ys[i], xs[i]]))
        masks, _, logits = predictor.predict(coords, labels, mask_input=logits, multimask_output=False)
        out.append(mask_iou(masks[0], target))
    return out


def table(result: dict) -> str:
    rows = [f"| {k} | {v:.4f} |" if v is not None else f"| {k} | - |" for k, v in result["miou"].items()]
    mse = result["embedding_mse"]
    return "\n".join(
        [
            f"{result['n_images']} images, {result['n_masks']} teacher masks",
            "| prompt | mIoU |",
            "|---|---|",
            *rows,
            f"| embedding MSE | {mse:.6g} |" if mse is not None else "| embedding MSE | - |",
            *_clicks_table(result.get("clicks_miou")),
        ]
    )


def _clicks_table(curves: dict | None) -> list[str]:
    if not curves or curves["student"] is None:
        return []
    rows = [f"| {k} | {s:.4f} | {t:.4f} |" for k, (s, t) in enumerate(zip(*curves.values()), start=1)]
    return ["", "| clicks after one point | student mIoU | teacher's own |", "|---|---|---|", *rows]
