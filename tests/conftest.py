"""Shared fixtures: the parity fixture beside the checkout, synthetic checkpoints, images."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilesam import SamPredictor, build_sam

SHARED = Path(os.environ.get("MOBILESAM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PARITY = SHARED / "fixtures" / "parity"
IMAGES = SHARED / "images"


def _recipe():
    spec = importlib.util.spec_from_file_location("parity_recipe", PARITY / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_state_dict(model_type: str, seed: int = 0, img_size: int = 1024) -> dict[str, torch.Tensor]:
    """The parity fixture's deterministic weights for any model in the official layout."""
    with torch.device("meta"):
        layout = build_sam(model_type, img_size=img_size).state_dict()
    return _recipe().synthetic_state_dict(layout, seed)


@pytest.fixture(autouse=True)
def _torch_threads():
    """The CLI's --threads sets torch's thread count for the whole process: a test that
    runs it in-process must not leave the tests after it on one thread (slower, and
    their float sums in another order)."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state (torch, NumPy's global generator,
    Python's), so a test on random inputs sees the same ones on every run and machine: a
    failure can be reproduced, and a tolerance met once is met in CI."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def layouts() -> dict:
    return json.loads((PARITY / "layouts.json").read_text())


@pytest.fixture(scope="session")
def parity_cases() -> list[dict]:
    return json.loads((PARITY / "cases.json").read_text())["cases"]


@pytest.fixture(scope="session")
def expected() -> dict[str, np.ndarray]:
    with np.load(PARITY / "expected.npz") as data:
        return dict(data)


def pytest_configure(config) -> None:
    """With pytest-xdist workers (`-n 2` in pyproject's addopts), the OpenMP threads of each
    worker and of every process it starts sleep while they wait for work instead of
    spinning for a core (OMP_WAIT_POLICY=PASSIVE). With spinning threads two workers were
    half as slow again as one process; with passive ones, a quarter faster (the numbers:
    docs/performance.md, *pytest-xdist, kept*). Set here, in the controller, so that the
    workers start with it."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if hasattr(config, "workerinput"):
        _onnxruntime_threads_sleep()


def _onnxruntime_threads_sleep() -> None:
    """onnxruntime's thread pool is its own, not OpenMP's, and spins for work by default:
    in the workers every session made through `ort.SessionOptions()` (ours are) lets its
    threads sleep instead (docs/performance.md, *onnxruntime's threads*)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return

    class SleepingThreads(ort.SessionOptions):
        def __init__(self) -> None:
            super().__init__()
            self.add_session_config_entry("session.intra_op.allow_spinning", "0")

    ort.SessionOptions = SleepingThreads


def pytest_collection_modifyitems(session, config, items) -> None:
    """Files with slow tests first, the ExecuTorch tests (minutes of export) first of all:
    with the files shared out to workers in this order (`--dist loadfile
    --no-loadscope-reorder`), the long ones start early and the short ones fill the gaps."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.path.name != "test_executorch.py", item.path not in slow_files))


@pytest.fixture(scope="session")
def ckpt_vit_t(tmp_path_factory) -> Path:
    """A synthetic vit_t checkpoint saved exactly as the official file is (plain state dict)."""
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam.pt"
    torch.save(synthetic_state_dict("vit_t"), path)
    return path


@pytest.fixture(scope="session")
def sam_vit_t(ckpt_vit_t):
    return build_sam("vit_t", ckpt_vit_t)


@pytest.fixture(scope="session")
def truck() -> np.ndarray:
    return np.asarray(Image.open(IMAGES / "truck.jpg").convert("RGB"))


@pytest.fixture(scope="session")
def truck_predictor(sam_vit_t, truck) -> SamPredictor:
    predictor = SamPredictor(sam_vit_t)
    predictor.set_image(truck)
    return predictor


# The input side of the model in tests that compare two of our own paths (folder job vs
# one image, Ray vs one process, UI vs predictor, fast path vs reference): its encoder
# costs 1/16 of the 1024-px one's. Numbers checked against the official code stay at 1024.
SMALL = 256


@pytest.fixture(scope="session")
def small_sam_vit_t(ckpt_vit_t):
    return build_sam("vit_t", ckpt_vit_t, img_size=SMALL)


@pytest.fixture(scope="session")
def small_truck_predictor(small_sam_vit_t, truck) -> SamPredictor:
    predictor = SamPredictor(small_sam_vit_t)
    predictor.set_image(truck)
    return predictor


def nested_photos(root: Path) -> Path:
    """A folder tree of small photos: cam1/a.jpg and cam2/a.jpg (one name, two images),
    cam2/deep/b.jpg, top.jpg; a hidden folder and a symlink back to the root (a cycle),
    neither to be entered by a recursive listing."""
    files = ["cam1/a.jpg", "cam2/a.jpg", "cam2/deep/b.jpg", ".cache/x.jpg", "top.jpg"]
    for i, name in enumerate(files):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.open(IMAGES / f"picture{i + 1}.jpg").resize((96, 64)).save(root / name)
    (root / "cam1" / "loop").symlink_to(root)
    return root


def shapes_scene(seed: int, w: int = 160, h: int = 120) -> tuple[Image.Image, list[dict]]:
    """A textured image with three coloured shapes and their SA-1B style annotations."""
    from PIL import ImageDraw

    from mobilesam.utils import rle

    rng = np.random.default_rng(seed)
    img = Image.fromarray((rng.random((h, w, 3)) * 60 + 90).astype(np.uint8))
    annotations = []
    for j in range(3):
        m = Image.new("L", (w, h))
        x0, y0 = int(rng.integers(0, w - 50)), int(rng.integers(0, h - 40))
        box = [x0, y0, x0 + int(rng.integers(20, 50)), y0 + int(rng.integers(15, 40))]
        (ImageDraw.Draw(m).ellipse if j % 2 else ImageDraw.Draw(m).rectangle)(box, fill=255)
        img.paste(tuple(int(c) for c in rng.integers(0, 255, 3)), mask=m)
        mask = np.asarray(m) > 0
        annotations.append({"segmentation": rle.encode(mask), "bbox": box, "area": int(mask.sum())})
    return img, annotations  # a later shape may cover part of an earlier one, as in real data


def write_sa1b_tar(path: Path, seeds: range) -> Path:
    """An SA-1B shard: sa_<seed>.jpg + sa_<seed>.json per scene."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for seed in seeds:
            img, annotations = shapes_scene(seed)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=95)
            meta = {"image": {"image_id": seed, "width": img.width, "height": img.height}}
            files = {
                f"sa_{seed}.jpg": buf.getvalue(),
                f"sa_{seed}.json": json.dumps({**meta, "annotations": annotations}).encode(),
            }
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


DISTILL_SIZE = 128  # image size of the distillation tests: an 8 x 8 embedding grid


@pytest.fixture(scope="session")
def distill_data(tmp_path_factory) -> Path:
    """Six small photos (four to train on, two held out), a 128-px ViT-B teacher and its caches."""
    from mobilesam.distill.cache import EmbeddingCache

    root = tmp_path_factory.mktemp("distill")
    names = ["picture1.jpg", "picture2.jpg", "picture3.jpg", "picture4.jpg", "picture5.jpg", "truck.jpg"]
    for folder, group in (("train", names[:4]), ("held", names[4:])):
        (root / folder).mkdir()
        for name in group:
            Image.open(IMAGES / name).resize((160, 120)).save(root / folder / name)
    teacher = build_sam("vit_b", img_size=DISTILL_SIZE)
    teacher.load_state_dict(synthetic_state_dict("vit_b", img_size=DISTILL_SIZE))
    torch.save(teacher.state_dict(), root / "teacher.pth")
    for folder in ("train", "held"):
        EmbeddingCache(root / f"cache_{folder}").build(teacher, root / folder, "vit_b")
    return root


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, deepest first (from /proc: no psutil needed)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found.extend(below)
        todo.extend(below)
    return found[::-1]


def run_torchrun(args: list[str], out: Path, timeout: float = 150) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 -m mobilesam ARGS`, which must succeed.

    Once in CI a two-process job logged its last step and then never ended (the 300 s
    timeout struck; where it hung is not known: PyTorch has reports of rare hangs in
    `destroy_process_group`, pytorch#75097), and 56 runs here under load never did it
    again. So a run that outlives `timeout` (they take 10-25 s) has every process's
    Python stacks dumped (faulthandler, on SIGABRT) into a warning, which CI's summary
    prints, and runs once more from an empty `out`; a second hang fails the test.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "mobilesam", *args]
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "LOGLEVEL": "INFO"}
    for attempt in (1, 2):
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            stdout, stderr = job.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in [*_descendants(job.pid), job.pid]:  # workers first, then the agent
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGABRT)
                time.sleep(0.5)  # one stack dump at a time on the shared stderr
            try:
                stdout, stderr = job.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                job.kill()
                stdout, stderr = job.communicate()
            report = f"torchrun {args[:2]} hung (attempt {attempt}); stdout:\n{stdout[-2000:]}\nstacks:\n{stderr[-8000:]}"
            if attempt == 2:
                pytest.fail(report)
            warnings.warn(report, stacklevel=2)
            shutil.rmtree(out, ignore_errors=True)
            continue
        assert job.returncode == 0, stderr[-3000:]
        return subprocess.CompletedProcess(cmd, job.returncode, stdout, stderr)
