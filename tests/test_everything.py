"""Segment everything through the high-level API, the folder job and the CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import IMAGES, SMALL
from PIL import Image

from mobilesam import MobileSAM, PromptError, SamPredictor
from mobilesam import automatic_mask_generator as amg_module
from mobilesam.automatic_mask_generator import SamAutomaticMaskGenerator
from mobilesam.batch import segment_folder
from mobilesam.cli import main
from mobilesam.errors import OutputError
from mobilesam.highlevel import everything
from mobilesam.modeling.sam import upscale_masks
from mobilesam.result import SegmentationResult
from mobilesam.utils import amg, rle
from mobilesam.utils.matte import upscale_logits
from mobilesam.utils.regions import dilate

FAST = {"points_per_side": "4", "iou_thres": "0.5", "stability_score_thres": 0.8}


@pytest.fixture(scope="module")
def sam(ckpt_vit_t):
    return MobileSAM(ckpt_vit_t, device="cpu", img_size=SMALL)


@pytest.fixture(scope="module")
def small_images(tmp_path_factory):
    """A folder: two good images, a truncated JPEG, a text file and a symlink to a file that
    is gone (listed and reported, not passed over)."""
    folder = tmp_path_factory.mktemp("photos")
    Image.open(IMAGES / "picture1.jpg").resize((200, 200)).save(folder / "a_good.jpg")
    Image.open(IMAGES / "truck.jpg").resize((240, 160)).save(folder / "d_good.png")
    (folder / "b_corrupt.jpg").write_bytes((folder / "a_good.jpg").read_bytes()[:300])
    (folder / "c_notes.txt").write_text("not an image")
    (folder / "c_gone.jpg").symlink_to(folder / "moved_away.jpg")
    return folder


def test_no_prompt_segments_everything(sam, tmp_path):
    result = sam.segment(IMAGES / "picture1.jpg", **FAST)
    assert len(result) > 0 and result.masks.shape[1:] == (770, 769)
    assert np.all(np.diff(result.scores) <= 0)  # highest predicted IoU first
    coco = json.loads(result.save_json(tmp_path / "e.json").read_text())
    ann = coco["annotations"][0]
    assert {"stability_score", "point_coords", "crop_box", "score", "segmentation"} <= set(ann)
    assert np.array_equal(rle.decode(ann["segmentation"]), result.masks[0])
    labels = np.asarray(Image.open(result.save_label_map(tmp_path / "labels.png")))
    assert labels.shape == (770, 769) and labels.max() <= len(result)
    smallest = int(np.argmin(result.masks.sum(axis=(1, 2))))
    assert np.all(labels[result.masks[smallest]] == smallest + 1)  # small masks stay on top
    assert Image.open(result.save_overlay(tmp_path / "o.png")).size == (769, 770)


def test_everything_input_size_percent(sam):
    result = sam.segment_everything(IMAGES / "picture1.jpg", input_size_percent=50, **FAST)
    assert result.masks.shape[1:] == (770, 769)
    assert result.points.max() <= 770


def test_everything_reports_progress(sam, monkeypatch):
    """progress(done, total) after every batch: 2x2 points on the image plus 2x2 in each of
    the 4 crops of layer 1, in batches of 3. A crop's last batch is reported after its
    masks are selected, and (total, total) after the cross-crop NMS and the small-region
    pass: a bar at its end means done. No prompt at all: no call."""
    events = []
    for name in ("_select", "_remove_small_regions"):
        method = getattr(SamAutomaticMaskGenerator, name)
        spy = lambda *a, _m=method, _n=name: events.append((_n,)) or _m(*a)  # noqa: E731
        monkeypatch.setattr(SamAutomaticMaskGenerator, name, spy)
    options = dict(points_per_side=2, crop_n_layers=1, points_per_batch=3, min_mask_region_area=10)
    image = np.zeros((64, 80, 3), np.uint8)
    everything(sam.predictor, image, progress=lambda d, t: events.append((d, t)), **options)
    calls = [e for e in events if len(e) == 2]
    assert calls[-1] == (20, 20) and all(total == 20 for _, total in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == 2 + 4 * 2
    assert events[:3] == [(3, 20), ("_select",), (4, 20)]
    assert events[-3:] == [("_select",), ("_remove_small_regions",), (20, 20)]
    events.clear()
    generator = SamAutomaticMaskGenerator(sam.predictor, points_per_side=None, point_grids=[np.zeros((0, 2))])
    generator.progress = lambda d, t: events.append((d, t))
    assert generator.generate(image) == [] and events == []  # nothing encoded, selected or reported


def test_everything_bad_options(sam):
    for kwargs, name in [
        ({"points_per_side": 0}, "points_per_side"),
        ({"iou_thres": "1.5"}, "iou_thres"),
        ({"stability_score_thres": -1}, "stability_score_thres"),
        ({"crop_n_layers": "x"}, "crop_n_layers"),
    ]:
        with pytest.raises(PromptError, match=name):
            sam.segment_everything(IMAGES / "picture1.jpg", **kwargs)
    with pytest.raises(PromptError, match="given with prompts"):
        sam.segment(IMAGES / "picture1.jpg", input_box=[1, 2, 30, 40], points_per_side=8)


def _annotations(out):
    return json.loads((out / "annotations.json").read_text())


def test_folder_interrupt_and_resume(sam, small_images, tmp_path):
    out = tmp_path / "out"
    first = segment_folder(sam, small_images, out, FAST, max_images=1, progress=lambda m: None)
    assert first.done == ["a_good.jpg"] and not first.failed
    assert [i["file_name"] for i in _annotations(out)["images"]] == ["a_good.jpg"]

    calls = []
    real = sam.segment_everything

    def interrupted(path, **kw):
        calls.append(path)
        if path.name == "d_good.png":
            raise KeyboardInterrupt
        return real(path, **kw)

    sam.segment_everything = interrupted
    try:  # Ctrl-C: the job stops, writes what it finished and says it was interrupted
        stopped = segment_folder(sam, small_images, out, FAST, progress=lambda m: None)
    finally:
        del sam.segment_everything
    assert stopped.interrupted and "(interrupted)" in stopped.line()
    assert [p.name for p in calls] == [
        "b_corrupt.jpg",
        "c_gone.jpg",
        "c_notes.txt",
        "d_good.png",
    ]  # a_good was skipped
    assert len(_annotations(out)["images"]) == 1

    last = segment_folder(sam, small_images, out, FAST, overlays=True, progress=lambda m: None)
    assert last.done == ["d_good.png"] and last.skipped == ["a_good.jpg"]
    assert set(last.failed) == {"b_corrupt.jpg", "c_gone.jpg", "c_notes.txt"}
    assert "which does not exist" in last.failed["c_gone.jpg"]
    coco = _annotations(out)
    assert [i["file_name"] for i in coco["images"]] == ["a_good.jpg", "d_good.png"]  # each exactly once
    assert {f["file_name"] for f in coco["failures"]} == {"b_corrupt.jpg", "c_gone.jpg", "c_notes.txt"}
    ids = [a["id"] for a in coco["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    assert {a["image_id"] for a in coco["annotations"]} <= {i["id"] for i in coco["images"]}
    assert (out / "overlays" / "d_good.png.png").is_file()
    assert (out / "overlays" / "a_good.jpg.png").is_file()  # asked for later: drawn from the part
    assert not list(out.rglob("*.tmp"))


def test_cli_everything_image_and_folder(ckpt_vit_t, small_images, tmp_path, capsys):
    ck = [
        "--checkpoint",
        str(ckpt_vit_t),
        "--img-size",
        str(SMALL),
        "--points-per-side",
        "4",
        "--iou-thres",
        "0.5",
    ]
    rc = main(
        [
            "everything",
            str(small_images / "a_good.jpg"),
            *ck,
            "-o",
            str(tmp_path / "o.png"),
            "--label-map",
            str(tmp_path / "l.png"),
            "--json",
            str(tmp_path / "e.json"),
            "--masks-dir",
            str(tmp_path / "m"),
            "--cutouts-dir",
            str(tmp_path / "c"),
            "--dilate",
            "3",
        ]
    )
    assert rc == 0 and (tmp_path / "l.png").is_file()
    coco = json.loads((tmp_path / "e.json").read_text())
    assert len(coco["annotations"]) == len(list((tmp_path / "c").iterdir())) > 0
    for i, ann in enumerate(coco["annotations"]):  # the JSON's masks as found, the PNGs grown
        png = np.asarray(Image.open(tmp_path / "m" / f"mask_{i:03d}.png")) > 0
        assert np.array_equal(png, dilate(rle.decode(ann["segmentation"]), 3))
        cut = np.asarray(Image.open(tmp_path / "c" / f"cutout_{i:03d}.png"))  # each object alone
        ys, xs = np.nonzero(png)
        assert np.array_equal(cut[..., 3] > 0, png[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    # --soft: the same masks with the model's soft edge (128 or more exactly on each mask).
    soft = ["--soft", "--masks-dir", str(tmp_path / "sm"), "--cutouts-dir", str(tmp_path / "sc")]
    assert main(["everything", str(small_images / "a_good.jpg"), *ck, *soft]) == 0
    partial = 0
    for i, ann in enumerate(coco["annotations"]):
        alpha = np.asarray(Image.open(tmp_path / "sm" / f"mask_{i:03d}.png"))
        assert np.array_equal(alpha >= 128, rle.decode(ann["segmentation"]))
        partial += ((alpha > 0) & (alpha < 255)).sum()
    assert partial > 0 and len(list((tmp_path / "sc").iterdir())) == len(coco["annotations"])
    capsys.readouterr()
    for extra in (["--soft"], [*soft, "--dilate", "3"]):
        assert main(["everything", str(small_images / "a_good.jpg"), *ck, *extra]) == 2
        assert "--soft" in capsys.readouterr().err
    rc = main(["everything", str(small_images), *ck, "-o", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert rc == 1  # some files failed
    assert "done 2, skipped 0 (already done), failed 3" in out and "failed: c_notes.txt" in out
    assert main(["everything", str(small_images), *ck]) == 2
    assert "output folder is required" in capsys.readouterr().err
    assert main(["everything", str(small_images), *ck, "-o", str(tmp_path / "x"), "--dilate", "2"]) == 2
    assert "--dilate grows the masks of --masks-dir, --cutouts-dir: give one" in capsys.readouterr().err
    assert main(["everything", str(small_images / "a_good.jpg"), *ck, "--dilate", "2"]) == 2  # one image too
    assert "--dilate grows the masks of --masks-dir, --cutouts-dir: give one" in capsys.readouterr().err
    assert main(["everything", str(small_images), *ck, "-o", str(tmp_path / "x"), "--soft"]) == 2
    assert "--soft shapes the edges of --cutouts-dir, --masks-dir" in capsys.readouterr().err
    assert main(["everything", str(small_images / "a_good.jpg"), *ck[:2], "--points-per-side", "0"]) == 2
    assert "points_per_side" in capsys.readouterr().err
    rc = main(["everything", str(small_images / "a_good.jpg"), *ck, "--decoder-precision", "bf16"])
    assert rc == 0 and "masks" in capsys.readouterr().out


def test_folder_job_reports_bad_files_but_lets_bugs_surface(sam, small_images, tmp_path, monkeypatch):
    """Only user-input errors (MobileSAMError) and I/O errors become FAILED lines; any other
    exception is a bug and stops the job, with the finished images still in the JSON."""
    calls = []
    real = type(sam).segment_everything

    def buggy(self, path, **options):
        calls.append(path.name)
        if len(calls) == 2:
            raise ZeroDivisionError("a bug")
        return real(self, path, **options)

    monkeypatch.setattr(type(sam), "segment_everything", buggy)
    with pytest.raises(ZeroDivisionError):
        segment_folder(sam, small_images, tmp_path, FAST, progress=lambda _: None)
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a_good.jpg"]


def test_everything_options_are_defined_once():
    """The CLI flags, the high-level names and the generator's defaults all come from
    options.EVERYTHING."""
    import inspect

    from mobilesam.automatic_mask_generator import SamAutomaticMaskGenerator
    from mobilesam.cli import build_parser
    from mobilesam.options import EVERYTHING, generator_kwargs

    defaults = inspect.signature(SamAutomaticMaskGenerator).parameters
    for option in EVERYTHING:
        assert defaults[option.generator].default == option.default, option.name
    everything = build_parser()._subparsers._group_actions[0].choices["everything"]
    flags = {a.option_strings[0]: a for a in everything._actions if a.option_strings}
    for option in EVERYTHING:
        assert option.flag in flags and f"default {option.default}"[:12] in flags[option.flag].help
    # segment-anything's scripts/amg.py flags are taken as they are spelt there
    upstream = ["--pred-iou-thresh", "0.5", "--stability-score-thresh", "0.8", "--box-nms-thresh", "0.6"]
    upstream += ["--crop-nms-thresh", "0.4", "--crop-n-layers", "1", "--min-mask-region-area", "9"]
    args = everything.parse_args(["x.jpg", *upstream])
    assert (args.iou_thres, args.stability_score_thres, args.box_nms_thres) == (0.5, 0.8, 0.6)
    assert (args.crop_nms_thres, args.crop_n_layers, args.min_mask_region_area) == (0.4, 1, 9)
    assert generator_kwargs({"iou_thres": "0.5", "points_per_side": 32.0}) == {
        "pred_iou_thresh": 0.5,
        "points_per_side": 32,
    }
    with pytest.raises(
        PromptError,
        match=r"unknown segment-everything option\(s\) \['pred_iou_thresh'\] \(pred_iou_thresh is iou_thres here\)",
    ):
        generator_kwargs({"pred_iou_thresh": 0.5})


def test_everything_keeps_logits_for_soft_edges(small_sam_vit_t, tmp_path, monkeypatch):
    """keep_logits: each mask with the low-res logits it came from, in its crop's frame
    (where they upscale to exactly the mask), hence the model's soft edge for cutouts;
    after min_mask_region_area, no soft edge where the cleaning removed an island or
    filled a hole."""
    # The synthetic weights' masks all touch the crops' edges: let them through, so that
    # masks of the smaller crops (their own frames) are kept too.
    monkeypatch.setattr(amg, "is_box_near_crop_edge", lambda boxes, *_: torch.zeros(len(boxes), dtype=bool))
    image = np.asarray(Image.open(IMAGES / "picture2.jpg").convert("RGB").resize((500, 400)))
    size = image.shape[:2]
    kwargs = {"points_per_side": 4, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.8}
    kwargs.update(box_nms_thresh=1.0, crop_n_layers=1, crop_nms_thresh=1.0, crop_n_points_downscale_factor=2)
    generator = SamAutomaticMaskGenerator(
        small_sam_vit_t, keep_logits=True, min_mask_region_area=500, **kwargs
    )
    kept = generator.generate_records(image, small_regions=False)
    assert len(kept) > 5
    frames = set()
    for i in range(len(kept)):
        low, input_size = kept.read_logits(i)
        x0, y0, x1, y1 = kept.crop_boxes[i].tolist()
        frames.add((x0, y0, x1, y1))
        logits = upscale_masks(torch.from_numpy(low)[None, None], input_size, (y1 - y0, x1 - x0), SMALL)
        mask = rle.bits_to_mask(kept.read(i), size)
        assert np.array_equal(logits[0, 0].numpy() > 0, mask[y0:y1, x0:x1])
        assert mask.sum() == mask[y0:y1, x0:x1].sum()  # nothing outside its crop
    assert (0, 0, size[1], size[0]) in frames and len(frames) > 1  # the whole image and crops

    with torch.inference_mode():
        generator._remove_small_regions(kept, size)  # the last step of generate_records
    result = SegmentationResult.from_records(image, kept, size, None)
    cleaned = soft = 0
    square = np.ones((81, 81), np.uint8)
    for i in range(len(result)):
        mask, alpha = result.mask(i), result.soft_mask(i)
        assert np.array_equal(alpha >= 128, mask)
        soft += ((alpha > 0) & (alpha < 255)).any()
        low, input_size, (x0, y0, x1, y1) = result.crop_logits.read(i)
        logits = upscale_masks(torch.from_numpy(low)[None, None], input_size, (y1 - y0, x1 - x0), SMALL)
        crop = mask[y0:y1, x0:x1]
        changed = (logits[0, 0].numpy() > 0) != crop
        cleaned += changed.any()
        # No ghost of an edge the cleaning took away, 40 px (a few low-res cells) from the
        # edges left: there the matte is the hard mask.
        near_in, near_out = (cv2.dilate(m.astype(np.uint8), square) > 0 for m in (crop, ~crop))
        far = np.where(crop, ~near_out, ~near_in)
        assert np.isin(alpha[y0:y1, x0:x1][changed & far], (0, 255)).all()
    assert cleaned > 0 and soft > len(result) // 2
    with pytest.raises(OutputError, match="crop's frame"):  # not a mask prompt
        result.save_logits(tmp_path / "logits.npy")
    assert not (tmp_path / "logits.npy").exists()


def test_kept_logits_change_no_mask_and_survive_the_disk_and_bf16(small_sam_vit_t, monkeypatch):
    """keep_logits changes no mask; logits kept past mask_memory_bytes (the candidates' and
    the records' stores both on disk), left on the device (a GPU's path, forced on the
    CPU) and from the bfloat16 decoder (stored as float32) still map to their masks. A
    result without logits says how to get them."""
    image = np.asarray(Image.open(IMAGES / "picture1.jpg").convert("RGB").resize((300, 200)))
    kwargs = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    kwargs.update(box_nms_thresh=1.0, mask_memory_bytes=1)
    plain = SamAutomaticMaskGenerator(small_sam_vit_t, **kwargs).generate_records(image)
    with pytest.raises(OutputError, match="keep_logits=True"):
        SegmentationResult.from_records(image, plain, (200, 300), None).soft_mask(0)
    for precision, resident in (("float32", 0), ("float32", 1 << 30), ("bf16", 0)):
        monkeypatch.setattr(amg_module, "_resident_bytes", lambda device, n=resident: n)
        generator = SamAutomaticMaskGenerator(
            small_sam_vit_t, keep_logits=True, decoder_precision=precision, **kwargs
        )
        records = generator.generate_records(image)
        assert len(records) > 5 and plain.logits == []
        for i in range(len(records)):
            if precision == "float32":
                assert np.array_equal(records.read(i), plain.read(i))
            low, input_size = records.read_logits(i)
            assert low.dtype == np.float32 and low.shape == (SMALL // 4, SMALL // 4)
            logits = upscale_masks(torch.from_numpy(low)[None, None], input_size, (200, 300), SMALL)
            assert np.array_equal(logits[0, 0].numpy() > 0, rle.bits_to_mask(records.read(i), (200, 300)))
    # input_size_percent: the logits of the shrunk image map onto the full-size photo, their
    # soft edge along the (nearest-neighbour upscaled) mask's outline, within 8 px of it
    # (a low-res cell of the 256-px model: 4.7 photo pixels here).
    result = everything(SamPredictor(small_sam_vit_t), image, input_size_percent=50, keep_logits=True, **FAST)
    square = np.ones((17, 17), np.uint8)
    for i in range(len(result)):
        mask, alpha = result.mask(i), result.soft_mask(i)
        assert mask.shape == (200, 300) and np.array_equal(alpha >= 128, mask)
        outline = cv2.dilate(mask.astype(np.uint8), square) != cv2.erode(mask.astype(np.uint8), square)
        partial = (alpha > 0) & (alpha < 255)
        assert partial.any() and not (partial & ~outline).any()
        low, input_size, box = result.crop_logits.read(i)
        assert box == (0, 0, 300, 200)
        sigmoid = 255 / (1 + np.exp(-upscale_logits(low, input_size, (200, 300)).astype(np.float64)))
        free = partial & (alpha != 127) & (alpha != 128)  # not held to the mask's side
        assert np.abs(alpha[free] - sigmoid[free]).max() <= 1.01
