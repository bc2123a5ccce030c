"""Train a student image encoder on cached teacher embeddings (MobileSAM's decoupled distillation).

The task is an object whose forward returns {"loss": ...}: MSE between the student's
and the teacher's 256 x g x g embeddings. Defaults (the paper does not publish its
optimizer): AdamW, lr 1e-3, weight decay 0.05, linear warmup then cosine decay to 0,
gradient clipping at 1.0. The sample order is a function of (seed, step), so a resumed
run sees exactly the batches an uninterrupted one would, and on the CPU reaches the
same weights.

Output: `student.pt` in the official `mobile_sam.pt` layout (the student encoder plus
the teacher's prompt encoder and mask decoder, when a teacher checkpoint is given),
with `student.json` beside it (teacher, data, steps, final loss, config).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..build import build_sam
from ..checkpoint import read_state_dict
from ..errors import MobileSAMError
from ..modeling.sam import normalize_and_pad
from ..transforms import PIXEL_MEAN, PIXEL_STD, ResizeLongestSide
from ..utils.files import atomic_write, atomic_write_text
from .cache import EmbeddingCache, iter_images


@dataclass
class TrainConfig:
    cache: str
    images: str
    out: str
    student: str = "vit_t"
    init_checkpoint: str | None = None  # start from these student weights
    teacher_checkpoint: str | None = None  # prompt encoder + decoder for the output file
    img_size: int = 1024
    steps: int = 1000
    batch_size: int = 8
    accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    save_every: int = 500
    log_every: int = 10
    device: str = "cpu"


class DistillTask(nn.Module):
    """Student encoder + MSE to the teacher's embeddings."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": F.mse_loss(self.student(images), targets.float())}


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to 0 at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_ids(ids: list[str], step: int, micro: int, cfg: TrainConfig) -> list[str]:
    """The samples of micro-batch `micro` of `step`: epochs of seeded permutations of `ids`."""
    per_step = cfg.batch_size * cfg.accum_steps
    start = step * per_step + micro * cfg.batch_size
    out = []
    for k in range(start, start + cfg.batch_size):
        epoch, pos = divmod(k, len(ids))
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(ids))
        out.append(ids[order[pos]])
    return out


class ImageLoader:
    """Cache ids -> SAM-preprocessed student inputs (resize longest side, normalise, pad)."""

    def __init__(self, images: str, img_size: int) -> None:
        # Folders load lazily from disk; SA-1B tars are read once into memory (fine for
        # a few shards; streaming them is still to do).
        self.loaders = dict(iter_images(images))
        self.img_size = img_size
        self.transform = ResizeLongestSide(img_size)
        self.mean, self.std = torch.tensor(PIXEL_MEAN), torch.tensor(PIXEL_STD)

    def __call__(self, image_id: str) -> torch.Tensor:
        rgb = self.transform.apply_image(self.loaders[image_id]())
        x = torch.as_tensor(rgb).permute(2, 0, 1)[None].float()
        return normalize_and_pad(x, self.mean, self.std, self.img_size)[0]


def train(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None) -> dict | None:
    """Run (or resume) training; returns the output's metadata. Ctrl-C saves a checkpoint
    first; `stop_after` N steps saves one and returns None (a job run in slices)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(cfg.cache)
    ids = cache.ids()
    if not ids:
        raise MobileSAMError(f"no cached embeddings in {cfg.cache}: run `mobilesam distill cache` first")
    if cache.index["img_size"] != cfg.img_size:
        raise MobileSAMError(
            f"the cache holds {cache.index['img_size']}-px embeddings; train with --img-size {cache.index['img_size']}"
        )
    torch.manual_seed(cfg.seed)
    sam = build_sam(cfg.student, img_size=cfg.img_size)
    if cfg.init_checkpoint:
        state = read_state_dict(cfg.init_checkpoint)
        sam.image_encoder.load_state_dict(
            {k[len("image_encoder.") :]: v for k, v in state.items() if k.startswith("image_encoder.")}
        )
    task = DistillTask(sam.image_encoder).to(cfg.device).train()
    optimizer = torch.optim.AdamW(task.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    ckpt_path = out / "last.ckpt"
    if resume:
        if not ckpt_path.is_file():
            raise MobileSAMError(f"nothing to resume: {ckpt_path} does not exist")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        task.load_state_dict(ckpt["task"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        step = ckpt["step"]
    load = ImageLoader(cfg.images, cfg.img_size)
    log_path = out / "log.csv"
    new_log = not log_path.is_file() or not resume
    loss_value = float("nan")
    try:
        with open(log_path, "w" if new_log else "a", newline="") as log_file:
            log = csv.writer(log_file)
            if new_log:
                log.writerow(["step", "loss", "lr", "images_per_s"])
            while step < cfg.steps:
                start = time.perf_counter()
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, cfg)
                optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for micro in range(cfg.accum_steps):
                    names = batch_ids(ids, step, micro, cfg)
                    images = torch.stack([load(n) for n in names]).to(cfg.device)
                    targets = torch.stack([torch.from_numpy(cache.get(n)) for n in names]).to(cfg.device)
                    loss = task(images, targets)["loss"] / cfg.accum_steps
                    loss.backward()
                    total += loss.item()
                torch.nn.utils.clip_grad_norm_(task.parameters(), cfg.grad_clip)
                optimizer.step()
                step += 1
                loss_value = total
                rate = cfg.batch_size * cfg.accum_steps / (time.perf_counter() - start)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    log.writerow([step, f"{total:.6f}", f"{lr_at(step - 1, cfg):.3e}", f"{rate:.2f}"])
                    log_file.flush()
                if step % cfg.save_every == 0:
                    _save_checkpoint(ckpt_path, task, optimizer, step, cfg)
                if stop_after is not None and step >= stop_after:
                    _save_checkpoint(ckpt_path, task, optimizer, step, cfg)
                    return None
    except KeyboardInterrupt:
        _save_checkpoint(ckpt_path, task, optimizer, step, cfg)
        raise
    _save_checkpoint(ckpt_path, task, optimizer, step, cfg)
    return _write_student(sam, cfg, cache, step, loss_value)


def _save_checkpoint(
    path: Path, task: nn.Module, optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig
) -> None:
    state = {
        "task": task.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "rng": torch.get_rng_state(),
        "config": asdict(cfg),
    }
    atomic_write(path, lambda f: torch.save(state, f))


def _write_student(sam: nn.Module, cfg: TrainConfig, cache: EmbeddingCache, step: int, loss: float) -> dict:
    """The official layout: student encoder + (if given) the teacher's prompt encoder and decoder."""
    state = {k: v.detach().cpu() for k, v in sam.state_dict().items()}
    if cfg.teacher_checkpoint:
        teacher = read_state_dict(cfg.teacher_checkpoint)
        for k in state:
            if k.startswith(("prompt_encoder.", "mask_decoder.")):
                state[k] = teacher[k]
    out = Path(cfg.out)
    atomic_write(out / "student.pt", lambda f: torch.save(state, f))
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
    atomic_write_text(out / "student.json", json.dumps(meta, indent=2))
    return meta
