"""Label Studio: the brush RLE (byte for byte as label-studio-converter writes it) and
`mobilesam convert --to label-studio` (tasks with brush masks, and their labeling config)."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from test_polygons import _coco_file, _island_and_friends, _result

from mobilesam.cli import main
from mobilesam.convert import ConvertError, convert, to_label_studio
from mobilesam.utils import lsrle, rle


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    column = np.zeros((200, 300), bool)
    column[:, :2] = True
    big = np.zeros((1200, 1800), bool)
    big[100:900, 200:1500] = True  # runs of 1300 pixels: 5200 values, the 16-bit field
    big[400:500, 600:700] = False
    return [
        np.zeros((3, 4), bool),
        np.ones((1, 1), bool),
        np.zeros((1, 1), bool),
        rng.random((40, 50)) > 0.5,  # runs of 1-2 pixels: the 3- and 4-bit fields
        rng.random((7, 3)) > 0.9,
        np.ones((300, 400), bool),  # 480,000 values: runs longer than one record holds
        column,
        big,
    ]


def test_brush_rle_is_label_studio_converters():
    """Our brush RLE is label-studio-converter's `mask2rle` of the mask times 255 byte for
    byte; its `decode_rle` reads it back (alpha 255 inside, 0 outside), and so does ours."""
    brush = pytest.importorskip("label_studio_converter.brush")
    for mask in _masks():
        ours = lsrle.encode(mask)
        assert ours == brush.mask2rle(mask.astype(np.uint8) * 255), mask.shape
        alpha = brush.decode_rle(ours).reshape(*mask.shape, 4)[..., 3]
        assert np.array_equal(alpha, mask.astype(np.uint8) * 255)


def test_brush_rle_round_trip_and_bad_data():
    for mask in _masks():
        data = lsrle.encode(mask)
        assert all(isinstance(b, int) and 0 <= b <= 255 for b in data)
        assert np.array_equal(lsrle.decode(data, mask.shape), mask)
    data = lsrle.encode(_masks()[3])
    with pytest.raises(ConvertError, match="holds 8000 values, not the 8200 of a 50x41 RGBA image"):
        lsrle.decode(data, (50, 40 + 1))
    with pytest.raises(ConvertError, match="ends in the middle"):
        lsrle.decode(data[: len(data) // 2], (40, 50))
    with pytest.raises(ConvertError, match="byte values"):
        lsrle.decode([1, 2, 300], (1, 1))
    with pytest.raises(ValueError, match="HxW mask"):
        lsrle.encode(np.zeros((0, 5), bool))


def _regions(task: dict) -> list[dict]:
    (kind,) = {"predictions", "annotations"} & set(task)
    return task[kind][0]["result"]


def test_convert_to_label_studio_tasks(tmp_path, capsys):
    """One task per image (one with nothing in it too), each mask a brush region that
    decodes to it exactly, labelled with its category's name, its score and the mean
    score kept; the labeling config names the same tags and every category in order."""
    src, mask = _coco_file(tmp_path, extra_categories=True)
    out = tmp_path / "ls" / "tasks.json"
    assert main(["convert", str(src), "--to", "label-studio", "--out", str(out)]) == 0
    assert "label-studio: 2 masks of 2 images, 2 files" in capsys.readouterr().out
    tasks = json.loads(out.read_text())
    assert [t["data"] for t in tasks] == [
        {"image": "/data/local-files/?d=cam1/a.jpg"},
        {"image": "/data/local-files/?d=b.png"},
    ]
    assert tasks[1]["predictions"] == [{"model_version": "mobilesam", "result": []}]
    (prediction,) = tasks[0]["predictions"]
    regions = prediction["result"]
    coco = json.loads(src.read_text())
    assert [r["id"] for r in regions] == [str(a["id"]) for a in coco["annotations"]]
    assert [r["value"]["brushlabels"] for r in regions] == [["tree"], ["car"]]
    for region, expected in zip(regions, [mask, _island_and_friends(mask)]):
        assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
        assert (region["from_name"], region["to_name"]) == ("tag", "image")
        assert (region["original_height"], region["original_width"]) == mask.shape
        assert np.array_equal(lsrle.decode(region["value"]["rle"], mask.shape), expected)
    scores = [a["score"] for a in coco["annotations"]]
    assert [r["score"] for r in regions] == scores and prediction["score"] == pytest.approx(np.mean(scores))

    config = ET.fromstring((tmp_path / "ls" / "tasks.label_config.xml").read_text())
    image, brush = config
    assert (image.tag, image.get("name"), image.get("value")) == ("Image", "image", "$image")
    assert (brush.tag, brush.get("name"), brush.get("toName")) == ("BrushLabels", "tag", "image")
    assert [label.get("value") for label in brush] == ["tree", "car"]  # by category id
    assert len({label.get("background") for label in brush}) == 2


def test_label_studio_options_and_odd_input(tmp_path, capsys):
    """--as-annotations, --image-root (names URL-quoted); polygon segmentations filled,
    crowd regions drawn, empty masks left out; names that need XML escaping."""
    full, empty, corner = np.ones((4, 5), bool), np.zeros((4, 5), bool), np.zeros((4, 5), bool)
    corner[0, 0] = True
    coco = _result(np.stack([full, empty, corner])).to_coco()
    coco["images"][0]["file_name"] = "sub dir/a #1.jpg"
    coco["annotations"][0]["segmentation"] = [[0, 0, 5, 0, 5, 2, 0, 2]]  # the top half, as polygons
    coco["annotations"][2]["iscrowd"] = 1
    coco["categories"] = [{"id": 1, "name": 'a "quoted" <name> & more'}]
    src, out = tmp_path / "c.json", tmp_path / "t.json"
    src.write_text(json.dumps(coco))
    args = ["convert", str(src), "--to", "label-studio", "--out", str(out), "--as-annotations"]
    assert main([*args, "--image-root", "http://host/photos/"]) == 0
    assert "(1 empty masks left out: no pixel to draw; 1 crowd regions drawn as brush masks)" in (
        capsys.readouterr().out
    )
    (task,) = json.loads(out.read_text())
    assert task["data"] == {"image": "http://host/photos/sub%20dir/a%20%231.jpg"}
    assert "predictions" not in task and task["annotations"][0]["ground_truth"] is False
    top, crowd = _regions(task)
    assert np.array_equal(lsrle.decode(top["value"]["rle"], (4, 5)), full & (np.arange(4)[:, None] < 2))
    assert np.array_equal(lsrle.decode(crowd["value"]["rle"], (4, 5)), corner)
    label = ET.fromstring(out.with_suffix(".label_config.xml").read_text())[1][0]
    assert label.get("value") == 'a "quoted" <name> & more'
    tasks, _ = to_label_studio(coco, image_root="", from_name="brush", to_name="photo")
    assert tasks[0]["data"] == {"photo": "sub%20dir/a%20%231.jpg"}
    assert {(r["from_name"], r["to_name"]) for r in _regions(tasks[0])} == {("brush", "photo")}


def test_label_studio_refusals_write_nothing(tmp_path, capsys):
    src, _ = _coco_file(tmp_path)
    out = tmp_path / "t.json"
    assert main(["convert", str(src), "--to", "label-studio", "--out", str(out), "--tolerance", "1"]) == 2
    assert "--to label-studio writes the masks as they are" in capsys.readouterr().err
    assert main(["convert", str(src), "--to", "yolo", "--out", str(out), "--as-annotations"]) == 2
    with pytest.raises(ConvertError, match="--image-root and --as-annotations are for --to label-studio"):
        convert(src, "yolo", tmp_path / "y", image_root="http://x/")
    with pytest.raises(ConvertError, match="for --to label-studio"):
        convert(src, "coco-polygon", out, as_annotations=True)
    coco = json.loads(src.read_text())
    coco["annotations"][1]["category_id"] = 9
    src.write_text(json.dumps(coco))
    with pytest.raises(ConvertError, match="annotation 2: category 9 is not in 'categories'"):
        convert(src, "label-studio", out)
    coco["annotations"][1].update(category_id=1, id=1)
    src.write_text(json.dumps(coco))
    with pytest.raises(ConvertError, match="annotation '1': a second annotation of its image"):
        convert(src, "label-studio", out)
    coco["annotations"][1]["segmentation"] = rle.encode(np.zeros((3, 3), bool))
    src.write_text(json.dumps(coco))
    with pytest.raises(ConvertError, match="no 40x50 mask"):
        convert(src, "label-studio", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.json"]
