"""Segment everything and the teacher cache on Ray Data: the same outputs as one process,
resumable, a worker that dies costs nothing. A local Ray (2 CPUs, no dashboard)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from conftest import IMAGES, SMALL
from PIL import Image

ray = pytest.importorskip("ray")

from mobilesam import MobileSAM  # noqa: E402
from mobilesam.batch import FolderJob  # noqa: E402
from mobilesam.ray_engine import EverythingWorker, RayOptions, cache_on_ray, segment_everything_on_ray  # noqa: E402

pytestmark = pytest.mark.slow  # Ray starts workers and loads a model in each (about 2 minutes here)

OPTIONS = {"points_per_side": 2, "iou_thres": 0.5, "stability_score_thres": 0.5}
QUIET = {"progress": lambda _: None}


@pytest.fixture(scope="module")
def local_ray():
    import sys

    # Workers pickle the test's worker subclass by value (tests/ is not on their path).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"Ray started in {time.perf_counter() - start:.1f} s")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six small photos and a corrupt file."""
    folder = tmp_path_factory.mktemp("ray_photos")
    names = ["picture1.jpg", "picture2.jpg", "picture3.jpg", "picture4.jpg", "picture5.jpg", "truck.jpg"]
    for i, name in enumerate(names):
        Image.open(IMAGES / name).resize((96, 64)).save(folder / f"{i}.jpg")
    (folder / "9_corrupt.jpg").write_bytes(b"not a jpeg")
    return folder


@pytest.fixture(scope="module")
def folder_mode(photos, ckpt_vit_t, tmp_path_factory):
    """The reference: folder mode in this process, one thread like a 1-CPU Ray worker (the
    float sums, and a few edge pixels with them, depend on the thread count); its COCO
    and, in its folder, the per-image PNGs with soft edges (`_pngs`)."""
    out = tmp_path_factory.mktemp("folder_mode")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        FolderJob(photos, out, OPTIONS, files=_soft_pngs(out), **QUIET).run(
            MobileSAM(ckpt_vit_t, device="cpu", img_size=SMALL)
        )
    finally:
        torch.set_num_threads(threads)
    return {**json.loads((out / "annotations.json").read_text()), "pngs": _pngs(out)}


def _soft_pngs(root):
    from mobilesam.batch import ImageFiles

    return ImageFiles(root / "masks", root / "cutouts", soft=True)


def _pngs(root, under: str = "") -> dict:
    """Every per-image PNG's bytes, by its path under masks/ or cutouts/ (and `under`)."""
    return {
        f"{kind}/{p.relative_to(root / kind / under).as_posix()}": p.read_bytes()
        for kind in ("masks", "cutouts")
        for p in sorted((root / kind / under).rglob("*"))
        if p.is_file()
    }


def _model(ckpt) -> dict:
    return {"checkpoint": str(ckpt), "model_type": "vit_t", "img_size": SMALL}


def _same_coco(a: dict, b: dict) -> None:
    assert a["images"] == b["images"]
    assert len(a["annotations"]) == len(b["annotations"]) > 0
    for x, y in zip(a["annotations"], b["annotations"]):
        assert (
            x["segmentation"] == y["segmentation"] and x["image_id"] == y["image_id"] and x["id"] == y["id"]
        )
        assert (
            abs(x["score"] - y["score"]) <= 1e-6 and abs(x["stability_score"] - y["stability_score"]) <= 1e-6
        )

    def failures(coco):  # the error names the file by its path, which may be another copy
        return [(f["file_name"], f["error"].rsplit("/", 1)[-1]) for f in coco["failures"]]

    assert failures(a) == failures(b) and [f["file_name"] for f in a["failures"]] == ["9_corrupt.jpg"]


def test_ray_equals_folder_mode_resumes_and_draws_overlays(
    local_ray, photos, ckpt_vit_t, folder_mode, tmp_path
):
    """Interrupted after two images, then resumed: each image once, folder mode's COCO.
    --overlays: the workers draw them, the driver writes them (none for the corrupt file),
    the same pixels as folder mode draws from the saved masks; a rerun redraws missing
    overlays of finished images without segmenting them again, and says which it cannot.
    The photos sit in a subfolder, read with --recursive: each image is known by its path
    (`sub/0.jpg`) in the ids, parts, overlays and COCO, as in folder mode.
    --masks-dir and --cutouts-dir with --soft: the workers make the PNGs, the driver writes
    the same files as folder mode, byte for byte (none for the corrupt file); an image
    whose mask folder was removed is segmented again, the rest skipped."""
    import shutil

    from mobilesam.batch import result_from_part
    from mobilesam.image_io import load_image

    src, out = tmp_path / "src", tmp_path / "out"
    shutil.copytree(photos, src / "sub")
    seen, said = [], []

    def stop_after_two(name):
        seen.append(name)
        if len(seen) == 2:
            raise KeyboardInterrupt

    def job():
        files = _soft_pngs(out)
        return FolderJob(src, out, OPTIONS, overlays=True, progress=said.append, recursive=True, files=files)

    first = segment_everything_on_ray(job(), _model(ckpt_vit_t), RayOptions(), on_result=stop_after_two)
    assert first.interrupted and len(first.done) + len(first.failed) == 2
    rest = segment_everything_on_ray(job(), _model(ckpt_vit_t), RayOptions())
    assert not rest.interrupted and sorted(rest.skipped) == sorted(first.done)
    done = first.done + rest.done
    assert len(done) == 6 and all(name.startswith("sub/") for name in done)  # each image once
    coco = json.loads((out / "annotations.json").read_text())
    for record in coco["images"] + coco["failures"]:
        record["file_name"] = record["file_name"].removeprefix("sub/")  # folder mode ran in photos/
    _same_coco(coco, folder_mode)
    assert len(folder_mode["pngs"]) >= 12 and _pngs(out, "sub") == folder_mode["pngs"]

    overlays = sorted(p.relative_to(out / "overlays").as_posix() for p in (out / "overlays").rglob("*.png"))
    assert overlays == sorted(f"{name}.png" for name in done)
    expected = {}
    for name in done:
        part = json.loads((out / "parts" / f"{name}.json").read_text())
        expected[name] = np.asarray(result_from_part(load_image(src / name), part).overlay())
        assert expected[name].shape == (64, 96, 3)
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / "overlays" / f"{name}.png")), expected[name]
        )
    for name in done[:2]:
        (out / "overlays" / f"{name}.png").unlink()
    (src / done[1]).write_bytes(b"gone bad since")  # a finished image that cannot be read now
    shutil.rmtree(out / "masks" / done[2])
    again = segment_everything_on_ray(job(), _model(ckpt_vit_t), RayOptions())
    assert again.done == [done[2]] and len(again.skipped) == 5
    assert _pngs(out, "sub") == folder_mode["pngs"]
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "overlays" / f"{done[0]}.png")), expected[done[0]]
    )
    assert not (out / "overlays" / f"{done[1]}.png").exists()
    assert any(m.startswith(f"{done[1]}: overlay not drawn:") for m in said)


class _DiesOnce(EverythingWorker):
    """A worker whose process dies on its first batch (as on a lost node), once."""

    marker = ""

    def __call__(self, batch):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().__call__(batch)


def test_the_driver_records_the_workers_model(ckpt_vit_t):
    """What the driver records in run.json and the parts, without loading the model, is
    what the same model records in one process: each engine resumes the other's runs."""
    from mobilesam.ray_engine import _model_record

    assert (
        _model_record(_model(ckpt_vit_t))
        == MobileSAM(ckpt_vit_t, device="cpu", img_size=SMALL).model_record()
    )


def test_a_dead_worker_is_retried_and_nothing_is_lost(local_ray, photos, ckpt_vit_t, folder_mode, tmp_path):
    worker = type("DiesOnce", (_DiesOnce,), {"marker": str(tmp_path / "died")})
    summary = segment_everything_on_ray(
        FolderJob(photos, tmp_path / "out", OPTIONS, **QUIET), _model(ckpt_vit_t), RayOptions(), worker=worker
    )
    assert (tmp_path / "died").exists() and len(summary.done) == 6
    _same_coco(json.loads((tmp_path / "out" / "annotations.json").read_text()), folder_mode)


def test_teacher_cache_on_ray_equals_one_process(local_ray, distill_data, tmp_path):
    """Ray's cache: the one-process cache's entries and failures, resumable; bf16 when asked."""
    from conftest import DISTILL_SIZE

    from mobilesam.distill.cache import EmbeddingCache

    teacher = {
        "model_type": "vit_b",
        "checkpoint": str(distill_data / "teacher.pth"),
        "img_size": DISTILL_SIZE,
    }
    images = tmp_path / "images"
    images.mkdir()
    for p in (distill_data / "train").iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.jpg").write_bytes(b"nope")
    cache = EmbeddingCache(tmp_path / "cache")
    summary = cache_on_ray(cache, teacher, "vit_b", images, RayOptions(num_workers=2, batch_size=3))
    assert summary.done == 4 and set(summary.failed) == {"broken.jpg"}
    assert not list((tmp_path / "cache").glob("index.shard_*.json"))  # fragments merged
    reference = EmbeddingCache(distill_data / "cache_train")
    reopened = EmbeddingCache(tmp_path / "cache")
    assert reopened.ids() == reference.ids() and reopened.index["failures"] == {
        "broken.jpg": summary.failed["broken.jpg"]
    }
    for image_id in reference.ids():
        np.testing.assert_allclose(
            reopened.get(image_id).astype(np.float32),
            reference.get(image_id).astype(np.float32),
            atol=2e-3,
            rtol=2e-3,
        )
    assert cache_on_ray(reopened, teacher, "vit_b", images, RayOptions()).skipped == 4  # resumes
    # --precision bf16 reaches the workers (the default on GPU workers)
    bf16 = EmbeddingCache(tmp_path / "bf16")
    assert cache_on_ray(bf16, teacher, "vit_b", images, RayOptions(batch_size=4), precision="bf16").done == 4
    for image_id in reference.ids():
        got, ref = bf16.get(image_id).astype(np.float32), reference.get(image_id).astype(np.float32)
        assert 1e-3 < np.abs(got - ref).max() / np.abs(ref).max() < 0.05


def test_boxes_to_masks_on_ray_equals_one_process(local_ray, photos, ckpt_vit_t, tmp_path, capsys):
    """`boxes-to-masks --engine ray`: the masks, failures and overlays of one process; a
    rerun skips every finished image (and tries the corrupt file again)."""
    from mobilesam.box_job import BoxJob
    from mobilesam.cli import main

    names = ["0.jpg", "1.jpg", "2.jpg", "9_corrupt.jpg"]
    coco = {
        "images": [{"id": i, "file_name": n} for i, n in enumerate(names)],
        "annotations": [
            {"id": 1, "image_id": 0, "bbox": [5, 5, 40, 30], "category_id": 1},
            {"id": 2, "image_id": 0, "bbox": [50, 20, 30, 30], "category_id": 1},
            {"id": 3, "image_id": 1, "bbox": [10, 10, 20, 20], "category_id": 1},
            {"id": 4, "image_id": 2, "bbox": [500, 500, 5, 5], "category_id": 1},  # off the image
            {"id": 5, "image_id": 3, "bbox": [1, 1, 5, 5], "category_id": 1},
        ],
    }
    coco["images"][2].update(width=96, height=64)
    src = tmp_path / "boxes.json"
    src.write_text(json.dumps(coco))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a 1-CPU worker
    try:
        BoxJob(src, photos, tmp_path / "one", **QUIET).run(
            MobileSAM(ckpt_vit_t, device="cpu", img_size=SMALL)
        )
    finally:
        torch.set_num_threads(threads)
    args = ["boxes-to-masks", str(src), "--images", str(photos), "-o", str(tmp_path / "ray"), "--overlays"]
    args += [
        "--engine",
        "ray",
        "--batch-size",
        "2",
        "--checkpoint",
        str(ckpt_vit_t),
        "--img-size",
        str(SMALL),
    ]
    assert main(args) == 1  # the corrupt file
    one = json.loads((tmp_path / "one" / "annotations.json").read_text())
    on_ray = json.loads((tmp_path / "ray" / "annotations.json").read_text())
    assert [a["id"] for a in on_ray["annotations"]] == [1, 2, 3]
    for a, b in zip(on_ray["annotations"], one["annotations"]):
        assert a["segmentation"] == b["segmentation"] and abs(a["score"] - b["score"]) <= 1e-6
    failures = [(f["file_name"], f.get("annotation_id")) for f in on_ray["failures"]]
    assert failures == [(f["file_name"], f.get("annotation_id")) for f in one["failures"]]
    assert failures == [("2.jpg", 4), ("9_corrupt.jpg", None)]
    overlays = sorted(p.name for p in (tmp_path / "ray" / "overlays").glob("*.png"))
    assert overlays == ["0.jpg.png", "1.jpg.png"]
    capsys.readouterr()
    assert main(args) == 1
    assert "done 0, skipped 3 (already done), failed 1" in capsys.readouterr().out
