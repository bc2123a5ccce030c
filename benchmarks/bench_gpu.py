"""Every GPU measurement of the project in one run and one table (ours, and the official
code's where `mobile_sam` is importable), with the card and the torch version.

    PYTHONPATH=. python benchmarks/bench_gpu.py [--shared ../shared] [--official DIR]
        [--device cuda] [--quick] [--budget 270] [--json out.json] [--profile DIR]

Runs from the repository on a bare GPU machine (torch with CUDA; our package need not
be installed). `--shared` is the folder holding fixtures/parity/recipe.py (synthetic
weights: speed does not depend on the values) and images/truck.jpg. `--quick` shrinks
everything for a dry run on a CPU. Optional rows (compilation, the official code)
are skipped once `--budget` seconds have passed, so one call fits a few minutes.

Rows: preprocessing + encoding (`set_image`), the encoder alone (float32, bf16
autocast, bf16 weights in CUDA graphs, compiled, batch 8), box prompts (`predict` to a
full-resolution numpy mask, `predict_torch`, the decoder alone), segment everything
(defaults; all filters off, with peak GPU memory), agreement of the fast paths with
the plain float32 path (mask IoU), and distillation (ViT-H teacher caching, its
attention with the materialised bias against FlexAttention, JPEG decoding, student
training, the paper's recipe as wall time).

`--profile DIR` also runs five workloads under torch.profiler (a few calls each, seconds
in all): the encoder (bf16 autocast, eager), `set_image` + `predict(box)` on the default
CUDA-graph engine, segment everything with its defaults, the teacher at its batch (bf16
autocast) and a student training step. Each one's operators and kernels by self time go
to DIR/<name>.txt; the top lines, the wall time and the table's device-time total (how
busy the card was in that wall time) are printed: where the next speed-up is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _synthetic import synthetic_weights  # noqa: E402
from bench_decode import loader_rate, worker_ms, write_jpegs  # noqa: E402

from mobilesam import SamPredictor, build_sam  # noqa: E402
from mobilesam.automatic_mask_generator import SamAutomaticMaskGenerator  # noqa: E402
from mobilesam.distill.cache import EmbeddingCache  # noqa: E402
from mobilesam.distill.train import DistillTask  # noqa: E402
from mobilesam.engine import Engine  # noqa: E402
from mobilesam.modeling import fast_paths  # noqa: E402

BOX = np.array([425, 600, 700, 875])  # the truck's tyre, segment-anything's example box
REPEAT = {"n": 20}  # timed calls per row (--quick: 2)
PROFILE: dict[str, Path | None] = {"dir": None}  # --profile DIR
NO_FILTERS = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


class Table:
    def __init__(self, budget: float) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.start, self.budget = time.perf_counter(), budget

    def add(self, name: str, ours: str, official: str = "", note: str = "") -> None:
        self.rows.append((name, ours, official, note))
        print(f"  {name}: {ours} | {official} | {note}", flush=True)

    def time_left(self) -> bool:
        return time.perf_counter() - self.start < self.budget

    def markdown(self) -> str:
        lines = ["| measure | mobilesam | official | note |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c or '–'} | {d} |" for a, b, c, d in self.rows]
        return "\n".join(lines)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ms(fn, device: torch.device, repeat: int | None = None, warmup: int = 3) -> float:
    """Median wall time of fn() in milliseconds, the device synchronised around each call."""
    repeat = min(repeat or REPEAT["n"], REPEAT["n"])
    warmup = min(warmup, REPEAT["n"])
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def profile(name: str, fn, device: torch.device, steps: int = 3) -> None:
    """With --profile DIR: fn() `steps` times under torch.profiler after one warm-up call;
    the operators and kernels by self time (device time on a GPU) to DIR/name.txt, and its
    first lines printed with the wall time per call. Never stops the run."""
    folder = PROFILE["dir"]
    if folder is None:
        return
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        fn()
        sync(device)
        with torch_profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            sync(device)
            wall = (time.perf_counter() - start) * 1e3 / steps
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=40)
    except Exception as exc:  # a profiler that cannot run here: say so, go on
        print(f"  profile {name}: failed: {type(exc).__name__}: {exc}", flush=True)
        return
    folder.mkdir(parents=True, exist_ok=True)
    head = f"{name}: {wall:.2f} ms per call (wall), {steps} calls profiled\n"
    (folder / f"{name}.txt").write_text(head + table)
    lines = table.splitlines()
    totals = [line for line in lines if line.startswith("Self ")]  # "Self CPU/CUDA time total: ..."
    print(f"  profile {head.rstrip()}; " + "; ".join(totals), flush=True)
    print("\n".join("    " + line for line in lines[:13]), flush=True)


def fmt(x: float, unit: str = "ms") -> str:
    return f"{x:.2f} {unit}" if x < 100 else f"{x:.0f} {unit}"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def load_vit_t(shared: Path, device: torch.device, precision: str = "float32"):
    sam = build_sam("vit_t")
    synthetic_weights(sam, shared)
    sam = sam.to(device).eval()
    if precision == "bf16":
        sam.image_encoder.to(torch.bfloat16)
    return sam


def inference_rows(t: Table, args, device, image: np.ndarray, official) -> None:
    cuda = device.type == "cuda"
    sam = load_vit_t(args.shared, device)
    sam_bf16 = load_vit_t(args.shared, device, "bf16")
    plain = SamPredictor(sam, device_preprocess=False)  # main before this work: eager, PIL resize
    default = SamPredictor(sam, Engine(sam, graphs=cuda))  # MobileSAM(device="cuda") now
    fast = None
    if args.compile and t.time_left():
        start = time.perf_counter()
        backend = "eager" if args.quick else "inductor"  # inductor on a CPU: minutes
        fast = SamPredictor(sam_bf16, Engine(sam_bf16, graphs=cuda, compile=True, compile_backend=backend))
        fast.warmup()
        t.add("compile + capture (bf16, once per process)", fmt(time.perf_counter() - start, "s"))
    ref = ref_pred = None
    if official is not None:
        ref = official.sam_model_registry["vit_t"]()
        ref.load_state_dict(sam.state_dict())
        ref = ref.to(device).eval()
        ref_pred = official.SamPredictor(ref)

    # set_image: preprocessing + encoder
    def set_image(p):
        return lambda: p.set_image(image)

    ref_ms = fmt(ms(set_image(ref_pred), device)) if ref_pred else ""
    t.add("`set_image(truck.jpg)`, float32, PIL resize, eager", fmt(ms(set_image(plain), device)), ref_ms)
    t.add("`set_image`, float32, GPU resize + CUDA graphs (default)", fmt(ms(set_image(default), device)))
    if fast is not None:
        t.add("`set_image`, bf16 + compile + CUDA graphs", fmt(ms(set_image(fast), device)))

    # The encoder alone at its static input.
    x1 = torch.randn(1, 3, sam.img_size, sam.img_size, device=device)
    x8 = torch.randn(8, 3, sam.img_size, sam.img_size, device=device)
    enc = sam.image_encoder
    with torch.inference_mode():

        def autocast(encoder, x):
            def run():
                with torch.autocast(device.type, torch.bfloat16):
                    encoder(x)

            return run

        ref_enc = ref.image_encoder if ref is not None else None
        t.add(
            "`image_encoder`, float32, eager",
            fmt(ms(lambda: enc(x1), device)),
            fmt(ms(lambda: ref_enc(x1), device)) if ref_enc else "",
        )
        t.add(
            "`image_encoder`, bf16 autocast, eager",
            fmt(ms(autocast(enc, x1), device)),
            fmt(ms(autocast(ref_enc, x1), device)) if ref_enc else "",
        )
        t.add("`image_encoder`, float32, CUDA graph", fmt(ms(lambda: default.engine.encode(x1), device)))
        graphed_bf16 = Engine(sam_bf16, graphs=cuda)
        t.add("`image_encoder`, bf16 weights, CUDA graph", fmt(ms(lambda: graphed_bf16.encode(x1), device)))
        if fast is not None:
            t.add(
                "`image_encoder`, bf16, compile + CUDA graph", fmt(ms(lambda: fast.engine.encode(x1), device))
            )
        t.add(
            "`image_encoder`, batch 8, bf16 autocast, per image",
            fmt(ms(autocast(enc, x8), device, repeat=5) / 8),
            fmt(ms(autocast(ref_enc, x8), device, repeat=5) / 8) if ref_enc else "",
        )
        t.add(
            "`image_encoder`, batch 8, bf16 weights, CUDA graph, per image",
            fmt(ms(lambda: graphed_bf16.encode(x8), device, repeat=5) / 8),
        )
        profile("encoder_bf16_autocast_eager", autocast(enc, x1), device)

    # Box prompts on the set image.
    for p in (plain, default, fast, ref_pred):
        if p is not None:
            p.set_image(image)
    box_t = torch.as_tensor(plain.transform.apply_boxes(BOX, plain.original_size), device=device).float()

    def predict(p):
        return lambda: p.predict(box=BOX, multimask_output=False)

    def predict_torch(p):
        return lambda: p.predict_torch(None, None, box_t, multimask_output=False)

    t.add(
        "`predict(box)` to numpy, full resolution, eager",
        fmt(ms(predict(plain), device)),
        fmt(ms(predict(ref_pred), device)) if ref_pred else "",
    )
    t.add("`predict(box)` to numpy, CUDA graphs", fmt(ms(predict(default), device)))
    t.add(
        "`predict_torch`, 1 box, eager",
        fmt(ms(predict_torch(plain), device)),
        fmt(ms(predict_torch(ref_pred), device)) if ref_pred else "",
    )
    t.add("`predict_torch`, 1 box, CUDA graphs", fmt(ms(predict_torch(default), device)))
    t.add(
        "decoder alone (prompt encoder + mask decoder), 1 box, CUDA graphs",
        fmt(ms(lambda: default.decode(None, None, box_t, None, False), device)),
    )
    boxes64 = box_t.repeat(64, 1)
    t.add(
        "decoder, 64 boxes at once, CUDA graphs, per box",
        fmt(ms(lambda: default.decode(None, None, boxes64, None, False), device) / 64),
    )
    for name, p in (("float32, GPU resize, CUDA graphs", default), ("bf16 + compile + CUDA graphs", fast)):
        if p is not None:

            def end_to_end(p=p):
                p.set_image(image)
                p.predict(box=BOX, multimask_output=False)

            t.add(f"`set_image` + `predict(box)` to numpy, {name}", fmt(ms(end_to_end, device)))
            if p is default:
                profile("set_image_predict_default_engine", end_to_end, device)

    captured = len(default.engine.graphs), default.engine.graphs.failed
    t.add(
        "CUDA graphs captured (float32 engine)",
        f"{captured[0]}",
        "",
        f"fell back to eager: {captured[1] or 'none'}",
    )
    agreement_rows(t, image, plain, default, fast)
    everything_rows(t, args, device, image, plain, default, ref)


def agreement_rows(t: Table, image: np.ndarray, plain, default, fast) -> None:
    """Mask IoU against the plain float32 path (PIL resize, eager) for a few boxes."""
    h, w = image.shape[:2]
    boxes = [BOX, np.array([0, 0, w - 1, h - 1]), np.array([w // 4, h // 4, 3 * w // 4, 3 * h // 4])]
    for name, p in (("GPU resize + CUDA graphs", default), ("bf16 + compile", fast)):
        if p is None:
            continue
        p.set_image(image)
        plain.set_image(image)
        emb = (p.features - plain.features).abs().max().item()
        ious = [iou(p.predict(box=b)[0], plain.predict(box=b)[0]) for b in boxes]
        t.add(
            f"agreement with float32 eager: {name}",
            f"mask IoU min {min(ious):.5f}",
            "",
            f"embedding max err {emb:.2e}",
        )


def everything_rows(t: Table, args, device, image, plain, default, ref) -> None:
    cuda = device.type == "cuda"
    side = args.points_per_side
    for name, options in (("default filters", {}), ("all filters off", NO_FILTERS)):
        for label, p in (("eager", plain), ("CUDA graphs", default)):
            gen = SamAutomaticMaskGenerator(p, points_per_side=side, **options)
            gen.generate(image)  # warm-up (captures the graphs for the batch shapes)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            start = time.perf_counter()
            masks = gen.generate(image)
            sync(device)
            seconds = time.perf_counter() - start
            peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GB" if cuda else ""
            t.add(
                f"segment everything {side}x{side}, {name}, {label}",
                f"{seconds:.3f} s",
                "",
                f"{len(masks)} masks{peak}",
            )
            if p is default and not options:
                profile("everything_default_engine", lambda gen=gen: gen.generate(image), device, steps=1)
        if ref is not None and not options and t.time_left():
            from importlib import import_module

            official = import_module("mobile_sam")
            gen = official.SamAutomaticMaskGenerator(ref, points_per_side=side)
            sync(device)
            start = time.perf_counter()
            masks = gen.generate(image)
            sync(device)
            t.add(
                f"official segment everything {side}x{side}, {name}",
                "",
                f"{time.perf_counter() - start:.3f} s",
                f"{len(masks)} masks",
            )


def distill_rows(t: Table, args, device, image=None, official=None) -> None:
    cuda = device.type == "cuda"
    size, teacher_name = (1024, "vit_h") if not args.quick else (256, "vit_b")
    with torch.device(device):  # random weights, made on the device: speed only
        teacher = build_sam(teacher_name, img_size=size).eval()
    enc = teacher.image_encoder
    x = torch.randn(args.teacher_batch, 3, size, size, device=device)
    with torch.inference_mode():
        fp32 = ms(lambda: enc(x[:8]), device, repeat=3, warmup=1) / 8

        def bf16(model=enc):
            with torch.autocast(device.type, torch.bfloat16):
                model(x)

        per = ms(bf16, device, repeat=3, warmup=1) / len(x)
    t.add(f"teacher {teacher_name} {size} px, float32, batch 8", f"{1e3 / fp32:.1f} images/s")
    t.add(f"teacher {teacher_name} {size} px, bf16 autocast, batch {len(x)}", f"{1e3 / per:.1f} images/s")
    with torch.inference_mode():
        profile(f"teacher_{teacher_name}_bf16_batch{len(x)}", bf16, device, steps=2)
    compiled_rate = None
    if args.compile and t.time_left():  # what `distill cache --compile` runs
        run = torch.compile(enc, dynamic=False, backend="eager" if args.quick else "inductor")
        start = time.perf_counter()
        with torch.inference_mode():
            bf16(run)
            sync(device)
            first = time.perf_counter() - start
            compiled_rate = 1e3 * len(x) / ms(lambda: bf16(run), device, repeat=3, warmup=1)
        t.add(
            f"teacher {teacher_name} {size} px, bf16 autocast, compiled, batch {len(x)}",
            f"{compiled_rate:.1f} images/s",
            "",
            f"first call {first:.0f} s",
        )
        run = None
    if args.compile and t.time_left():  # after the compiled teacher: its row matters more
        attention_rows(t, args, device, teacher)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        write_jpegs(folder, args.shared / "images" / "truck.jpg", args.jpegs, (2250, 1500))
        workers = min(16, os.cpu_count() or 1)
        rates = {}
        for on_device in (False, True):
            rates[on_device] = loader_rate(folder, workers, size, device, on_device)
            t.add(
                f"JPEG 2250x1500 decode + resize + pad, {workers} workers, resized "
                + ("on the device (the GPU default)" if on_device else "in the workers"),
                f"{rates[on_device]:.0f} images/s",
                "",
                f"worker {worker_ms(folder, size, on_device):.1f} ms per image; second pass over {args.jpegs}",
            )
        decode_rate = rates[cuda]
        start = time.perf_counter()
        summary = EmbeddingCache(Path(tmp) / "cache").build(
            teacher, folder, teacher_name, batch_size=args.teacher_batch
        )
        sync(device)
        cache_rate = summary.done / (time.perf_counter() - start)
        t.add(
            f"`distill cache` end to end ({teacher_name}, default precision, {summary.done} JPEGs)",
            f"{cache_rate:.1f} images/s",
        )
    teacher = enc = x = None  # free the teacher before training
    if cuda:
        torch.cuda.empty_cache()

    rates = {}
    for batch, compiled in ((16, False), (32, False), (64, False), (32, True)):
        if compiled and not (args.compile and t.time_left()):
            continue
        backend = "eager" if args.quick else "inductor"
        name = f"student training, vit_t {size} px, bf16, batch {batch}" + (", compiled" if compiled else "")
        try:
            rates[(batch, compiled)], first = train_rate(size, batch, compiled and backend, device)
        except torch.OutOfMemoryError:
            t.add(name, "out of memory")
            continue
        finally:
            if cuda:
                torch.cuda.empty_cache()
        t.add(name, f"{rates[(batch, compiled)]:.0f} images/s", "", f"first step {first:.1f} s")
    if PROFILE["dir"] is not None and (32, False) in rates:
        profile(f"student_training_vit_t_{size}_bf16_batch32", train_step(size, 32, False, device), device)
        if cuda:
            torch.cuda.empty_cache()
    if not rates:  # every training row ran out of memory
        return
    best = max(rates.values())
    n, epochs = 100_000, 8
    training = min(best, decode_rate)

    def hours(caching: float) -> float:
        return (n / caching + n * epochs / training) / 3600

    t.add(
        "the paper's recipe (100k images, 8 epochs), one card",
        f"{hours(cache_rate):.2f} h",
        "",
        f"caching at {cache_rate:.0f}/s + training at min(best {best:.0f}/s, decoding {decode_rate:.0f}/s)",
    )
    if compiled_rate:
        t.add(
            "the same with `distill cache --compile` (estimate)",
            f"{hours(min(compiled_rate, decode_rate)):.2f} h",
            "",
            f"caching at min(compiled teacher {compiled_rate:.0f}/s, decoding {decode_rate:.0f}/s)",
        )


def attention_rows(t: Table, args, device, teacher) -> None:
    """The teacher's two attention shapes at its batch (a global block on the whole grid, a
    windowed block on all its windows), bf16 autocast: SDPA with the materialised
    relative-position bias, eager and compiled, against the `flex_attention` fast path
    (compiled; on a CPU the precondition keeps the bias), and what the difference makes
    per image over the teacher's blocks."""
    enc = teacher.image_encoder
    blocks = {
        "global": [b for b in enc.blocks if not b.window],
        "windowed": [b for b in enc.blocks if b.window],
    }
    grid = enc.img_size // 16
    backend = "eager" if args.quick else "inductor"
    saved = 0.0
    for kind, group in blocks.items():
        if not group:
            continue
        side = group[0].window or grid
        batch = args.teacher_batch * (-(-grid // side)) ** 2  # every (padded) window of the batch
        attn = group[0].attn
        x = torch.randn(batch, side, side, attn.qkv.in_features, device=device)
        times = {}
        for label, compiled, flex in (
            ("SDPA + bias, eager", False, False),
            ("SDPA + bias, compiled", True, False),
            ("flex_attention, compiled", True, True),
        ):
            torch._dynamo.reset()
            run = torch.compile(attn, dynamic=False, backend=backend) if compiled else attn
            name = f"teacher {kind} attention, bf16, {batch} x {side}x{side} tokens, {label}"
            try:
                with (
                    fast_paths.configured(attn, flex_attention=flex),
                    torch.inference_mode(),
                    torch.autocast(device.type, torch.bfloat16),
                ):
                    times[label] = ms(lambda run=run, x=x: run(x), device, repeat=5, warmup=2)
            except Exception as exc:  # a kernel this torch cannot build: say so, go on
                t.add(name, "failed", "", f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
                continue
            finally:
                run = None
            t.add(name, fmt(times[label]), "", f"{len(group)} such blocks")
        if len(times) == 3:
            saved += (times["SDPA + bias, compiled"] - times["flex_attention, compiled"]) * len(group)
        x = None
    note = "" if device.type == "cuda" else "CPU: the precondition keeps the bias"
    t.add("flex_attention's saving per teacher image (compiled)", fmt(saved / args.teacher_batch), "", note)


def train_rate(
    size: int, batch: int, compile_backend: str | bool, device: torch.device
) -> tuple[float, float]:
    """Student training steps (bf16 autocast, fused AdamW) on device-resident batches:
    images/s, and the first step's seconds (compilation)."""
    step = train_step(size, batch, compile_backend, device)
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    return 1e3 * batch / ms(step, device, repeat=5, warmup=2), first


def train_step(size: int, batch: int, compile_backend: str | bool, device: torch.device):
    """One student training step as a function: bf16 autocast, fused AdamW on a GPU."""
    task = DistillTask(build_sam("vit_t", img_size=size).image_encoder).to(device).train()
    params = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True if device.type == "cuda" else None)
    model = torch.compile(task, backend=compile_backend) if compile_backend else task
    images = torch.randint(0, 255, (batch, 3, size, size), dtype=torch.uint8, device=device)
    sizes = torch.full((batch, 2), size, device=device)
    targets = torch.randn(batch, 256, size // 16, size // 16, device=device).half()

    def step():
        with torch.autocast(device.type, torch.bfloat16):
            loss = model(images, sizes, targets)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    ap.add_argument("--official", help="folder holding the official `mobile_sam` package")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a dry run on a CPU")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument(
        "--budget", type=float, default=270.0, help="seconds after which optional rows are skipped"
    )
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--profile", type=Path, help="also profile five workloads into this folder")
    args = ap.parse_args()
    PROFILE["dir"] = args.profile
    args.points_per_side = 8 if args.quick else 32
    args.teacher_batch = 4 if args.quick else 16
    args.jpegs = 32 if args.quick else 256
    REPEAT["n"] = 2 if args.quick else 20
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"device: {card}; torch {torch.__version__}; CUDA {torch.version.cuda}", flush=True)
    official = None
    if args.official:
        from _official import import_official

        official = import_official(args.official)
    t = Table(args.budget)
    image = np.asarray(Image.open(args.shared / "images" / "truck.jpg").convert("RGB"))
    for section in (inference_rows, distill_rows):
        try:
            section(t, args, device, image, official)
        except Exception:  # one broken section still leaves the others' rows
            traceback.print_exc()
            t.add(f"{section.__name__} stopped", "error (see the log)")
    print(f"\n{card}, torch {torch.__version__}, {time.perf_counter() - t.start:.0f} s in all\n")
    print(t.markdown())
    if args.json:
        args.json.write_text(
            json.dumps({"device": card, "torch": torch.__version__, "rows": t.rows}, indent=1)
        )


if __name__ == "__main__":
    main()
