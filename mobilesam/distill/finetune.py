"""Fine-tune the mask decoder on a frozen student encoder (the optional second stage).

Target masks come from SA-1B annotations (`prompts="annotations"`: the .json beside
each image) or from the teacher (`prompts="teacher"`: at random points, the teacher's
own prompt encoder and decoder segment its cached embedding; its encoder never runs).
Each image contributes `masks_per_image` targets; target k gets prompt kind k mod 3:
its bounding box (each side jittered by N(0, 10% of the side), at most 20 px, as
SAM), one point, or two points drawn inside it. Single points ask for SAM's three
candidates and only the candidate with the lowest loss learns (SAM's ambiguity rule).

Loss, as SAM: 20 x focal + dice on the mask logits upsampled to the model input,
plus MSE between the predicted and the actual IoU of each candidate. Only the mask
decoder trains; encoder and prompt encoder stay as they are. Optimizer, schedule,
checkpoints, resume, bf16 and torchrun: loop.py.

Correction clicks (`click_rounds` N > 0, SAM's interactive training; it used 8): after
the first prediction, N rounds each add one point drawn uniformly from the error
region of the previous prediction (positive where it missed the target, negative where
it spilled over; inside the target if there is no error), with every earlier prompt
kept and the previous low-resolution logits given as the mask prompt; two more rounds
add no point, one at a random place among them and one at the end. Each round's loss
counts equally; the mask prompt carries no gradient (SAM's "detached" previous mask).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..build import build_sam, resolve_model_type
from ..checkpoint import read_state_dict
from ..errors import MobileSAMError
from ..modeling.sam import Sam
from ..transforms import ResizeLongestSide
from ..utils import rle
from ..utils.amg import masks_to_boxes_torch
from .config import FinetuneConfig
from .inputs import inside, pad_image, sam_input
from .loop import Loop
from .sources import list_images
from .train import DistillData, write_checkpoint

FOCAL_WEIGHT = 20.0


class AnnotatedData(torch.utils.data.Dataset):
    """image id -> (padded uint8 image, (h, w), K target masks K x S x S uint8, K validity flags).

    K annotations are drawn per image (seeded by the id, with replacement when it has
    fewer); an image without any gives K empty targets that do not count in the loss."""

    def __init__(self, images: str, img_size: int, k: int) -> None:
        self.refs = {ref.id: ref for ref in list_images(images) if ref.annotation is not None}
        if not self.refs:
            raise MobileSAMError(f"no SA-1B annotation files (.json beside the images) in {images}")
        self.transform, self.img_size, self.k = ResizeLongestSide(img_size), img_size, k

    def ids(self) -> list[str]:
        return sorted(self.refs)

    def __getitem__(self, image_id: str) -> tuple[torch.Tensor, ...]:
        ref = self.refs[image_id]
        image, size = pad_image(self.transform.apply_image(ref.open()), self.img_size)
        annotations = ref.annotations()
        masks = torch.zeros(self.k, self.img_size, self.img_size, dtype=torch.uint8)
        valid = torch.zeros(self.k)
        if annotations:
            rng = random.Random(image_id)
            for i in range(self.k):
                m = rle.decode(rng.choice(annotations)["segmentation"])
                resized = Image.fromarray(m).resize((int(size[1]), int(size[0])), Image.NEAREST)
                masks[i, : size[0], : size[1]] = torch.from_numpy(np.asarray(resized, dtype=np.uint8))
                valid[i] = float(masks[i].any())
        return image, size, masks, valid


class DecoderTask(nn.Module):
    """Frozen student encoder and prompt encoder, trainable mask decoder, SAM's losses."""

    def __init__(self, sam: Sam, k: int, teacher: Sam | None = None, click_rounds: int = 0) -> None:
        super().__init__()
        self.sam, self.k, self.teacher, self.click_rounds = sam, k, teacher, click_rounds
        for frozen in (sam.image_encoder, sam.prompt_encoder, *([teacher] if teacher else [])):
            frozen.requires_grad_(False)

    def train(self, mode: bool = True) -> DecoderTask:
        super().train(mode)
        for frozen in (self.sam.image_encoder, self.sam.prompt_encoder, self.teacher):
            if frozen is not None:
                frozen.eval()  # frozen batch norm; folded kernels
        return self

    def forward(
        self,
        images: torch.Tensor,
        sizes: torch.Tensor,
        targets: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """targets: B x K x S x S masks, or (prompts from the teacher) its B x 256 x g x g embeddings."""
        with torch.no_grad():
            embeddings = self.sam.image_encoder(sam_input(images, sizes))
            if self.teacher is not None:
                targets, valid = self.teacher_masks(targets.float(), sizes, images.shape[-1])
        b, k, s = targets.shape[0], self.k, images.shape[-1]
        masks = targets.reshape(b * k, s, s).bool()
        valid = valid.reshape(b * k).float()
        rows = torch.arange(b * k, device=masks.device)
        embeddings = embeddings.repeat_interleave(k, dim=0)
        sizes = sizes.repeat_interleave(k, 0)
        losses = []
        for kind in range(3):  # box, one point, two points
            sel = rows[rows % k % 3 == kind]
            losses.append(self.prompt_losses(embeddings[sel], masks[sel], sizes[sel], kind) * valid[sel])
        return {"loss": torch.cat(losses).sum() / valid.sum().clamp(min=1)}

    def prompt_losses(
        self, embeddings: torch.Tensor, masks: torch.Tensor, sizes: torch.Tensor, kind: int
    ) -> torch.Tensor:
        """Per target: SAM's loss for its first prompt of `kind`, averaged with the loss of
        every correction round that follows it (`click_rounds`)."""
        if kind == 0:
            points, labels, boxes = None, None, _jittered_boxes(masks, sizes)
        else:
            points, boxes = _points_inside(masks, kind), None
            labels = torch.ones(points.shape[:2], device=points.device)
        low, logits, iou_pred = self.decode(embeddings, points, labels, boxes, None, kind == 1)
        loss, best = _sam_loss(logits, iou_pred, masks)
        if not self.click_rounds:
            return loss
        rounds, region = self.click_rounds + 2, inside(sizes, masks.shape[-1])
        silent = {int(torch.randint(self.click_rounds + 1, ())), rounds - 1}  # rounds with no new point
        total, rows = loss, torch.arange(len(masks), device=masks.device)
        for r in range(rounds):
            previous, predicted = low[rows, best][:, None].detach(), logits[rows, best].detach() > 0
            if r not in silent:
                point, label = _correction_points(predicted, masks, region)
                points = point if points is None else torch.cat([points, point], dim=1)
                labels = label if labels is None else torch.cat([labels, label], dim=1)
            low, logits, iou_pred = self.decode(embeddings, points, labels, boxes, previous, False)
            loss, best = _sam_loss(logits, iou_pred, masks)
            total = total + loss
        return total / (rounds + 1)

    def decode(
        self,
        embeddings: torch.Tensor,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Low-resolution logits N x M x 4g x 4g, the same upsampled to the model input
        (N x M x S x S) and IoU predictions N x M (M = 3 if `multimask`, else 1)."""
        prompt = None if points is None else (points, labels)
        sparse, dense = self.sam.prompt_encoder(prompt, boxes, mask_input)
        low, iou = self.sam.mask_decoder(
            embeddings, self.sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=multimask
        )
        size = self.sam.prompt_encoder.input_image_size[0]
        return low, F.interpolate(low, (size, size), mode="bilinear", align_corners=False), iou

    def teacher_masks(
        self, embeddings: torch.Tensor, sizes: torch.Tensor, s: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K teacher masks per image (its best of three candidates) at random points inside it."""
        b, k = embeddings.shape[0], self.k
        points = torch.rand(b, k, 2, device=embeddings.device) * sizes.flip(-1)[:, None, :].float()
        sparse, dense = self.teacher.prompt_encoder(
            (points.reshape(b * k, 1, 2), torch.ones(b * k, 1, device=points.device)), None, None
        )
        low, iou = self.teacher.mask_decoder(
            embeddings.repeat_interleave(k, 0),
            self.teacher.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            True,
        )
        best = low[torch.arange(b * k), iou.argmax(dim=1)]
        masks = F.interpolate(best[:, None], (s, s), mode="bilinear", align_corners=False)[:, 0] > 0
        masks = (masks & inside(sizes.repeat_interleave(k, 0), s)).reshape(b, k, s, s)
        return masks, masks.flatten(2).any(dim=2).float()


def _jittered_boxes(masks: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    boxes = masks_to_boxes_torch(masks).float()
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, dim=1)
    noise = (torch.randn_like(boxes) * 0.1 * side).clamp(-20, 20)
    limit = (sizes.flip(-1).float() - 1).repeat(1, 2)
    return torch.minimum((boxes + noise).clamp(min=0), limit)


def _points_inside(masks: torch.Tensor, n: int) -> torch.Tensor:
    """N x n x 2 (x, y) pixels drawn uniformly inside each mask (anywhere if it is empty)."""
    flat = masks.flatten(1).float()
    flat = flat + (flat.sum(dim=1, keepdim=True) == 0).float()
    idx = torch.multinomial(flat, n, replacement=True)
    s = masks.shape[-1]
    return torch.stack([idx % s, idx // s], dim=-1).float()


def _correction_points(
    predicted: torch.Tensor, target: torch.Tensor, region: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per row (N x 1 x 2 pixels (x, y), N x 1 labels): uniform in the error
    region of `predicted` against `target` inside the image (`region`), labelled as the
    target there (1 where the prediction missed it, 0 where it spilled over); inside the
    target if there is no error, anywhere in the image if the target is empty too."""
    error = ((predicted ^ target) & region).flatten(1)
    fallback = torch.where(target.flatten(1).any(1, keepdim=True), target.flatten(1), region.flatten(1))
    where = torch.where(error.any(1, keepdim=True), error, fallback)
    idx = torch.multinomial(where.float(), 1)
    s = target.shape[-1]
    label = target.flatten(1).gather(1, idx).float()
    return torch.stack([idx % s, idx // s], dim=-1).float(), label


def _sam_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt: min over candidates of 20 x focal + dice, plus MSE of all IoU
    predictions; and which candidate that minimum is (the one that learns)."""
    t = target[:, None].float().expand_as(logits)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    focal = ((0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2).mean(dim=(2, 3))
    dice = 1 - (2 * (p * t).sum(dim=(2, 3)) + 1) / (p.sum(dim=(2, 3)) + t.sum(dim=(2, 3)) + 1)
    hard = logits > 0
    inter = (hard & (t > 0)).sum(dim=(2, 3)).float()
    union = (hard | (t > 0)).sum(dim=(2, 3)).float()
    iou_loss = F.mse_loss(iou_pred, inter / union.clamp(min=1), reduction="none").mean(dim=1)
    best = (FOCAL_WEIGHT * focal + dice).min(dim=1)
    return best.values + iou_loss, best.indices


def finetune(
    cfg: FinetuneConfig,
    resume: bool = False,
    stop_after: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict | None:
    """Fine-tune the decoder of cfg.student; writes student.pt (official layout) + student.json."""
    cfg.check()
    torch.manual_seed(cfg.seed)
    student_type = resolve_model_type(cfg.student_type, cfg.student, cfg.img_size)
    sam = build_sam(student_type, cfg.student, img_size=cfg.img_size)
    teacher = None
    if cfg.prompts == "teacher":
        data = DistillData(cfg.cache, cfg.images, cfg.img_size)
        ids = data.cache.ids()
        teacher = build_sam("vit_t", img_size=cfg.img_size)
        parts = ("prompt_encoder.", "mask_decoder.")
        state = {k: v for k, v in read_state_dict(cfg.teacher_checkpoint).items() if k.startswith(parts)}
        missing = teacher.load_state_dict(state, strict=False).missing_keys
        if any(key.startswith(parts) for key in missing):
            raise MobileSAMError(
                f"{cfg.teacher_checkpoint} has no complete SAM prompt encoder and mask decoder"
            )
        teacher.image_encoder = None  # only its prompt side is used
    else:
        data = AnnotatedData(cfg.images, cfg.img_size, cfg.masks_per_image)
        ids = data.ids()
    loop = Loop(cfg, DecoderTask(sam, cfg.masks_per_image, teacher, cfg.click_rounds), resume, len(ids))
    try:
        loss = loop.fit(loop.loader(data, ids), stop_after, progress)
        if loss is None:
            return None
        meta = {
            "base_student": cfg.student,
            "decoder": f"fine-tuned on {cfg.prompts} prompts",
            "data": {"images": cfg.images, "n_images": len(ids)},
            "steps": loop.step,
            "final_loss": loss,
            "config": asdict(cfg),
        }
        if loop.env.main:
            state = {k: v.detach().cpu() for k, v in sam.state_dict().items()}
            write_checkpoint(Path(cfg.out), state, meta)
    finally:
        loop.finish()
    return meta
