"""`mobilesam evaluate`: mIoU against ground-truth masks, from box and point prompts."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import IMAGES, SMALL
from PIL import Image

from mobilesam import MobileSAM, MobileSAMError, PromptError
from mobilesam.cli import main
from mobilesam.evaluate import evaluate_masks, table
from mobilesam.utils import rle
from mobilesam.utils.regions import farthest_from_boundary, mask_iou

BOXES = [[425, 600, 700, 875], [1240, 675, 1400, 750], [1375, 550, 1650, 800]]


@pytest.fixture(scope="module")
def sam(ckpt_vit_t):
    return MobileSAM(ckpt_vit_t, img_size=SMALL)


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(IMAGES / "truck.jpg", folder / "truck.jpg")
    return folder


def _coco(images: list[dict], anns: list[dict]) -> dict:
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "tyre"}],
    }


def _rle(mask: np.ndarray) -> dict:
    return rle.encode(mask)


def test_the_models_own_box_masks_score_one_and_points_start_inside(sam, photos, tmp_path):
    """Ground truth made by the model from the same boxes: every box prompt gives it back
    exactly (IoU 1: the box, the mask decoding and the IoU are right); the point prompt is
    each mask's pixel farthest from its boundary, answered as `segment` answers it."""
    made = sam.segment(photos / "truck.jpg", input_box=BOXES)
    anns = [
        {
            "id": i + 10,
            "image_id": 7,
            "category_id": 1 + i % 2,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "segmentation": _rle(m),
        }
        for i, ((x0, y0, x1, y1), m) in enumerate(zip(BOXES, made.masks))
    ]
    source = tmp_path / "truth.json"
    source.write_text(
        json.dumps(_coco([{"id": 7, "file_name": "truck.jpg", "width": 1800, "height": 1200}], anns))
    )
    result = evaluate_masks(sam, source, photos)
    assert result["images"] == 1 and result["annotations"] == 3 and result["interrupted"] is False
    assert [c["box"] for c in result["cases"]] == [1.0, 1.0, 1.0] and result["miou"]["box"]["all"] == 1.0
    for case, truth in zip(result["cases"], made.masks):
        x, y = case["point_xy"]
        assert (x, y) == farthest_from_boundary(truth) and truth[y, x]
        answer = sam.segment(photos / "truck.jpg", input_point=[[x + 0.5, y + 0.5]]).masks[0]
        assert case["point"] == mask_iou(answer, truth)
    assert result["miou"]["point"]["all"] == pytest.approx(np.mean([c["point"] for c in result["cases"]]))
    assert [c["category"] for c in result["cases"]] == ["car", "tyre", "car"]
    assert result["categories"]["car"]["count"] == 2 and result["categories"]["tyre"]["box"] == 1.0
    out = tmp_path / "clicks.json"  # the CLI, with two clicks: the first is the point prompt
    args = ["evaluate", str(source), "--images", str(photos), "--prompts", "point", "--clicks", "2"]
    assert (
        main([*args, "--json", str(out), "--checkpoint", str(sam.checkpoint), "--img-size", str(SMALL)]) == 0
    )
    clicked = json.loads(out.read_text())
    assert [c["clicks"][0] for c in clicked["cases"]] == [c["point"] for c in result["cases"]]
    assert len(clicked["clicks"]["miou"]) == 2 and "box" not in clicked["miou"]


def test_oracle_is_the_points_candidate_closest_to_the_truth(sam, photos, tmp_path):
    """`oracle`: the point prompt's three candidates, the best IoU with the truth; the
    `point` score is the best-scored of the same three, so the oracle bounds it."""
    h, w = 1200, 1800
    truths = [np.zeros((h, w), bool) for _ in range(3)]
    truths[0][600:900, 400:800] = True
    truths[1][650:760, 1230:1420] = True
    truths[2][100:400, 100:1700] = True
    anns = [{"id": i, "image_id": 1, "category_id": 1, "segmentation": _rle(m)} for i, m in enumerate(truths)]
    source = tmp_path / "truth.json"
    source.write_text(json.dumps(_coco([{"id": 1, "file_name": "truck.jpg"}], anns)))
    result = evaluate_masks(sam, source, photos, prompts="oracle,point")
    assert result["prompts"] == ["point", "oracle"] and set(result["miou"]) == {"point", "oracle"}
    picked = set()
    for case, truth in zip(result["cases"], truths):
        x, y = case["point_xy"]
        assert (x, y) == farthest_from_boundary(truth)
        answers = [
            sam.segment(photos / "truck.jpg", input_point=[[x + 0.5, y + 0.5]], mask_id=k) for k in (1, 2, 3)
        ]
        ious = [mask_iou(a.masks[0], truth) for a in answers]
        assert case["oracle"] == max(ious) and case["oracle_mask_id"] == 1 + int(np.argmax(ious))
        assert case["point"] == ious[int(np.argmax([a.scores[0] for a in answers]))] <= case["oracle"]
        picked.add(case["oracle_mask_id"])
    assert len(picked) > 1  # the truths reach the choice between candidates, not one token
    assert result["miou"]["oracle"]["all"] >= result["miou"]["point"]["all"]
    assert "oracle" in table(result)
    oracle_only = evaluate_masks(sam, source, photos, prompts="oracle")
    assert [c["oracle"] for c in oracle_only["cases"]] == [c["oracle"] for c in result["cases"]]
    assert (
        "point" not in oracle_only["cases"][0]
        and oracle_only["cases"][0]["point_xy"] == result["cases"][0]["point_xy"]
    )


def test_sizes_categories_and_what_is_left_out(sam, photos, tmp_path):
    """COCO's size ranges by the mask's pixels, polygons and RLE alike; crowd regions,
    box-only annotations and empty masks are counted, not scored; the box falls back to
    the mask's extent when the annotation has none."""
    h, w = 1200, 1800
    small = np.zeros((h, w), bool)
    small[100:110, 100:120] = True  # 200 pixels
    large = np.zeros((h, w), bool)
    large[600:900, 400:800] = True  # 120,000
    medium_polygon = [[1300.0, 500.0, 1360.0, 500.0, 1360.0, 560.0, 1300.0, 560.0]]  # 60x60 = 3,600
    anns = [
        {"id": 1, "image_id": 1, "category_id": 2, "segmentation": _rle(small)},  # no bbox: its extent
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [400, 600, 400, 300], "segmentation": _rle(large)},
        {
            "id": 3,
            "image_id": 1,
            "category_id": 1,
            "bbox": [1300, 500, 60, 60],
            "segmentation": medium_polygon,
        },
        {
            "id": 4,
            "image_id": 1,
            "category_id": 1,
            "bbox": [0, 0, 50, 50],
            "segmentation": _rle(large),
            "iscrowd": 1,
        },
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50]},
        {
            "id": 6,
            "image_id": 1,
            "category_id": 1,
            "bbox": [0, 0, 50, 50],
            "segmentation": _rle(np.zeros((h, w), bool)),
        },
    ]
    source = tmp_path / "truth.json"
    source.write_text(json.dumps(_coco([{"id": 1, "file_name": "truck.jpg", "width": w, "height": h}], anns)))
    result = evaluate_masks(sam, source, photos, prompts="box")
    assert result["skipped"] == {"crowd": 1, "no mask": 1, "empty mask": 1}
    assert [(c["id"], c["area"]) for c in result["cases"]] == [(1, 200), (2, 120_000), (3, 3_600)]
    assert result["count"] == {"all": 3, "small": 1, "medium": 1, "large": 1}
    by_id = {c["id"]: c["box"] for c in result["cases"]}
    assert result["miou"]["box"] == {
        "all": pytest.approx(np.mean(list(by_id.values()))),
        "small": by_id[1],
        "medium": by_id[3],
        "large": by_id[2],
    }
    assert "point" not in result["miou"] and "point" not in result["cases"][0]
    # The same call the evaluation makes (one batch: a single box differs in the last bits).
    boxes = [[100, 100, 120, 110], [400, 600, 800, 900], [1300, 500, 1360, 560]]
    answer = sam.segment(photos / "truck.jpg", input_box=boxes).masks[0]
    assert by_id[1] == mask_iou(answer, small)  # the extent of a mask with no bbox
    assert result["categories"] == {
        "car": {"count": 2, "box": pytest.approx((by_id[2] + by_id[3]) / 2)},
        "tyre": {"count": 1, "box": by_id[1]},
    }


def test_bad_images_are_reported_and_the_run_goes_on(sam, photos, tmp_path, capsys):
    """A missing file and a photo of another size than its record fail with a reason;
    the other images are scored; the CLI exits 1 and writes the JSON."""
    shutil.copy(IMAGES / "picture1.jpg", photos / "picture1.jpg")
    mask = np.zeros((1200, 1800), bool)
    mask[600:900, 400:800] = True
    shutil.copy(IMAGES / "picture2.jpg", photos / "picture2.jpg")
    images = [
        {"id": 1, "file_name": "gone.jpg", "width": 1800, "height": 1200},
        {"id": 2, "file_name": "picture1.jpg", "width": 1800, "height": 1200},  # it is 769x770
        {"id": 3, "file_name": "truck.jpg", "width": 1800, "height": 1200},
        {"id": 4, "file_name": "no_masks.jpg", "width": 10, "height": 10},  # nothing to score: not read
        {"id": 5, "file_name": "picture2.jpg"},  # no size: its RLE's is taken, and is not the photo's
    ]
    anns = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [400, 600, 400, 300], "segmentation": _rle(mask)}
        for i in (1, 2, 3, 5)
    ]
    source = tmp_path / "truth.json"
    source.write_text(json.dumps(_coco(images, anns)))
    result = evaluate_masks(sam, source, photos, prompts=("box",))
    assert result["images"] == 1 and [c["image"] for c in result["cases"]] == ["truck.jpg"]
    assert set(result["failed"]) == {"gone.jpg", "picture1.jpg", "picture2.jpg"}
    assert "the COCO file says 1800x1200" in result["failed"]["picture1.jpg"]
    assert result["failed"]["picture2.jpg"].startswith("annotation 5: its mask is 1800x1200, the image ")
    out = tmp_path / "scores.json"
    args = ["evaluate", str(source), "--images", str(photos), "--prompts", "box", "--json", str(out)]
    code = main([*args, "--checkpoint", str(sam.checkpoint), "--img-size", str(SMALL)])
    printed = capsys.readouterr().out
    assert (
        code == 1
        and "1 masks of 1 images scored; 3 images failed" in printed
        and "failed: gone.jpg" in printed
    )
    saved = json.loads(out.read_text())
    assert saved["miou"] == result["miou"] and saved["cases"] == result["cases"]
    # The journal stays, so that once the files are mended a rerun scores only those.
    assert (tmp_path / "scores.json.journal.jsonl").is_file() and "scores the failed images only" in printed


def test_interrupted_run_keeps_the_scores_so_far_and_goes_on(sam, photos, tmp_path, capsys, monkeypatch):
    """Ctrl-C during the second image: the first image's scores are the result, marked
    interrupted; the CLI prints them, writes the JSON, keeps the journal and exits 130; the
    same command again segments only the second image, ends with the scores of an
    uninterrupted run and removes the journal."""
    shutil.copy(IMAGES / "truck.jpg", photos / "truck2.jpg")
    mask = np.zeros((1200, 1800), bool)
    mask[600:900, 400:800] = True
    images = [
        {"id": i, "file_name": f, "width": 1800, "height": 1200}
        for i, f in ((1, "truck.jpg"), (2, "truck2.jpg"))
    ]
    anns = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [400, 600, 400, 300], "segmentation": _rle(mask)}
        for i in (1, 2)
    ]
    source = tmp_path / "truth.json"
    source.write_text(json.dumps(_coco(images, anns)))
    whole = evaluate_masks(sam, source, photos, prompts="box")
    calls, stop = [], {"at": 2}
    segment = MobileSAM.segment

    def stopped_on_the_second_image(self, image, **kwargs):
        calls.append(image)
        if len(calls) == stop["at"]:
            raise KeyboardInterrupt
        return segment(self, image, **kwargs)

    monkeypatch.setattr(MobileSAM, "segment", stopped_on_the_second_image)
    try:
        result = evaluate_masks(sam, source, photos, prompts="box")
    except KeyboardInterrupt:  # escaping, it would stop pytest itself
        pytest.fail("the interrupt was not caught: the scores so far are lost")
    assert result["interrupted"] is True and result["images"] == 1 and result["count"]["all"] == 1
    calls.clear()
    out = tmp_path / "scores.json"
    args = ["evaluate", str(source), "--images", str(photos), "--prompts", "box", "--json", str(out)]
    args += ["--checkpoint", str(sam.checkpoint), "--img-size", str(SMALL)]
    assert main(args) == 130
    assert "run the same command again to go on" in capsys.readouterr().out
    assert json.loads(out.read_text())["interrupted"] is True
    journal = tmp_path / "scores.json.journal.jsonl"
    assert [json.loads(line).get("image") for line in journal.read_text().splitlines()] == [None, "truck.jpg"]
    calls.clear()
    stop["at"] = 0  # no more interrupts
    assert main(args) == 0 and len(calls) == 1  # the second image only
    done = json.loads(out.read_text())
    assert done["interrupted"] is False and done["cases"] == whole["cases"] and not journal.exists()


def test_a_journal_of_another_run_is_refused(sam, photos, tmp_path):
    """Other prompts (or ground truth, clicks, model) than the journal's: refused, naming
    them; a file that is no journal: refused; a last line cut short: that image redone."""
    mask = np.zeros((1200, 1800), bool)
    mask[600:900, 400:800] = True
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [400, 600, 400, 300], "segmentation": _rle(mask)}
    ]
    source = tmp_path / "truth.json"
    source.write_text(
        json.dumps(_coco([{"id": 1, "file_name": "truck.jpg", "width": 1800, "height": 1200}], anns))
    )
    journal = tmp_path / "j.jsonl"
    first = evaluate_masks(sam, source, photos, prompts="box", journal=journal)
    with pytest.raises(MobileSAMError, match=r"holds the scores of another run \(its prompts differ\)"):
        evaluate_masks(sam, source, photos, prompts="box,point", journal=journal)
    other = MobileSAM(sam.checkpoint, img_size=128)
    with pytest.raises(MobileSAMError, match=r"\(its model differ\)"):
        evaluate_masks(other, source, photos, prompts="box", journal=journal)
    lines = journal.read_text().splitlines()
    journal.write_text(lines[0] + "\n" + lines[1][:40])  # killed while writing the image's line
    again = evaluate_masks(sam, source, photos, prompts="box", journal=journal)
    assert again["cases"] == first["cases"] and len(journal.read_text().splitlines()) == 3
    (tmp_path / "notes.txt").write_text("my notes\n")
    with pytest.raises(MobileSAMError, match="is not a journal of `mobilesam evaluate`"):
        evaluate_masks(sam, source, photos, prompts="box", journal=tmp_path / "notes.txt")


def test_label_files_and_the_first_images_only(sam, photos, tmp_path):
    """YOLO segmentation labels as ground truth (classes.txt naming them); `max_images`."""
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "truck.txt").write_text("1 0.5 0.5 0.6 0.5 0.6 0.6 0.5 0.6\n")  # a 180x120 square
    (labels / "classes.txt").write_text("car\ntyre\n")
    result = evaluate_masks(sam, labels, photos, prompts="box", max_images=1)
    (case,) = result["cases"]
    assert case["category"] == "tyre" and case["area"] == 180 * 120 and result["count"]["medium"] == 0


def test_bad_options_say_what_is_wanted(sam, photos, tmp_path, capsys, monkeypatch):
    """Bad prompts, a missing file or an unwritable --json fail before the model loads."""
    source = tmp_path / "truth.json"
    source.write_text(json.dumps(_coco([], [])))
    import mobilesam.cli.evaluate as command

    monkeypatch.setattr(command, "backend", lambda args: pytest.fail("the model was loaded"))
    for given, said in (
        (["--prompts", "box,polygon"], "prompts must be some of box, point, oracle, got box, polygon"),
        (["--json", str(photos)], "is a folder"),
    ):
        assert main(["evaluate", str(source), "--images", str(photos), *given]) == 2
        assert said in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "gone.json"), "--images", str(photos)]) == 2
    assert "gone.json: no such file" in capsys.readouterr().err
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    images = [
        {"id": i, "file_name": f, "width": 10, "height": 10} for i, f in ((1, "a.png"), (2, "../b.png"))
    ]
    anns = [{"id": i, "image_id": i, "category_id": 1, "segmentation": _rle(mask)} for i in (1, 2)]
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(_coco(images, anns)))
    assert main(["evaluate", str(outside), "--images", str(photos)]) == 2  # before the model, not mid-run
    assert "file_name '../b.png' would reach outside the folder" in capsys.readouterr().err
    with pytest.raises(PromptError, match="prompts must be some of box, point, oracle, got boxes"):
        evaluate_masks(sam, source, photos, prompts="boxes")
    with pytest.raises(PromptError, match="max_images must be 1 or more"):
        evaluate_masks(sam, source, photos, max_images=0)
    empty = evaluate_masks(sam, source, photos)
    assert empty["annotations"] == 0 and empty["miou"]["box"]["all"] is None and empty["categories"] == {}


def test_a_bbox_that_is_no_box_gives_way_to_the_masks_extent():
    from mobilesam.evaluate import _box

    mask = np.zeros((50, 60), bool)
    mask[10:20, 5:45] = True
    assert _box({"bbox": [1, 2, 3, 4]}, mask) == [1, 2, 4, 6]  # XYWH -> XYXY
    for bad in (["5", "10", "40", "10"], [5, 10, 0, 10], None, [5, 10, float("nan"), 3]):
        assert _box({"bbox": bad}, mask) == [5, 10, 45, 20]


def test_farthest_from_boundary():
    """The middle of the largest inscribed disc; the image's edge counts as boundary."""
    yy, xx = np.mgrid[:100, :200]
    disc = (yy - 40) ** 2 + (xx - 120) ** 2 <= 20**2
    assert farthest_from_boundary(disc) == (120, 40)
    assert farthest_from_boundary(np.ones((9, 9), bool)) == (4, 4)  # the whole image: its middle
    bar = np.zeros((20, 50), bool)
    bar[0:5, :] = True  # along the top edge: 5 rows, so the middle row, not the edge's
    assert farthest_from_boundary(bar)[1] == 2
    with pytest.raises(ValueError, match="empty mask"):
        farthest_from_boundary(np.zeros((5, 5), bool))


class _Scripted:
    """A Segmenter whose answers are given masks, one per call, recording each call."""

    def __init__(self, answers: list[np.ndarray]) -> None:
        self.answers, self.calls, self.returned = list(answers), [], []

    def segment(self, image, input_point=None, input_point_label=None, mask_input=None, **more):
        self.calls.append({"points": input_point, "labels": input_point_label, "mask_input": mask_input})
        self.returned.append(SimpleNamespace(masks=self.answers.pop(0)[None]))
        return self.returned[-1]


def test_correction_clicks_go_to_the_larger_error_and_stop_when_right(tmp_path):
    """RITM's protocol: the first click at the object's deepest pixel; then each at the
    deepest pixel of the larger error region (missed part: foreground, spill: background),
    earlier clicks kept, the previous answer as the mask prompt; a perfect answer ends the
    clicks and its IoU stands; NoC counts clicks to 0.85 / 0.90 (all of them if never)."""
    h, w = 60, 80
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "a.png")
    truth = np.zeros((h, w), bool)
    truth[10:50, 10:50] = True  # 40x40: deepest pixel (29, 29)
    left = truth.copy()
    left[:, 30:] = False  # misses the right half (20 columns: 10 deep), first deepest pixel (39, 19)
    both = left.copy()
    both[5:55, 52:78] = True  # still the miss, and 26 columns of spill, 13 deep: a background click
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "segmentation": _rle(truth)}]
    source = tmp_path / "truth.json"
    source.write_text(json.dumps(_coco([{"id": 1, "file_name": "a.png", "width": w, "height": h}], anns)))
    sam = _Scripted([left, both, truth])
    result = evaluate_masks(sam, source, tmp_path, prompts="point", clicks=5)
    (case,) = result["cases"]
    assert case["clicked"] == [[29, 29, 1], [39, 19, 1], [64, 17, 0]]
    assert case["clicks"] == [0.5, pytest.approx(800 / 2900), 1.0, 1.0, 1.0] and case["point"] == 0.5
    assert [c["points"] for c in sam.calls] == [
        [[29.5, 29.5]],
        [[29.5, 29.5], [39.5, 19.5]],
        [[29.5, 29.5], [39.5, 19.5], [64.5, 17.5]],
    ]
    assert [c["labels"] for c in sam.calls] == [[1], [1, 1], [1, 1, 0]]
    given = [c["mask_input"] for c in sam.calls]  # each time the previous answer
    assert given[0] is None and given[1] is sam.returned[0] and given[2] is sam.returned[1]
    assert result["clicks"] == {"miou": case["clicks"], "noc85": 3, "noc90": 3}
    assert "NoC@85 3.000, NoC@90 3.000" in table(result)
    never = evaluate_masks(_Scripted([left] * 4), source, tmp_path, prompts="point", clicks=4)
    assert never["clicks"]["noc85"] == 4 and len(never["cases"][0]["clicked"]) == 4


def test_clicks_need_the_point_prompt_and_a_count(sam, photos, tmp_path):
    source = tmp_path / "truth.json"
    source.write_text(json.dumps(_coco([], [])))
    with pytest.raises(PromptError, match="clicks follow the point prompt"):
        evaluate_masks(sam, source, photos, prompts="box", clicks=3)
    for bad in (-1, 2.5, True):
        with pytest.raises(PromptError, match="clicks must be a whole number >= 0"):
            evaluate_masks(sam, source, photos, clicks=bad)
