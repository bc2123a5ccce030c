"""The optimisation loop shared by encoder distillation and decoder fine-tuning.

A task is a module whose forward takes a batch and returns {"loss": ...}. The loop
adds what a days-long job needs: AdamW with linear warmup + cosine decay over steps or
epochs (the learning rate optionally scaled to the global batch), gradient clipping and
accumulation, bf16 autocast, optional `torch.compile`, a CSV log and a
progress line, checkpoints (task, optimizer, step, RNG states, config) every N steps,
on Ctrl-C and on any crash, and exact resume.

Multi-GPU / multi-node: start the same command under `torchrun`. Each process takes
its slice of every global batch (batch_size per process), the task runs inside
DistributedDataParallel (the teacher never does: its embeddings come from the cache),
and only rank 0 writes files. Batch norm statistics are synchronised across GPUs
(SyncBatchNorm); PyTorch has no CPU SyncBatchNorm, so a CPU (gloo) run normalises
each process's slice on its own and matches a single process only within tolerance.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..api import resolve_device
from ..errors import MobileSAMError
from ..utils.files import atomic_write, check_output_dir
from .config import LoopConfig
from .inputs import default_workers


def lr_at(step: int, cfg: LoopConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to 0 at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun job if there is one; the device this process trains on."""
    chosen = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(), chosen
    env = Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    kind = chosen.type
    if kind == "cuda":
        torch.cuda.set_device(env.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    return env, torch.device(f"cuda:{env.local_rank}") if kind == "cuda" else chosen


class StepBatches:
    """Batch sampler: for every step from `start`, each accumulation micro-batch's ids for
    this process. Order is a function of (seed, step) only: epochs of seeded permutations,
    so a resumed run draws exactly the samples an uninterrupted one would."""

    def __init__(self, ids: list, cfg: LoopConfig, env: Distributed, start: int) -> None:
        self.ids, self.cfg, self.env, self.start = ids, cfg, env, start

    def __len__(self) -> int:
        return (self.cfg.steps - self.start) * self.cfg.accum_steps

    def __iter__(self) -> Iterator[list]:
        cfg, n = self.cfg, len(self.ids)
        per_micro = cfg.batch_size * self.env.world
        for step in range(self.start, cfg.steps):
            for micro in range(cfg.accum_steps):
                first = (step * cfg.accum_steps + micro) * per_micro + self.env.rank * cfg.batch_size
                picks = []
                for k in range(first, first + cfg.batch_size):
                    epoch, pos = divmod(k, n)
                    picks.append(self.ids[_permutation(cfg.seed, epoch, n)[pos]])
                yield picks


_PERMUTATIONS: dict[tuple[int, int, int], np.ndarray] = {}


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    key = (seed, epoch, n)
    if key not in _PERMUTATIONS:
        _PERMUTATIONS.clear()  # one epoch at a time
        _PERMUTATIONS[key] = np.random.default_rng([seed, epoch]).permutation(n)
    return _PERMUTATIONS[key]


class Loop:
    """Owns the task, its optimizer and the run folder; `fit` runs the remaining steps."""

    def __init__(self, cfg: LoopConfig, task: nn.Module, resume: bool, samples: int) -> None:
        """`samples`: how many images an epoch has (for `cfg.epochs`)."""
        cfg.check()
        self.env, self.device = setup_distributed(cfg.device)
        self.cfg = cfg = cfg.schedule(samples, self.env.world)
        self.out = Path(cfg.out)
        if self.env.world > 1 and self.device.type == "cuda":
            task = nn.SyncBatchNorm.convert_sync_batchnorm(task)
        self.task = task.to(self.device).train()
        params = [p for p in self.task.parameters() if p.requires_grad]
        # The fused CUDA kernel: one launch for every parameter instead of several each.
        fused = True if self.device.type == "cuda" else None
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        self.params = params
        self.step = 0
        self.ckpt_path = self.out / "last.ckpt"
        if self.env.main:
            check_output_dir(self.out)
        if resume:
            self._load()
        model = self.task
        if self.env.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.model = torch.compile(model, backend=cfg.compile_backend) if cfg.compile else model

    def loader(
        self, dataset: torch.utils.data.Dataset, ids: list, collate: Callable | None = None
    ) -> torch.utils.data.DataLoader:
        """This process's micro-batches of `dataset` (indexed by the ids) from the current
        step on, decoded by cfg.workers processes (-1: `default_workers`)."""
        workers = self.cfg.workers if self.cfg.workers >= 0 else default_workers(self.device, self.env.world)
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=StepBatches(ids, self.cfg, self.env, self.step),
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )

    def _load(self) -> None:
        if not self.ckpt_path.is_file():
            raise MobileSAMError(f"nothing to resume: {self.ckpt_path} does not exist")
        ckpt = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("world", 1) != self.env.world:
            raise MobileSAMError(
                f"{self.ckpt_path} was written by a run of {ckpt.get('world', 1)} processes; "
                f"resume it with the same number (this run has {self.env.world})"
            )
        self.task.load_state_dict(ckpt["task"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        if self.device.type == "cuda" and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], self.device)
        self.step = ckpt["step"]

    def save(self) -> None:
        if not self.env.main:
            return
        state = {
            "task": self.task.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "rng": torch.get_rng_state(),
            "world": self.env.world,
            "config": asdict(self.cfg),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        atomic_write(self.ckpt_path, lambda f: torch.save(state, f))

    def fit(
        self,
        batches: Iterable,
        stop_after: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> float | None:
        """Run to cfg.steps (or `stop_after`, then None); the last step's loss.

        `batches` yields, per micro-batch, the positional arguments of the task's forward.
        Any interruption (Ctrl-C, a crash) saves the last completed step first.
        """
        cfg, say = self.cfg, (progress if self.env.main and progress else lambda msg: None)
        log_path = self.out / "log.csv"
        fresh = self.step == 0 or not log_path.is_file()
        loss_value = float("nan")
        source = iter(batches)
        per_step = cfg.batch_size * cfg.accum_steps * self.env.world
        mark, mark_step = time.perf_counter(), self.step
        log_file = open(log_path, "w" if fresh else "a", newline="") if self.env.main else None  # noqa: SIM115
        try:
            log = csv.writer(log_file) if log_file else None
            if log and fresh:
                log.writerow(["step", "loss", "lr", "images_per_s"])
            while self.step < cfg.steps:
                lr = lr_at(self.step, cfg)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.zero_grad(set_to_none=True)
                total = torch.zeros((), device=self.device)
                for micro in range(cfg.accum_steps):
                    args = [a.to(self.device, non_blocking=True) for a in next(source)]
                    last = micro == cfg.accum_steps - 1
                    with self._maybe_no_sync(last), self._autocast():
                        loss = self.model(*args)["loss"] / cfg.accum_steps
                    loss.backward()
                    total += loss.detach()
                if cfg.grad_clip > 0:  # clip_grad_norm_ to 0 would zero every gradient
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                self.optimizer.step()
                self.step += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    if self.env.world > 1:
                        dist.all_reduce(total)
                        total /= self.env.world
                    loss_value = total.item()
                    now = time.perf_counter()
                    rate = per_step * (self.step - mark_step) / (now - mark)
                    mark, mark_step = now, self.step
                    if log:
                        log.writerow([self.step, f"{loss_value:.6f}", f"{lr:.3e}", f"{rate:.2f}"])
                        log_file.flush()
                    say(_progress_line(self.step, cfg.steps, loss_value, lr, rate, per_step))
                if self.step % cfg.save_every == 0:
                    self.save()
                if stop_after is not None and self.step >= stop_after:
                    self.save()
                    return None
        except BaseException:
            self.save()  # the last completed step: weights and optimizer agree
            raise
        finally:
            if log_file:
                log_file.close()
        self.save()
        return loss_value

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    def _maybe_no_sync(self, last: bool):
        if isinstance(self.model, nn.parallel.DistributedDataParallel) and not last:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def finish(self) -> None:
        """Wait for every process (rank 0 writes the outputs first) and leave the job."""
        if self.env.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _progress_line(step: int, steps: int, loss: float, lr: float, rate: float, per_step: int) -> str:
    filled = round(20 * step / steps)
    eta = int((steps - step) * per_step / rate) if rate > 0 else 0
    return (
        f"[{'#' * filled}{'.' * (20 - filled)}] step {step}/{steps}  loss {loss:.5g}  lr {lr:.2e}  "
        f"{rate:.1f} img/s  eta {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}"
    )
