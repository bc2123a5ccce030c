"""Train a student image encoder on cached teacher embeddings (MobileSAM's decoupled distillation).

The task returns {"loss"}: MSE between the student's and the teacher's 256 x g x g
embeddings. Defaults (the paper does not publish its optimizer): AdamW, lr 1e-3,
weight decay 0.05, linear warmup then cosine decay to 0, gradient clipping at 1.0
(see loop.py for checkpoints, resume, bf16, torch.compile and torchrun).

Data: DataLoader workers decode and resize the images (uint8, padded); the device
normalises them (inputs.py), so the GPU is not kept waiting on JPEG decoding. On a GPU
the resize runs there too by default (`resize`), and the workers only decode.

Output: `student.pt` in the official `mobile_sam.pt` layout (the student encoder plus
the teacher's prompt encoder and mask decoder, when a teacher checkpoint is given),
with `student.json` beside it (teacher, data, steps, final loss, config).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..api import resolve_device
from ..build import MODEL_CONFIGS, TinyViTConfig, build_sam
from ..checkpoint import read_state_dict
from ..errors import MobileSAMError
from ..transforms import ResizeLongestSide
from ..utils.files import atomic_write, atomic_write_text
from .cache import EmbeddingCache
from .config import TrainConfig
from .inputs import pad_image, resize_and_pad, resize_on, sam_input
from .loop import Loop
from .sources import list_images


class DistillTask(nn.Module):
    """Student encoder + MSE to the teacher's embeddings, from padded uint8 images."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student
        for unused in ("norm_head", "head"):  # TinyViT's classifier: in the layout, not in the forward
            if hasattr(student, unused):
                getattr(student, unused).requires_grad_(False)

    def forward(
        self, images: torch.Tensor, sizes: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {"loss": F.mse_loss(self.student(sam_input(images, sizes)), targets.float())}


class DistillData(torch.utils.data.Dataset):
    """image id -> (padded uint8 3 x S x S image, its (h, w) before padding, teacher embedding);
    with `resize=False`, (the decoded H x W x 3 uint8 image, teacher embedding), batched by
    `collate` as (list of images, embeddings) for `resize_and_pad` on the device."""

    def __init__(self, cache: str, images: str, img_size: int, resize: bool = True) -> None:
        self.cache = EmbeddingCache(cache)
        if not len(self.cache):
            raise MobileSAMError(f"no cached embeddings in {cache}: run `mobilesam distill cache` first")
        if self.cache.index["img_size"] != img_size:
            raise MobileSAMError(
                f"the cache holds {self.cache.index['img_size']}-px embeddings; "
                f"use --img-size {self.cache.index['img_size']}"
            )
        self.refs = {ref.id: ref for ref in list_images(images)}
        missing = [i for i in self.cache.ids() if i not in self.refs]
        if missing:
            raise MobileSAMError(
                f"{len(missing)} cached images are not in {images} (e.g. {missing[0]}): "
                "pass the image source the cache was built from"
            )
        self.transform = ResizeLongestSide(img_size)
        self.img_size, self.resize = img_size, resize

    def __getitem__(self, image_id: str) -> tuple[torch.Tensor, ...]:
        target = torch.from_numpy(self.cache.get(image_id))
        if not self.resize:
            return torch.from_numpy(np.array(self.refs[image_id].open())), target
        image, size = pad_image(self.transform.apply_image(self.refs[image_id].open()), self.img_size)
        return image, size, target

    def collate(self, items: list[tuple]) -> tuple:
        if self.resize:
            return torch.utils.data.default_collate(items)
        return [image for image, _ in items], torch.stack([target for _, target in items])

    def __len__(self) -> int:
        return len(self.cache)


def train(
    cfg: TrainConfig,
    resume: bool = False,
    stop_after: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict | None:
    """Run (or resume) training; returns the output's metadata. Ctrl-C saves a checkpoint
    first; `stop_after` N steps saves one and returns None (a job run in slices)."""
    device = resolve_device(cfg.device)
    on_device = resize_on(cfg.resize, device) == "device"
    data = DistillData(cfg.cache, cfg.images, cfg.img_size, resize=not on_device)
    ids = data.cache.ids()
    torch.manual_seed(cfg.seed)
    sam = build_sam(cfg.student, img_size=cfg.img_size, encoder_options=_student_options(cfg))
    if cfg.init_checkpoint:
        state = read_state_dict(cfg.init_checkpoint)
        sam.image_encoder.load_state_dict(
            {k[len("image_encoder.") :]: v for k, v in state.items() if k.startswith("image_encoder.")}
        )
    loop = Loop(cfg, DistillTask(sam.image_encoder), resume, len(ids))
    try:
        batches = loop.loader(data, ids, data.collate)
        if on_device:
            batches = (
                (*resize_and_pad(images, cfg.img_size, loop.device), targets) for images, targets in batches
            )
        loss = loop.fit(batches, stop_after, progress)
        meta = None if loss is None else _write_student(sam, cfg, data.cache, loop.step, loss, loop.env.main)
    finally:
        loop.finish()
    return meta


def _student_options(cfg: TrainConfig) -> dict:
    """TinyViT's training options the run asks for (none: any registry model)."""
    options = {"drop_path_rate": cfg.drop_path_rate, "use_checkpoint": cfg.activation_checkpointing}
    options = {k: v for k, v in options.items() if v}
    if options and not isinstance(MODEL_CONFIGS.get(cfg.student), TinyViTConfig):
        raise MobileSAMError(
            f"--drop-path-rate and --activation-checkpointing are options of TinyViT students, not {cfg.student!r}"
        )
    return options


def _write_student(
    sam: nn.Module, cfg: TrainConfig, cache: EmbeddingCache, step: int, loss: float, main: bool
) -> dict:
    """The official layout: student encoder + (if given) the teacher's prompt encoder and decoder."""
    state = {k: v.detach().cpu() for k, v in sam.state_dict().items()}
    if cfg.teacher_checkpoint:
        teacher = read_state_dict(cfg.teacher_checkpoint)
        for k in state:
            if k.startswith(("prompt_encoder.", "mask_decoder.")):
                state[k] = teacher[k]
    meta = {
        "teacher": cache.index["teacher"],
        "data": {"images": cfg.images, "cache": cfg.cache, "n_images": len(cache)},
        "steps": step,
        "final_loss": loss,
        "prompt_encoder_and_decoder": "teacher"
        if cfg.teacher_checkpoint
        else "untrained (no teacher checkpoint given)",
        "config": asdict(cfg),
    }
    if main:
        write_checkpoint(Path(cfg.out), state, meta)
    return meta


def write_checkpoint(out: Path, state: dict, meta: dict) -> None:
    """student.pt (official layout) and its student.json sidecar."""
    atomic_write(out / "student.pt", lambda f: torch.save(state, f))
    atomic_write_text(out / "student.json", json.dumps(meta, indent=2))
