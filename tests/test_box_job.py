"""`mobilesam boxes-to-masks`: a COCO file's boxes become masks written back into it;
bad images and unusable boxes are reported and the rest goes on; a rerun redoes only
what changed; malformed input is refused before anything is written."""

import json
import shutil

import numpy as np
import pytest
from conftest import IMAGES, SMALL
from PIL import Image

from mobilesam import MobileSAM
from mobilesam.box_job import BoxJob
from mobilesam.cli import main
from mobilesam.convert import ConvertError
from mobilesam.utils import rle

TRUCK_BOX = [425, 600, 275, 275]  # XYWH
QUIET = {"progress": lambda msg: None}


@pytest.fixture(scope="module")
def sam(ckpt_vit_t):
    return MobileSAM(ckpt_vit_t, device="cpu", img_size=SMALL)


class Counting:
    """A Segmenter that counts the images it segments (and can stop the run)."""

    def __init__(self, sam, interrupt_at=None):
        self.sam, self.calls, self.interrupt_at = sam, [], interrupt_at

    def segment(self, image, **kwargs):
        self.calls.append(image.shape)
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        return self.sam.segment(image, **kwargs)


def _dataset(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    shutil.copy(IMAGES / "truck.jpg", images / "truck.jpg")
    shutil.copy(IMAGES / "picture2.jpg", images / "sub" / "p2.jpg")
    (images / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    Image.open(IMAGES / "truck.jpg").resize((900, 600)).save(images / "resized.jpg")
    coco = {
        "images": [
            {"id": 1, "file_name": "truck.jpg", "width": 1800, "height": 1200},
            {"id": 2, "file_name": "sub/p2.jpg"},
            {"id": 3, "file_name": "bad.jpg"},
            {"id": 4, "file_name": "nothing_here.jpg"},  # no box: not even read
            {"id": 5, "file_name": "resized.jpg", "width": 1800, "height": 1200},  # the file is smaller
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": TRUCK_BOX, "category_id": 3, "iscrowd": 0},
            {"id": 11, "image_id": 1, "bbox": [5000, 5000, 10, 10], "category_id": 3},  # off the image
            {
                "id": 12,
                "image_id": 1,
                "bbox": [-50, -40, 150.5, 120],
                "category_id": 1,
                "score": 0.75,
            },  # clipped
            {"id": 13, "image_id": 2, "bbox": [10, 10, 100, 80], "category_id": 1, "score": float("nan")},
            {"id": 14, "image_id": 3, "bbox": [1, 1, 5, 5], "category_id": 1},
            {"id": 15, "image_id": 5, "bbox": [1, 1, 5, 5], "category_id": 1},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(coco))
    return path, images, coco


def test_boxes_become_masks_and_a_rerun_redoes_only_what_changed(sam, ckpt_vit_t, tmp_path, capsys):
    src, images, coco = _dataset(tmp_path)
    out = tmp_path / "out"
    args = ["boxes-to-masks", str(src), "--images", str(images), "-o", str(out), "--overlays"]
    args += ["--checkpoint", str(ckpt_vit_t), "--img-size", str(SMALL)]
    assert main(args) == 1  # a file failed
    printed = capsys.readouterr()
    assert "done 3, skipped 0 (already done), failed 2; 1 boxes left out" in printed.out
    assert "failed: bad.jpg:" in printed.out
    assert "failed: resized.jpg: the image is 900x600, the COCO file says 1800x1200" in printed.out
    assert "annotation 11: bbox [5000, 5000, 10, 10] has no area inside the 1800x1200 image" in printed.err

    result = json.loads((out / "annotations.json").read_text())
    assert result["images"] == coco["images"] and result["categories"] == coco["categories"]
    anns = {a["id"]: a for a in result["annotations"]}
    assert sorted(anns) == [10, 12, 13]
    want = sam.segment(IMAGES / "truck.jpg", input_box=[[425, 600, 700, 875], [0, 0, 100.5, 80]])
    for ann_id, i in ((10, 0), (12, 1)):
        ann = anns[ann_id]
        assert np.array_equal(rle.decode(ann["segmentation"]), want.masks[i])
        assert ann["area"] == want.masks[i].sum() and ann["score"] == pytest.approx(float(want.scores[i]))
    # A detector's score is kept as box_score; a NaN one (no JSON number) is left out.
    assert anns[12]["box_score"] == 0.75 and "box_score" not in anns[13]
    given = {a["id"]: a for a in coco["annotations"]}
    assert {k: anns[10][k] for k in given[10]} == given[10]  # ids, bbox, category, iscrowd as given
    failures = [(f["file_name"], f.get("annotation_id")) for f in result["failures"]]
    assert failures == [("truck.jpg", 11), ("bad.jpg", None), ("resized.jpg", None)]
    assert "not an image file" in result["failures"][1]["error"]

    overlays = sorted(p.relative_to(out / "overlays").as_posix() for p in (out / "overlays").rglob("*.png"))
    assert overlays == ["sub/p2.jpg.png", "truck.jpg.png"]  # images with masks
    assert Image.open(out / "overlays" / "truck.jpg.png").size == (1800, 1200)

    # A rerun segments nothing new (the bad file is tried again) and draws a missing overlay
    # from the saved masks; a moved box redoes its image only.
    (out / "overlays" / "truck.jpg.png").unlink()
    counting = Counting(sam)
    BoxJob(src, images, out, overlays=True, **QUIET).run(counting)
    assert counting.calls == [] and (out / "overlays" / "truck.jpg.png").is_file()
    coco["annotations"][3]["bbox"] = [20, 10, 100, 80]
    src.write_text(json.dumps(coco))
    summary = BoxJob(src, images, out, **QUIET).run(counting)
    assert len(counting.calls) == 1 and summary.done == ["sub/p2.jpg"]
    # Other options redo every image (one with no box is not read).
    summary = BoxJob(src, images, out, {"mask_id": 2}, **QUIET).run(counting)
    assert len(counting.calls) == 3 and summary.done == ["nothing_here.jpg", "truck.jpg", "sub/p2.jpg"]
    # the job decodes the image's two boxes together: the same call (one box alone differs in
    # the last float bits, which can flip a pixel)
    both = [[425, 600, 700, 875], [0, 0, 100.5, 80]]
    third = sam.segment(IMAGES / "truck.jpg", input_box=both, mask_id=2).masks[0]
    anns = {a["id"]: a for a in json.loads((out / "annotations.json").read_text())["annotations"]}
    assert np.array_equal(rle.decode(anns[10]["segmentation"]), third)


def test_another_model_redoes_every_image(sam, ckpt_vit_t, tmp_path):
    """Each part records the model that made it: a rerun with another model (here another
    input size) redoes every image; a model not known (a bare wrapper) is not compared."""
    src, images, _ = _dataset(tmp_path)
    out = tmp_path / "out"
    BoxJob(src, images, out, **QUIET).run(sam)
    assert BoxJob(src, images, out, **QUIET).run(sam).done == []
    other = MobileSAM(ckpt_vit_t, device="cpu", img_size=2 * SMALL)
    assert BoxJob(src, images, out, **QUIET).run(other).done == [
        "nothing_here.jpg",
        "truck.jpg",
        "sub/p2.jpg",
    ]
    part = json.loads((out / "parts" / "truck.jpg.json").read_text())
    assert part["input"]["model"] == other.model_record() and part["input"]["model"]["img_size"] == 2 * SMALL
    assert BoxJob(src, images, out, **QUIET).run(Counting(other)).done == []


def test_interrupted_run_keeps_what_is_done_and_goes_on(sam, tmp_path):
    src, images, _ = _dataset(tmp_path)
    out = tmp_path / "out"
    summary = BoxJob(src, images, out, **QUIET).run(Counting(sam, interrupt_at=2))
    assert summary.interrupted and summary.done == ["nothing_here.jpg", "truck.jpg"]  # no box: done at once
    written = json.loads((out / "annotations.json").read_text())["annotations"]
    assert sorted(a["id"] for a in written) == [10, 12]
    counting = Counting(sam)
    summary = BoxJob(src, images, out, **QUIET).run(counting)
    assert len(counting.calls) == 1 and summary.done == ["sub/p2.jpg"]
    assert list(summary.failed) == ["bad.jpg", "resized.jpg"]  # tried again, and reported again


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c["annotations"][0].pop("bbox"), r"annotation 10: bbox must be \[x, y, width, height\]"),
        (lambda c: c["annotations"][0].update(bbox=[1, 2, "3", 4]), "annotation 10: bbox"),
        (lambda c: c["annotations"][0].update(bbox=[1, 2, float("nan"), 4]), "annotation 10: bbox"),
        (lambda c: c["annotations"][0].update(image_id=99), "annotation 10: its image_id 99"),
        (lambda c: c["annotations"][1].update(id=10), "annotation 10: the id is used twice"),
        (lambda c: c["images"][1].update(file_name="../../etc/x.jpg"), "would reach outside the folder"),
        (lambda c: c["images"][1].update(file_name="truck.jpg"), "are both truck.jpg"),
        (lambda c: c["images"][1].pop("file_name"), "image 2: no file_name"),
        (lambda c: c["images"].append({"id": 1, "file_name": "x.jpg"}), "image id 1 is used twice"),
    ],
)
def test_malformed_input_is_refused_before_anything_is_written(tmp_path, change, match):
    src, images, coco = _dataset(tmp_path)
    change(coco)
    src.write_text(json.dumps(coco, allow_nan=True))
    with pytest.raises(ConvertError, match=match):
        BoxJob(src, images, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def test_bad_options_and_folders(tmp_path):
    src, images, _ = _dataset(tmp_path)
    from mobilesam.errors import MobileSAMError, PromptError

    with pytest.raises(PromptError, match="mask_id"):
        BoxJob(src, images, tmp_path / "out", {"mask_id": 4})
    with pytest.raises(PromptError, match="unknown options"):
        BoxJob(src, images, tmp_path / "out", {"points_per_side": 4})
    with pytest.raises(MobileSAMError, match="not a folder"):
        BoxJob(src, src, tmp_path / "out")


def test_annotation_ids_keep_their_type_in_failures(sam, tmp_path):
    """A string id such as "12" is reported as given, not turned into a number."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(IMAGES / "truck.jpg", images / "truck.jpg")
    coco = {
        "images": [{"id": 1, "file_name": "truck.jpg"}],
        "annotations": [
            {"id": "12", "image_id": 1, "bbox": [5000, 5000, 10, 10]},
            {"id": 13, "image_id": 1, "bbox": [-90, 0, 10, 10]},
        ],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    BoxJob(tmp_path / "c.json", images, tmp_path / "out", **QUIET).run(sam)
    failures = json.loads((tmp_path / "out" / "annotations.json").read_text())["failures"]
    assert [f["annotation_id"] for f in failures] == ["12", 13]
