"""Folder mode never loses work and is never silently wrong: stable ids, recorded options,
one writer, outputs checked before compute, overlays never missing."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pytest
from conftest import IMAGES, SMALL, nested_photos
from PIL import Image

from mobilesam import MobileSAM, MobileSAMError, PromptError
from mobilesam.batch import FolderJob, ImageFiles, segment_folder
from mobilesam.cli import main
from mobilesam.errors import OutputError

FAST = {"points_per_side": 2, "iou_thres": 0.5, "stability_score_thres": 0.5}
QUIET = {"progress": lambda _: None}


@pytest.fixture(scope="module")
def sam(ckpt_vit_t):
    return MobileSAM(ckpt_vit_t, device="cpu", img_size=SMALL)


def _photos(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        src = ["picture1.jpg", "picture2.jpg", "picture3.jpg", "picture4.jpg", "picture5.jpg"][i % 5]
        Image.open(IMAGES / src).resize((96, 64)).save(folder / name)
    return folder


def _coco(out):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = json.loads((out / "annotations.json").read_text())
    coco.createIndex()  # fails on duplicate image ids or annotations of unknown images
    return coco


class _NoCompute:
    """A stand-in model: any segmentation is a test failure (checks must come first)."""

    def segment_everything(self, *args, **kwargs):
        raise AssertionError("computed before the output checks")


def test_ids_stay_stable_when_files_come_and_go(sam, tmp_path):
    photos = _photos(tmp_path / "in", ["a.jpg", "b.jpg", "c.jpg"])
    out = tmp_path / "out"
    segment_folder(sam, photos, out, FAST, max_images=2, **QUIET)  # interrupted after two
    first = {im["file_name"]: im["id"] for im in json.loads((out / "annotations.json").read_text())["images"]}
    assert first == {"a.jpg": 1, "b.jpg": 2}
    (photos / "b.jpg").unlink()
    _photos(photos, ["0_new.jpg"])  # sorts first: a listing position would change every id
    segment_folder(sam, photos, out, FAST, **QUIET)
    coco = _coco(out)
    ids = {im["file_name"]: im["id"] for im in coco.dataset["images"]}
    assert ids == {"0_new.jpg": 4, "a.jpg": 1, "c.jpg": 3}  # b's id 2 is never given again
    for ann in coco.dataset["annotations"]:
        assert ann["image_id"] in coco.imgs
        from pycocotools import mask as coco_mask

        rle_ = {**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()}
        assert coco_mask.toBbox(rle_).tolist() == ann["bbox"]
    assert json.loads((out / "ids.json").read_text())["b.jpg"] == 2


def test_other_options_are_refused_unless_overwrite(sam, tmp_path):
    photos = _photos(tmp_path / "in", ["a.jpg"])
    out = tmp_path / "out"
    segment_folder(sam, photos, out, FAST, **QUIET)
    explicit_defaults = {**FAST, "box_nms_thres": 0.7, "input_size_percent": "100"}
    assert segment_folder(sam, photos, out, explicit_defaults, **QUIET).skipped == ["a.jpg"]
    with pytest.raises(PromptError, match=r"other options \(points_per_side\).*--overwrite"):
        segment_folder(sam, photos, out, {**FAST, "points_per_side": 3}, **QUIET)
    redone = segment_folder(sam, photos, out, {**FAST, "points_per_side": 3}, overwrite=True, **QUIET)
    assert redone.done == ["a.jpg"]
    record = json.loads((out / "run.json").read_text())
    assert record["options"]["points_per_side"] == 3 and record["options"]["decoder_precision"] == "float32"
    # The bf16 decoder makes other masks: another option. A record made before the
    # option existed counts as float32.
    with pytest.raises(PromptError, match=r"other options \(decoder_precision\)"):
        segment_folder(sam, photos, out, {**FAST, "points_per_side": 3, "decoder_precision": "bf16"}, **QUIET)
    del record["options"]["decoder_precision"]
    (out / "run.json").write_text(json.dumps(record))
    assert segment_folder(sam, photos, out, {**FAST, "points_per_side": 3}, **QUIET).skipped == ["a.jpg"]
    with pytest.raises(PromptError, match="decoder_precision"):
        segment_folder(sam, photos, out, {**FAST, "decoder_precision": "fp16"}, **QUIET)


def test_another_model_is_refused_unless_overwrite(sam, ckpt_vit_t, tmp_path):
    """run.json records the model (type, input size, precision, checkpoint checksum): a
    rerun with another one is refused, not mixed in; a model not known (a bare predictor)
    or a record from before models were recorded is not compared."""
    import hashlib

    from mobilesam import SamPredictor
    from mobilesam.highlevel import Segmenter

    photos, out = _photos(tmp_path / "in", ["a.jpg"]), tmp_path / "out"
    segment_folder(sam, photos, out, FAST, **QUIET)
    record = json.loads((out / "run.json").read_text())["model"]
    sha = hashlib.sha256(ckpt_vit_t.read_bytes()).hexdigest()
    assert record == {
        "backend": "torch",
        "model_type": "vit_t",
        "img_size": SMALL,
        "precision": "float32",
        "checkpoint_sha256": sha,
    }
    other = MobileSAM(ckpt_vit_t, device="cpu", img_size=2 * SMALL)
    with pytest.raises(PromptError, match=r"other options \(model img_size\).*--overwrite"):
        segment_folder(other, photos, out, FAST, **QUIET)
    bare = Segmenter(SamPredictor(other.model))
    assert segment_folder(bare, photos, out, FAST, **QUIET).skipped == ["a.jpg"]
    assert json.loads((out / "run.json").read_text())["model"] == record
    assert segment_folder(other, photos, out, FAST, overwrite=True, **QUIET).done == ["a.jpg"]
    assert json.loads((out / "run.json").read_text())["model"]["img_size"] == 2 * SMALL
    old = json.loads((out / "run.json").read_text())
    del old["model"]
    (out / "run.json").write_text(json.dumps(old))
    assert segment_folder(sam, photos, out, FAST, **QUIET).skipped == ["a.jpg"]
    assert json.loads((out / "run.json").read_text())["model"] == record


def test_a_second_run_on_the_same_output_is_refused(sam, tmp_path):
    import fcntl

    photos = _photos(tmp_path / "in", ["a.jpg"])
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match="another mobilesam run is writing"):
            segment_folder(_NoCompute(), photos, out, FAST, **QUIET)
    assert segment_folder(sam, photos, out, FAST, **QUIET).done == ["a.jpg"]  # free again


def test_output_problems_are_found_before_any_compute(tmp_path, monkeypatch):
    photos = _photos(tmp_path / "in", ["a.jpg"])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        segment_folder(_NoCompute(), photos, tmp_path / "afile", FAST, **QUIET)
    with pytest.raises(OutputError, match="inside the input folder"):
        segment_folder(_NoCompute(), photos, photos / "labels", FAST, **QUIET)
    with pytest.raises(PromptError, match="iou_thres"):
        FolderJob(photos, tmp_path / "o", {"iou_thres": 2})

    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # a read-only place (root ignores chmod)
    with pytest.raises(OutputError, match=r"cannot write to output folder .*Permission denied"):
        segment_folder(_NoCompute(), photos, tmp_path / "ro", FAST, **QUIET)


def test_full_disk_stops_with_one_line_and_nothing_half_written(ckpt_vit_t, tmp_path, monkeypatch, capsys):
    import mobilesam.batch as batch

    photos = _photos(tmp_path / "in", ["a.jpg", "b.jpg"])
    out = tmp_path / "out"
    real = batch.atomic_write_text

    def full(path, text):
        if "parts" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(batch, "atomic_write_text", full)
    args = [
        "everything",
        str(photos),
        "-o",
        str(out),
        "--checkpoint",
        str(ckpt_vit_t),
        "--img-size",
        str(SMALL),
        "--points-per-side",
        "2",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err
    assert not list(out.rglob("*.tmp")) and not list((out / "parts").iterdir())
    monkeypatch.setattr(batch, "atomic_write_text", real)
    assert main(args) == 0  # space again: the run completes


def test_an_overlay_is_never_missing(sam, tmp_path, monkeypatch):
    """Killed after the overlay, before the part: the image is redone, nothing is missing."""
    import mobilesam.batch as batch

    photos = _photos(tmp_path / "in", ["a.jpg"])
    out = tmp_path / "out"
    real = batch.atomic_write_text

    def killed(path, text):
        if "parts" in str(path):
            raise KeyboardInterrupt
        return real(path, text)

    monkeypatch.setattr(batch, "atomic_write_text", killed)
    assert segment_folder(sam, photos, out, FAST, overlays=True, **QUIET).interrupted
    assert (out / "overlays" / "a.jpg.png").is_file() and not (out / "parts" / "a.jpg.json").exists()
    monkeypatch.setattr(batch, "atomic_write_text", real)
    assert segment_folder(sam, photos, out, FAST, overlays=True, **QUIET).done == ["a.jpg"]


def test_cli_folder_refuses_one_image_outputs_and_runs_with_threads(ckpt_vit_t, tmp_path, capsys):
    photos = _photos(tmp_path / "in", ["a.jpg"])
    base = ["everything", str(photos), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt_vit_t)]
    base += ["--img-size", str(SMALL)]
    for extra in (["--json", "x.json"], ["--label-map", "l.png"], ["--svg", "m.svg"]):
        assert main(base + extra) == 2
        assert "one-image outputs" in capsys.readouterr().err
    assert main([*base, "--points-per-side", "2", "--threads", "1"]) == 0
    assert "done 1" in capsys.readouterr().out


def test_cli_box_values(ckpt_vit_t, tmp_path, capsys):
    image = str(IMAGES / "picture1.jpg")
    ck = ["--checkpoint", str(ckpt_vit_t), "--img-size", str(SMALL)]
    # A box sticking out past the top-left corner is clipped, as documented.
    assert main(["segment", image, "--box", "-50,-50,100,100", *ck, "--json", str(tmp_path / "r.json")]) == 0
    box = json.loads((tmp_path / "r.json").read_text())["annotations"][0]["prompt"]["box"]
    assert box == [0, 0, 100, 100]
    # No abbreviations: `--box` is not `--box-nms-thres` on `everything`.
    with pytest.raises(SystemExit) as exc:
        main(["everything", image, "--box", "0.5", *ck])
    assert exc.value.code == 2 and "unrecognized arguments: --box" in capsys.readouterr().err


def test_cli_output_paths_fail_before_compute(ckpt_vit_t, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    image = str(IMAGES / "picture1.jpg")
    cases = [
        ["segment", image, "--box", "1,1,50,50", "--masks-dir", str(tmp_path / "afile")],
        ["segment", image, "--box", "1,1,50,50", "-o", str(tmp_path)],  # a folder, not a file
        ["export", "onnx", "--out", str(tmp_path / "afile")],
    ]
    for args in cases:
        assert main([*args, "--checkpoint", str(ckpt_vit_t)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mobilesam: error: output") and err.count("\n") == 1, err


def test_weights_list_damaged_and_broken_pipe(tmp_path):
    import os
    import subprocess
    import sys

    from mobilesam.weights import get_weights

    (tmp_path / get_weights("vit_t").filename).write_bytes(b"half a download")
    env = {**os.environ, "MOBILESAM_HOME": str(tmp_path)}
    listing = subprocess.run(
        [sys.executable, "-m", "mobilesam", "weights", "list"], env=env, capture_output=True, text=True
    )
    assert listing.returncode == 0 and "DAMAGED" in listing.stdout.splitlines()[0]
    piped = subprocess.run(
        f"{sys.executable} -m mobilesam weights list | head -1",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr


def test_one_pixel_image_everything(sam, recwarn):
    """A 1x1 image: one mask (not one copy per grid point), no divide-by-zero warning."""
    result = sam.segment_everything(
        np.full((1, 1, 3), 120, np.uint8), points_per_side=4, iou_thres=0.0, stability_score_thres=0.0
    )
    assert len(result) == 1 and result.masks.shape == (1, 1, 1)
    assert not [w for w in recwarn if "divide" in str(w.message)]


@pytest.mark.parametrize("shape", [(1, 3000), (3000, 1)])
def test_one_pixel_strips(sam, shape):
    """A scan line or a 1-pixel column: the resize keeps 1 pixel across (segment-anything's
    rounding gives 0, which no resize takes), and crops that would be empty are left out."""
    h, w = shape
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    boxed = sam.segment(image, input_box=[0, 0, w, h])
    assert boxed.masks.shape == (1, h, w) and boxed.masks.any()
    pointed = sam.segment(image, input_point=[[w / 2, h / 2]], input_point_label=[1])
    assert pointed.masks.shape == (1, h, w)
    result = sam.segment_everything(
        image, points_per_side=4, crop_n_layers=2, iou_thres=0.0, stability_score_thres=0.0
    )
    assert len(result) >= 1 and result.masks.shape[1:] == (h, w)


def test_many_boxes_decode_in_chunks(sam, small_truck_predictor):
    """Hundreds of boxes in one call: decoded in chunks, the same masks as one at a time."""
    rng = np.random.default_rng(0)
    x0, y0 = rng.integers(0, 1500, 150), rng.integers(0, 900, 150)
    boxes = np.stack([x0, y0, x0 + rng.integers(20, 300, 150), y0 + rng.integers(20, 300, 150)], 1)
    result = sam.segment(IMAGES / "truck.jpg", input_box=boxes)
    assert result.masks.shape == (150, 1200, 1800)
    for i in (0, 77, 149):
        ref, ref_score, _ = small_truck_predictor.predict(box=boxes[i], multimask_output=False)
        assert (
            np.logical_and(ref[0], result.masks[i]).sum()
            >= 0.999 * np.logical_or(ref[0], result.masks[i]).sum()
        )
        assert abs(float(ref_score[0]) - float(result.scores[i])) <= 1e-3


def test_recursive_folder(sam, tmp_path):
    """--recursive: the subfolders' images, known by their path in the folder (ids, parts,
    overlays and COCO file_name), so that equal names in two folders are two images; a
    rerun skips them all, --overwrite removes the nested parts and overlays."""
    photos, out = nested_photos(tmp_path / "in"), tmp_path / "out"
    keys = ["cam1/a.jpg", "cam2/a.jpg", "cam2/deep/b.jpg", "top.jpg"]
    summary = segment_folder(sam, photos, out, FAST, overlays=True, recursive=True, **QUIET)
    assert summary.done == keys and not summary.failed
    coco = _coco(out)
    images = coco.dataset["images"]
    assert [im["file_name"] for im in images] == keys and [im["id"] for im in images] == [1, 2, 3, 4]
    for im in images:  # file_name joined to the folder is the image (as COCO loaders read it)
        with Image.open(photos / im["file_name"]) as img:
            assert img.size == (im["width"], im["height"])
    assert json.loads((out / "ids.json").read_text()) == {k: i for i, k in enumerate(keys, 1)}
    assert all(
        (out / "overlays" / f"{k}.png").is_file() and (out / "parts" / f"{k}.json").is_file() for k in keys
    )
    assert segment_folder(sam, photos, out, FAST, recursive=True, **QUIET).skipped == keys
    again = segment_folder(
        sam, photos, out, {**FAST, "iou_thres": 0.6}, overwrite=True, recursive=True, **QUIET
    )
    assert again.done == keys and not (out / "overlays" / "cam1" / "a.jpg.png").exists()
    flat = segment_folder(sam, photos, tmp_path / "flat", FAST, **QUIET)
    assert flat.done == ["top.jpg"]  # without it, only the folder's own files
    with pytest.raises(PromptError, match="recursive"):
        segment_folder(_NoCompute(), photos / "top.jpg", tmp_path / "o", FAST, recursive=True, **QUIET)
    assert main(["everything", str(photos / "top.jpg"), "-r", "--checkpoint", "x.pt"]) == 2
    # A folder with nothing of its own is no error (a day with no photos), but it is said,
    # with where the photos are when they sit in its subfolders.
    said, holder = [], tmp_path / "holder"
    (holder / "day1").mkdir(parents=True)
    shutil.copy(photos / "top.jpg", holder / "day1" / "top.jpg")
    (tmp_path / "empty").mkdir()
    for folder, hint in ((holder, "; its subfolders hold some: pass --recursive"), (tmp_path / "empty", "")):
        summary = segment_folder(_NoCompute(), folder, tmp_path / "o", FAST, progress=said.append)
        assert summary.done == [] and not summary.failed
        assert said[-1] == f"no files in {folder}{hint}"


def test_a_list_file_as_source(sam, tmp_path):
    """SOURCE may be a text file of image paths (relative to it; UTF-8, a Windows editor's
    BOM and CRLF lines too): the same results and ids as the folder; names must be unique."""
    photos = _photos(tmp_path / "in", ["a.jpg", "b.jpg"])
    listing = tmp_path / "list.txt"
    listing.write_text("\ufeffin/b.jpg\r\n\r\nin/a.jpg\r\n", encoding="utf-8", newline="")
    from_list = segment_folder(sam, listing, tmp_path / "o1", FAST, **QUIET)
    from_dir = segment_folder(sam, photos, tmp_path / "o2", FAST, **QUIET)
    assert from_list.done == ["b.jpg", "a.jpg"] and from_dir.done == ["a.jpg", "b.jpg"]
    a, b = (json.loads((tmp_path / o / "annotations.json").read_text()) for o in ("o1", "o2"))
    by_name = {im["file_name"]: im["id"] for im in a["images"]}
    assert by_name == {"b.jpg": 1, "a.jpg": 2}  # ids in listing order, given once
    masks = {
        im["file_name"]: [x["segmentation"] for x in a["annotations"] if x["image_id"] == im["id"]]
        for im in a["images"]
    }
    ref = {
        im["file_name"]: [x["segmentation"] for x in b["annotations"] if x["image_id"] == im["id"]]
        for im in b["images"]
    }
    assert masks == ref
    (tmp_path / "dup.txt").write_text("in/a.jpg\nother/a.jpg\n")
    with pytest.raises(MobileSAMError, match="several files named"):
        segment_folder(_NoCompute(), tmp_path / "dup.txt", tmp_path / "o3", FAST, **QUIET)


def _pngs(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.iterdir())}


def test_per_image_masks_and_cutouts(sam, tmp_path, monkeypatch):
    """--masks-dir / --cutouts-dir for a folder: one folder of PNGs per image, equal to
    the image's annotations (soft: `soft_mask` exactly), complete before its part; a
    missing or half-written folder is made again; other edges need overwrite."""
    import mobilesam.batch as batch
    from mobilesam.utils import rle

    many = {"points_per_side": 2, "iou_thres": 0, "stability_score_thres": 0, "box_nms_thres": 1}
    photos = _photos(tmp_path / "in", ["a.jpg", "b.jpg"])
    (photos / "c.jpg").write_bytes(b"not a jpeg")
    out, masks, cutouts = tmp_path / "out", tmp_path / "masks", tmp_path / "cutouts"
    files = ImageFiles(masks, cutouts)
    (cutouts / ".b.jpg.partial").mkdir(parents=True)  # left by a run killed while writing
    summary = segment_folder(sam, photos, out, many, files=files, **QUIET)
    assert summary.done == ["a.jpg", "b.jpg"] and list(summary.failed) == ["c.jpg"]
    assert (
        sorted(p.name for p in masks.iterdir())
        == sorted(p.name for p in cutouts.iterdir())
        == ["a.jpg", "b.jpg"]
    )
    coco = _coco(out)
    for image in coco.dataset["images"]:
        anns = coco.imgToAnns[image["id"]]
        pngs, cuts = _pngs(masks / image["file_name"]), _pngs(cutouts / image["file_name"])
        assert len(pngs) == len(anns) == 12 and len(cuts) == sum(1 for a in anns if a["area"])
        for i, ann in enumerate(anns):
            m = rle.decode(ann["segmentation"])
            assert np.array_equal(pngs[f"mask_{i:03d}.png"] > 0, m)
            assert (cuts[f"cutout_{i:03d}.png"][..., 3] > 0).sum() == ann["area"]

    # A folder removed is made again (its image segmented again); one killed before its
    # part is replaced whole when the image is redone.
    a_masks = _pngs(masks / "a.jpg")
    for p in (masks / "a.jpg").iterdir():
        p.unlink()
    (masks / "a.jpg").rmdir()
    (cutouts / "b.jpg" / "cutout_000.png").unlink()  # not checked file by file: a folder is whole
    again = segment_folder(sam, photos, out, many, files=files, **QUIET)
    assert again.done == ["a.jpg"] and again.skipped == ["b.jpg"]
    assert _pngs(masks / "a.jpg").keys() == a_masks.keys()
    assert all(np.array_equal(v, a_masks[k]) for k, v in _pngs(masks / "a.jpg").items())
    real = batch.atomic_write_text

    def killed(path, text):
        if "parts" in str(path):
            raise KeyboardInterrupt
        return real(path, text)

    (out / "parts" / "b.jpg.json").unlink()
    (cutouts / "b.jpg" / "stale.png").write_bytes(b"")
    monkeypatch.setattr(batch, "atomic_write_text", killed)
    assert segment_folder(sam, photos, out, many, files=files, **QUIET).interrupted
    monkeypatch.setattr(batch, "atomic_write_text", real)
    assert not (cutouts / "b.jpg" / "stale.png").exists() and (cutouts / "b.jpg" / "cutout_000.png").is_file()
    assert segment_folder(sam, photos, out, many, files=files, **QUIET).done == ["b.jpg"]
    assert not list(tmp_path.rglob("*.partial"))

    # Soft edges: other edges than the PNGs there were made with, so only with overwrite.
    soft = ImageFiles(masks, cutouts, soft=True)
    with pytest.raises(PromptError, match="soft"):
        segment_folder(_NoCompute(), photos, out, many, files=soft, **QUIET)
    assert segment_folder(sam, photos, out, many, files=soft, overwrite=True, **QUIET).done == [
        "a.jpg",
        "b.jpg",
    ]
    reference = sam.segment_everything(photos / "a.jpg", keep_logits=True, **many)
    pngs = _pngs(masks / "a.jpg")
    assert all(
        np.array_equal(pngs[f"mask_{i:03d}.png"], reference.soft_mask(i)) for i in range(len(reference))
    )
    assert any(((v > 0) & (v < 255)).any() for v in pngs.values())
    # A run without PNGs keeps the record of their edges; the next with other edges is refused.
    assert segment_folder(sam, photos, out, many, **QUIET).skipped == ["a.jpg", "b.jpg"]
    assert json.loads((out / "run.json").read_text())["edges"] == {"dilate": 0.0, "soft": True}
    with pytest.raises(PromptError, match="dilate, soft"):
        segment_folder(_NoCompute(), photos, out, many, files=ImageFiles(masks, dilate=3), **QUIET)


def test_per_image_pngs_are_checked_before_any_compute(ckpt_vit_t, tmp_path, capsys):
    photos = _photos(tmp_path / "in", ["a.jpg"])
    with pytest.raises(OutputError, match="masks_dir or cutouts_dir"):
        ImageFiles(soft=True)
    with pytest.raises(OutputError, match="masks_dir or cutouts_dir"):
        ImageFiles(dilate=2)
    with pytest.raises(OutputError, match="one of them"):
        ImageFiles(cutouts_dir=tmp_path / "c", dilate=2, soft=True)
    with pytest.raises(PromptError, match="dilate"):
        ImageFiles(cutouts_dir=tmp_path / "c", dilate=-1)
    with pytest.raises(OutputError, match=r"PNG folder .* is inside the input folder"):
        segment_folder(_NoCompute(), photos, tmp_path / "o", FAST, files=ImageFiles(photos / "m"), **QUIET)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        segment_folder(
            _NoCompute(), photos, tmp_path / "o", FAST, files=ImageFiles(None, tmp_path / "afile"), **QUIET
        )
    base = ["everything", str(photos), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt_vit_t)]
    base += ["--img-size", str(SMALL)]
    assert main([*base, "--soft"]) == 2 and "--soft shapes" in capsys.readouterr().err
    stickers = tmp_path / "stickers"
    assert main([*base, "--points-per-side", "2", "--cutouts-dir", str(stickers), "--soft"]) == 0
    assert "done 1" in capsys.readouterr().out
    alpha = [v[..., 3] for v in _pngs(stickers / "a.jpg").values()]
    assert alpha and all(((a > 0) & (a < 255)).any() for a in alpha)


def test_packed_pngs_unpack_to_the_files_write_makes(sam, tmp_path):
    """A Ray worker packs an image's PNGs, the driver unpacks them: the same files as
    `write` makes (none written by `pack` itself; an image with no masks gets its empty
    folders); a zip with other names (a way out of the folder, a nested one) is refused,
    nothing written."""
    import io
    import zipfile

    def tree(root):
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    many = {"points_per_side": 2, "iou_thres": 0, "stability_score_thres": 0, "box_nms_thres": 1}
    image = np.asarray(Image.open(IMAGES / "picture1.jpg").resize((160, 120)))
    result = sam.segment_everything(image, keep_logits=True, **many)
    none = sam.segment_everything(image, points_per_side=2, stability_score_thres=1.0)
    assert len(result) == 12 and len(none) == 0
    for edges in ({"soft": True}, {"dilate": 2}):
        made, sent = tmp_path / "made" / str(edges), tmp_path / "sent" / str(edges)
        ImageFiles(made / "m", made / "c", **edges).write("cam/p.jpg", result)
        files = ImageFiles(sent / "m", sent / "c", **edges)
        packed = files.pack(result)
        assert not sent.exists()
        files.unpack("cam/p.jpg", packed)
        assert tree(made) == tree(sent) and len(tree(made)) == 12 + int(sum(result.areas > 0))
    ImageFiles(tmp_path / "m").unpack("q.jpg", ImageFiles(tmp_path / "m").pack(none))
    assert (tmp_path / "m" / "q.jpg").is_dir() and not list((tmp_path / "m" / "q.jpg").iterdir())

    for name in ("masks/../../evil.png", "masks/sub/x.png", "x.png"):
        bad = io.BytesIO()
        with zipfile.ZipFile(bad, "w") as archive:
            archive.writestr(name, b"x")
        with pytest.raises(MobileSAMError, match="not a zip of mask and cutout PNGs"):
            ImageFiles(tmp_path / "m2").unpack("p.jpg", bad.getvalue())
    assert not (tmp_path / "m2").exists() and not list(tmp_path.rglob("evil.png"))
