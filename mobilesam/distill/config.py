"""The settings of a distillation run: plain dataclasses (no torch), so that the CLI builds
its options, meanings and defaults from them without importing the training code."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import MobileSAMError

PRECISIONS = ("float32", "bf16")
PROMPT_SOURCES = ("annotations", "teacher")


def option(default: object, help: str) -> Any:
    """A config field with the meaning `mobilesam distill ... --help` shows."""
    return field(default=default, metadata={"help": help})


@dataclass(kw_only=True)
class LoopConfig:
    out: str
    steps: int = option(1000, "optimizer steps (or give --epochs)")
    batch_size: int = option(8, "images per step and process")
    accum_steps: int = option(1, "gradient accumulation: steps of batch-size images per optimizer step")
    lr: float = option(1e-3, "peak learning rate (AdamW), after a linear warmup, then cosine to 0")
    weight_decay: float = option(0.05, "AdamW weight decay")
    warmup_steps: int = option(100, "linear warmup steps")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0: no clipping)")
    seed: int = option(0, "random seed: the data order (and fine-tuning's prompts)")
    save_every: int = option(500, "steps between OUT/last.ckpt saves (what --resume continues from)")
    log_every: int = option(10, "steps between OUT/log.csv rows")
    device: str = option("auto", "cpu, cuda or mps; auto: cuda if there is one, else mps, else cpu")
    precision: str = option("float32", "float32, or bf16: autocast of the forward pass")
    compile: bool = option(False, "torch.compile the task")
    compile_backend: str = option("inductor", "torch.compile's backend, with compile")
    workers: int = option(-1, "DataLoader workers; -1: 8 per GPU, 0 on the CPU")
    epochs: float | None = option(
        None, "passes over the data instead of --steps (epochs x images / global batch)"
    )
    lr_batch: int | None = option(
        None, "the global batch --lr is meant for: lr scaled linearly to the run's own"
    )

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise MobileSAMError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("steps", "batch_size", "accum_steps", "save_every", "log_every", "lr_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise MobileSAMError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.grad_clip >= 0:
            raise MobileSAMError(f"grad_clip must be 0 (no clipping) or more, got {self.grad_clip}")
        if self.epochs is not None and not self.epochs > 0:
            raise MobileSAMError(f"epochs must be positive, got {self.epochs}")

    def schedule(self, samples: int, world: int) -> LoopConfig:
        """This config with `epochs` turned into steps over `samples` images and `lr`
        scaled from `lr_batch` to the global batch of `world` processes."""
        global_batch = self.batch_size * self.accum_steps * world
        steps = self.steps if self.epochs is None else max(1, math.ceil(self.epochs * samples / global_batch))
        lr = self.lr if self.lr_batch is None else self.lr * global_batch / self.lr_batch
        return replace(self, steps=steps, lr=lr)


@dataclass(kw_only=True)
class TrainConfig(LoopConfig):
    cache: str
    images: str
    student: str = option("vit_t", "student encoder: vit_t (MobileSAM's TinyViT) or another tiny_vit_* width")
    init_checkpoint: str | None = option(None, "start from these student weights")
    teacher_checkpoint: str | None = option(
        None, "the prompt encoder + decoder put beside the student in student.pt"
    )
    img_size: int = option(1024, "input size; the cache's")
    resize: str | None = option(
        None, "workers (PIL, as SAM) or device; default: the device on a GPU, else the workers"
    )
    drop_path_rate: float = option(
        0.0, "the student's stochastic depth: the rate rises linearly over its blocks to this"
    )
    activation_checkpointing: bool = option(
        False, "recompute each student block's activations in the backward pass: less memory, more compute"
    )

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise MobileSAMError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")


@dataclass(kw_only=True)
class FinetuneConfig(LoopConfig):
    student: str  # checkpoint in the official layout (e.g. `distill train`'s student.pt)
    images: str
    prompts: str = option("annotations", "target masks from SA-1B annotations, or from the teacher")
    cache: str | None = option(None, "teacher embeddings, for --prompts teacher")
    teacher_checkpoint: str | None = option(
        None, "the teacher's prompt encoder + decoder, for --prompts teacher"
    )
    student_type: str | None = option(
        None, "the student's model type; default: the one --student fits, else vit_t"
    )
    img_size: int = option(1024, "input size")
    masks_per_image: int = option(8, "target masks sampled per image and step (at least 3)")
    click_rounds: int = option(0, "correction-click rounds per prompt (SAM trains with 8)")
    lr: float = option(1e-4, "peak learning rate (AdamW), after a linear warmup, then cosine to 0")
    warmup_steps: int = option(50, "linear warmup steps")

    def check(self) -> None:
        super().check()
        if self.prompts not in PROMPT_SOURCES:
            raise MobileSAMError(f"prompts must be one of {PROMPT_SOURCES}, got {self.prompts!r}")
        if self.prompts == "teacher" and not (self.cache and self.teacher_checkpoint):
            raise MobileSAMError("prompts from the teacher need --cache and --teacher-checkpoint")
        if self.masks_per_image < 3:
            raise MobileSAMError("masks_per_image must be at least 3 (one per prompt kind)")
        if self.click_rounds < 0:
            raise MobileSAMError(f"click_rounds must be 0 or more, got {self.click_rounds}")
