"""Encoder distillation: it learns, resumes to the same weights, writes the official layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import IMAGES, synthetic_state_dict
from PIL import Image

from mobilesam import build_sam
from mobilesam.distill.cache import EmbeddingCache
from mobilesam.distill.train import DistillTask, ImageLoader, TrainConfig, train

SIZE = 128


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Six small photos (four to train on, two held out) and a 128-px ViT-B teacher's cache."""
    root = tmp_path_factory.mktemp("distill")
    names = ["picture1.jpg", "picture2.jpg", "picture3.jpg", "picture4.jpg", "picture5.jpg", "truck.jpg"]
    for folder, group in (("train", names[:4]), ("held", names[4:])):
        (root / folder).mkdir()
        for name in group:
            Image.open(IMAGES / name).resize((160, 120)).save(root / folder / name)
    teacher = build_sam("vit_b", img_size=SIZE)
    teacher.load_state_dict(synthetic_state_dict("vit_b", img_size=SIZE))
    torch.save(teacher.state_dict(), root / "teacher.pth")
    for folder in ("train", "held"):
        EmbeddingCache(root / f"cache_{folder}").build(teacher, root / folder, "vit_b")
    return root


def _config(data, out, **kw) -> TrainConfig:
    base = dict(
        cache=str(data / "cache_train"),
        images=str(data / "train"),
        out=str(out),
        img_size=SIZE,
        steps=40,
        batch_size=2,
        lr=2e-3,
        warmup_steps=5,
        save_every=1000,
        log_every=5,
    )
    return TrainConfig(**{**base, **kw})


def _held_out_mse(student_state: dict | None, data) -> float:
    sam = build_sam("vit_t", img_size=SIZE)
    if student_state is not None:
        sam.load_state_dict(student_state)
    cache, load = EmbeddingCache(data / "cache_held"), ImageLoader(str(data / "held"), SIZE)
    task = DistillTask(sam.image_encoder).eval()
    with torch.no_grad():
        losses = [
            task(load(i)[None], torch.from_numpy(cache.get(i))[None])["loss"].item() for i in cache.ids()
        ]
    return float(np.mean(losses))


def test_training_learns_and_writes_official_layout(data, tmp_path, layouts):
    torch.manual_seed(0)
    before = _held_out_mse(build_sam("vit_t", img_size=SIZE).state_dict(), data)
    meta = train(_config(data, tmp_path, teacher_checkpoint=str(data / "teacher.pth")))
    state = torch.load(tmp_path / "student.pt", weights_only=True)
    after = _held_out_mse(state, data)
    assert after <= 0.5 * before, (before, after)
    # exactly the official layout, loadable strictly through the registry
    assert {k: list(v.shape) for k, v in state.items()} == layouts["vit_t"]
    build_sam("vit_t", tmp_path / "student.pt", img_size=SIZE)
    teacher = torch.load(data / "teacher.pth", weights_only=True)
    assert torch.equal(state["mask_decoder.iou_token.weight"], teacher["mask_decoder.iou_token.weight"])
    sidecar = json.loads((tmp_path / "student.json").read_text())
    assert sidecar["teacher"] == "vit_b" and sidecar["steps"] == 40 and meta["final_loss"] > 0
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0] == "step,loss,lr,images_per_s" and len(log) == 1 + 8


@pytest.fixture
def one_thread():
    """Bitwise comparisons need one thread: with two, the order of a parallel reduction
    (and so the last bits) can change with the machine's load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_resume_gives_the_same_weights(data, tmp_path, one_thread):
    cfg = dict(steps=6, accum_steps=2, warmup_steps=2)
    train(_config(data, tmp_path / "straight", **cfg))
    assert train(_config(data, tmp_path / "sliced", **cfg), stop_after=3) is None
    train(_config(data, tmp_path / "sliced", **cfg), resume=True)
    a = torch.load(tmp_path / "straight" / "student.pt", weights_only=True)
    b = torch.load(tmp_path / "sliced" / "student.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_and_resume_errors(data, tmp_path, capsys):
    from mobilesam.cli import main

    args = [
        "distill",
        "train",
        "--cache",
        str(data / "cache_train"),
        "--images",
        str(data / "train"),
        "--out",
        str(tmp_path),
        "--img-size",
        str(SIZE),
        "--steps",
        "2",
        "--batch-size",
        "2",
    ]
    assert main([*args, "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(args) == 0
    assert (tmp_path / "student.pt").is_file()
    assert main([*args[:-4], "--img-size", "256", "--steps", "2"]) == 2
    assert "--img-size 128" in capsys.readouterr().err


def test_evaluation_identical_and_trained(data, tmp_path, capsys):
    from mobilesam.cli import main
    from mobilesam.distill.evaluate import evaluate

    teacher = build_sam("vit_b", data / "teacher.pth", img_size=SIZE)
    same = evaluate(teacher, teacher, str(data / "held"), grid=2)
    assert same["miou"] == {"box": 1.0, "point": 1.0, "two_points": 1.0} and same["embedding_mse"] == 0.0
    assert same["n_images"] == 2 and same["n_masks"] > 0

    torch.manual_seed(0)
    untrained = build_sam("vit_t", img_size=SIZE)
    untrained.load_state_dict(
        {k: v for k, v in untrained.state_dict().items()}
        | {
            k: v
            for k, v in torch.load(data / "teacher.pth", weights_only=True).items()
            if not k.startswith("image_encoder.")
        }
    )
    torch.save(untrained.state_dict(), tmp_path / "untrained.pt")
    train(_config(data, tmp_path / "run", teacher_checkpoint=str(data / "teacher.pth")))
    before = evaluate(untrained, teacher, str(data / "held"), grid=2)
    args = [
        "distill",
        "evaluate",
        "--student",
        str(tmp_path / "run" / "student.pt"),
        "--teacher",
        f"vit_b:{data / 'teacher.pth'}",
        "--images",
        str(data / "held"),
        "--img-size",
        str(SIZE),
        "--grid",
        "2",
        "--json",
        str(tmp_path / "eval.json"),
    ]
    assert main(args) == 0
    assert "| box |" in capsys.readouterr().out
    after = json.loads((tmp_path / "eval.json").read_text())
    assert after["embedding_mse"] < before["embedding_mse"]
    mean = lambda r: np.mean(list(r["miou"].values()))  # noqa: E731
    assert mean(after) > mean(before), (before["miou"], after["miou"])
