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
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..build import build_sam
from ..checkpoint import read_state_dict
from ..errors import MobileSAMError
from ..modeling.sam import Sam
from ..transforms import ResizeLongestSide
from ..utils import rle
from ..utils.amg import masks_to_boxes_torch
from .inputs import inside, pad_image, sam_input
from .loop import Loop, LoopConfig
from .sources import list_images
from .train import DistillData, write_checkpoint

PROMPT_SOURCES = ("annotations", "teacher")
FOCAL_WEIGHT = 20.0


@dataclass(kw_only=True)
class FinetuneConfig(LoopConfig):
    student: str  # checkpoint in the official layout (e.g. `distill train`'s student.pt)
    images: str
    prompts: str = "annotations"  # or "teacher"
    cache: str | None = None  # teacher embeddings, for prompts="teacher"
    teacher_checkpoint: str | None = None  # the teacher's prompt encoder + decoder, for "teacher"
    student_type: str = "vit_t"
    img_size: int = 1024
    masks_per_image: int = 8
    lr: float = 1e-4
    warmup_steps: int = 50

    def check(self) -> None:
        super().check()
        if self.prompts not in PROMPT_SOURCES:
            raise MobileSAMError(f"prompts must be one of {PROMPT_SOURCES}, got {self.prompts!r}")
        if self.prompts == "teacher" and not (self.cache and self.teacher_checkpoint):
            raise MobileSAMError("prompts from the teacher need --cache and --teacher-checkpoint")
        if self.masks_per_image < 3:
            raise MobileSAMError("masks_per_image must be at least 3 (one per prompt kind)")


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

    def __init__(self, sam: Sam, k: int, teacher: Sam | None = None) -> None:
        super().__init__()
        self.sam, self.k, self.teacher = sam, k, teacher
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
        losses = []
        for kind in range(3):  # box, one point, two points
            sel = rows[rows % k % 3 == kind]
            logits, iou_pred = self.decode(
                embeddings[sel], masks[sel], kind, sizes.repeat_interleave(k, 0)[sel]
            )
            losses.append(_sam_loss(logits, iou_pred, masks[sel]) * valid[sel])
        return {"loss": torch.cat(losses).sum() / valid.sum().clamp(min=1)}

    def decode(
        self, embeddings: torch.Tensor, masks: torch.Tensor, kind: int, sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits N x M x S x S (M = 3 for one point, else 1) and IoU predictions N x M."""
        if kind == 0:
            prompt = {"points": None, "boxes": _jittered_boxes(masks, sizes)}
        else:
            points = _points_inside(masks, kind)
            prompt = {"points": (points, torch.ones(points.shape[:2], device=points.device)), "boxes": None}
        sparse, dense = self.sam.prompt_encoder(**prompt, masks=None)
        low, iou = self.sam.mask_decoder(
            embeddings, self.sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=kind == 1
        )
        size = masks.shape[-1]
        return F.interpolate(low, (size, size), mode="bilinear", align_corners=False), iou

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


def _sam_loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per prompt: min over candidates of 20 x focal + dice, plus MSE of all IoU predictions."""
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
    return (FOCAL_WEIGHT * focal + dice).min(dim=1).values + iou_loss


def finetune(
    cfg: FinetuneConfig,
    resume: bool = False,
    stop_after: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict | None:
    """Fine-tune the decoder of cfg.student; writes student.pt (official layout) + student.json."""
    cfg.check()
    torch.manual_seed(cfg.seed)
    sam = build_sam(cfg.student_type, cfg.student, img_size=cfg.img_size)
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
    loop = Loop(cfg, DecoderTask(sam, cfg.masks_per_image, teacher), resume, len(ids))
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
