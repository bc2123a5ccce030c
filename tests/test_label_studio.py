"""Label Studio: the brush RLE (byte for byte as label-studio-converter writes it) and
`mobilesam convert --to label-studio` (tasks with brush masks, and their labeling config)."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import IMAGES, SMALL
from PIL import Image
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


def test_brush_rle_with_literal_records():
    """Label Studio's page packs strokes with rle-pack, which also writes records of values
    as they are (a 0 bit): a 1x3 image whose first record is 8 literal values (two pixels,
    the second transparent), then a run of 4 values of 255. Read as label-studio-converter
    reads it."""
    header = f"{12:032b}{7:05b}" + "".join(f"{w - 1:04b}" for w in (3, 4, 8, 16))
    literal = "0" + "00" + f"{8 - 1:03b}" + "".join(f"{v:08b}" for v in (0, 0, 0, 255, 7, 7, 7, 0))
    run = "1" + "00" + f"{4 - 1:03b}" + f"{255:08b}"
    bits = header + literal + run
    bits += "0" * (-len(bits) % 8)
    data = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    assert lsrle.decode(data, (1, 3)).tolist() == [[True, False, True]]
    brush = pytest.importorskip("label_studio_converter.brush")
    assert brush.decode_rle(data).tolist() == [0, 0, 0, 255, 7, 7, 7, 0, 255, 255, 255, 255]


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
    with pytest.raises(ConvertError, match="ends in the middle"):  # the last value cut short
        lsrle.decode(lsrle.encode(np.ones((1, 1), bool))[:-1], (1, 1))
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
    empty = tmp_path / "empty.json"  # no image at all: no task, the config's one "object"
    empty.write_text(json.dumps({"images": [], "annotations": []}))
    assert convert(empty, "label-studio", out).images == 0 and json.loads(out.read_text()) == []
    assert '<Label value="object"' in out.with_suffix(".label_config.xml").read_text()
    tasks, _ = to_label_studio(coco, image_root="", from_name="brush", to_name="photo")
    assert tasks[0]["data"] == {"photo": "sub%20dir/a%20%231.jpg"}
    assert {(r["from_name"], r["to_name"]) for r in _regions(tasks[0])} == {("brush", "photo")}


def test_label_studio_refusals_write_nothing(tmp_path, capsys):
    src, _ = _coco_file(tmp_path)
    out = tmp_path / "t.json"
    assert main(["convert", str(src), "--to", "label-studio", "--out", str(out), "--tolerance", "1"]) == 2
    assert "--to label-studio writes the masks as they are" in capsys.readouterr().err
    assert main(["convert", str(src), "--to", "yolo", "--out", str(out), "--as-annotations"]) == 2
    with pytest.raises(ConvertError, match="--image-root is for --to label-studio, and for a Label"):
        convert(src, "yolo", tmp_path / "y", image_root="http://x/")
    with pytest.raises(ConvertError, match="--as-annotations is for --to label-studio"):
        convert(src, "coco-polygon", out, as_annotations=True)
    with pytest.raises(ConvertError, match="not a folder"):
        convert(tmp_path, "coco", out, images=tmp_path, image_root="http://x/")
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


def _export(tmp_path, tasks: list) -> str:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    return str(path)


def test_reviewed_tasks_come_back_as_the_same_masks(tmp_path, capsys):
    """Our tasks, reviewed in Label Studio (the regions now an annotation), exported as
    JSON and read back: the same images, masks and category names; with --images the
    sizes of images with nothing in them too."""
    src, mask = _coco_file(tmp_path, extra_categories=True)
    tasks, _ = to_label_studio(json.loads(src.read_text()), as_annotations=True)
    out = tmp_path / "back.json"
    assert main(["convert", _export(tmp_path, tasks), "--to", "coco", "--out", str(out)]) == 0
    assert "coco: 2 objects of 2 images" in capsys.readouterr().out
    back = json.loads(out.read_text())
    assert [i["file_name"] for i in back["images"]] == ["cam1/a.jpg", "b.png"]
    assert (back["images"][0]["height"], back["images"][0]["width"]) == mask.shape
    assert "width" not in back["images"][1]  # nothing in it: no region tells its size
    assert [c["name"] for c in back["categories"]] == ["car", "tree"]  # sorted: no --classes
    names = {c["id"]: c["name"] for c in back["categories"]}
    assert [names[a["category_id"]] for a in back["annotations"]] == ["tree", "car"]
    for ann, expected in zip(back["annotations"], [mask, _island_and_friends(mask)]):
        assert np.array_equal(rle.decode(ann["segmentation"]), expected) and ann["area"] == expected.sum()
    images = tmp_path / "photos"
    (images / "cam1").mkdir(parents=True)
    for name, (h, w) in (("cam1/a.jpg", mask.shape), ("b.png", (40, 50))):
        Image.new("RGB", (w, h)).save(images / name)
    assert convert(_export(tmp_path, tasks), "coco", out, images=images).images == 2
    assert {(i["width"], i["height"]) for i in json.loads(out.read_text())["images"]} == {(50, 40)}
    Image.new("RGB", (51, 40)).save(images / "cam1" / "a.jpg")
    with pytest.raises(ConvertError, match=r"for a 50x40 image, cam1/a\.jpg is 51x40"):
        convert(_export(tmp_path, tasks), "coco", out, images=images)


def _region(kind: str, value: dict, size=(100, 200), **extra) -> dict:
    h, w = size
    return {
        "type": kind,
        "value": value,
        "original_width": w,
        "original_height": h,
        "to_name": "image",
        **extra,
    }


def test_label_studio_regions_and_which_annotation(tmp_path, capsys):
    """Polygons, rectangles (turned: polygons), ellipses, brush masks in Label Studio's %
    coordinates; keypoints and choices left out and counted; the ground-truth annotation,
    else the last not cancelled; a task with none left out; file names from local files,
    uploads and --image-root URLs."""
    rect = {"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["box"]}
    turned = {**rect, "rotation": 90}
    polygon = {"points": [[0, 0], [50, 0], [50, 50]], "polygonlabels": ["tri"]}
    ellipse = {"x": 50, "y": 50, "radiusX": 10, "radiusY": 20, "rotation": 0, "ellipselabels": ["egg"]}
    brush = np.zeros((100, 200), bool)
    brush[10:20, 30:60] = True
    tasks = [
        {
            "id": 11,
            "data": {"image": "/data/local-files/?d=sub%20dir/a.jpg"},
            "annotations": [
                {"result": [_region("polygonlabels", polygon)], "ground_truth": True},
                {"result": [_region("rectanglelabels", rect)]},  # later, but not the ground truth
            ],
        },
        {
            "id": 12,
            "data": {"image": "/data/upload/3/5d3f1a2b-b.png"},
            "annotations": [
                {
                    "result": [
                        _region("rectanglelabels", rect),
                        _region("rectanglelabels", turned),
                        _region("ellipselabels", ellipse),
                        _region(
                            "brushlabels",
                            {"format": "rle", "rle": lsrle.encode(brush), "brushlabels": ["paint"]},
                        ),
                        _region("keypointlabels", {"x": 1, "y": 2, "keypointlabels": ["k"]}),
                        _region("brushlabels", {"rle": lsrle.encode(0 * brush), "brushlabels": ["paint"]}),
                        {"type": "choices", "value": {"choices": ["good"]}, "to_name": "image"},
                    ]
                },
                {"result": [], "was_cancelled": True},
            ],
        },
        {"id": 13, "data": {"image": "http://host/photos/c%201.jpg"}, "annotations": [{"result": []}]},
        {"id": 14, "data": {"image": "/data/local-files/?d=d.jpg"}, "predictions": [{"result": []}]},
    ]
    out = tmp_path / "coco.json"
    args = ["convert", _export(tmp_path, tasks), "--to", "coco", "--out", str(out)]
    assert main([*args, "--image-root", "http://host/"]) == 0
    line = capsys.readouterr().out
    assert "coco: 5 objects of 3 images" in line
    assert "4 left out: choices 1, empty brush masks 1, keypointlabels 1, unlabelled tasks 1" in line
    coco = json.loads(out.read_text())
    assert [i["file_name"] for i in coco["images"]] == ["sub dir/a.jpg", "b.png", "photos/c 1.jpg"]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    anns = {names[a["category_id"]] + str(i): a for i, a in enumerate(coco["annotations"])}
    assert anns["tri0"]["segmentation"] == [[0, 0, 100, 0, 100, 50]] and anns["tri0"]["image_id"] == 1
    assert anns["box1"]["bbox"] == [20, 20, 60, 40] and "segmentation" not in anns["box1"]
    # Turned 90 degrees clockwise about its top left corner (20, 20): 60 wide becomes 60
    # down, 40 high becomes 40 to the left (clipped at the image's edge).
    assert anns["box2"]["segmentation"] == [[20, 20, 20, 80, 0, 80, 0, 20]]
    egg = np.asarray(anns["egg3"]["segmentation"][0]).reshape(-1, 2)
    assert np.allclose(egg.min(0), [80, 30], atol=0.1) and np.allclose(egg.max(0), [120, 70], atol=0.1)
    assert np.array_equal(rle.decode(anns["paint4"]["segmentation"]), brush)
    with pytest.raises(ConvertError, match="is also task 11's"):
        convert(_export(tmp_path, [tasks[0], tasks[0] | {"id": 99}]), "coco", out)


def test_label_studio_data_keys_legacy_brushes_classes_and_missing_images(tmp_path):
    """The image under another data key than the tag's name (`value="$img"`); brush masks
    stored under the older `labels` type; --classes orders the categories and refuses
    others; with --images, an image that is not there is named."""
    brush = np.zeros((100, 200), bool)
    brush[5:9, 7:11] = True
    legacy = _region("labels", {"format": "rle", "rle": lsrle.encode(brush), "labels": ["paint"]})
    rect = _region("rectanglelabels", {"x": 0, "y": 0, "width": 50, "height": 50, "rectanglelabels": ["box"]})
    tasks = [{"data": {"img": "/data/local-files/?d=a.jpg"}, "annotations": [{"result": [legacy, rect]}]}]
    out, classes = tmp_path / "coco.json", tmp_path / "classes.txt"
    classes.write_text("box\npaint\n")
    convert(_export(tmp_path, tasks), "coco", out, classes=classes)
    coco = json.loads(out.read_text())
    assert coco["images"][0]["file_name"] == "a.jpg"
    assert coco["categories"] == [{"id": 1, "name": "box"}, {"id": 2, "name": "paint"}]
    paint = next(a for a in coco["annotations"] if a["category_id"] == 2)
    assert np.array_equal(rle.decode(paint["segmentation"]), brush)
    classes.write_text("box\n")
    with pytest.raises(ConvertError, match="class 'paint' is not in"):
        convert(_export(tmp_path, tasks), "coco", out, classes=classes)
    (tmp_path / "photos").mkdir()
    with pytest.raises(ConvertError, match=r"task 1: .*a\.jpg"):
        convert(_export(tmp_path, tasks), "coco", tmp_path / "other.json", images=tmp_path / "photos")
    assert not (tmp_path / "other.json").exists()


@pytest.mark.parametrize(
    ("tasks", "match"),
    [
        ({"tasks": []}, "not a Label Studio JSON export"),
        ({"images": []}, "is COCO already"),
        (
            [
                {
                    "data": {"image": "/x/a.jpg"},
                    "annotations": [
                        {"result": [_region("polygonlabels", {"points": [[0, 0], [1, 1], [0, 1]]})]}
                    ],
                }
            ],
            "region 1: no label",
        ),
        (
            [
                {
                    "data": {"image": "/x/a.jpg"},
                    "annotations": [
                        {
                            "result": [
                                _region(
                                    "rectanglelabels",
                                    {"x": 1, "y": 1, "width": 1, "height": 1, "rectanglelabels": ["a"]},
                                ),
                                _region(
                                    "rectanglelabels",
                                    {"x": 1, "y": 1, "width": "2", "height": 1, "rectanglelabels": ["a"]},
                                    size=(5, 5),
                                ),
                            ]
                        }
                    ],
                }
            ],
            "disagree on the image's size",
        ),
        (
            [
                {
                    "data": {"image": "/x/a.jpg"},
                    "annotations": [
                        {
                            "result": [
                                _region(
                                    "rectanglelabels",
                                    {"x": 1, "y": 1, "width": "2", "height": 1, "rectanglelabels": ["a"]},
                                )
                            ]
                        }
                    ],
                }
            ],
            "its width is no number",
        ),
        (
            [
                {
                    "data": {"image": "/x/a.jpg"},
                    "annotations": [
                        {
                            "result": [
                                _region(
                                    "brushlabels",
                                    {"rle": lsrle.encode(np.ones((3, 3), bool)), "brushlabels": ["a"]},
                                )
                            ]
                        }
                    ],
                }
            ],
            "task 1 region 1: the brush RLE holds 36 values, not the 80000 of a 100x200",
        ),
        (
            [{"data": {"image": "/data/local-files/?d=../a.jpg"}, "annotations": [{"result": []}]}],
            "no image file name",
        ),
        ([{"data": {"text": 5}, "annotations": [{"result": []}]}], "no image URL"),
        ([{"data": "a.jpg", "annotations": [{"result": []}]}], "its data is not an object"),
        (
            [
                {
                    "data": {"image": "/x/a.jpg"},
                    "annotations": [
                        {"result": [{"type": "rectanglelabels", "original_width": 5, "original_height": 5}]}
                    ],
                }
            ],
            "region 1: no value",
        ),
        (
            [
                {
                    "data": {"image": "/x/a.jpg"},
                    "annotations": [{"result": [_region("rectanglelabels", {}, size=(0, 5))]}],
                }
            ],
            "a region has no original_width and original_height",
        ),
    ],
)
def test_a_bad_export_is_named_and_nothing_is_written(tmp_path, tasks, match):
    out = tmp_path / "coco.json"
    with pytest.raises(ConvertError, match=match):
        convert(_export(tmp_path, tasks), "coco", out)
    assert not out.exists()


def test_boxes_drawn_in_label_studio_become_masks(ckpt_vit_t, tmp_path):
    """A Label Studio export is an input of boxes-to-masks (and of `ui --import`): boxes
    drawn there become SAM masks, each the mask `segment` gives its box."""
    from mobilesam import MobileSAM

    images = tmp_path / "photos"
    images.mkdir()
    Image.open(IMAGES / "picture4.jpg").convert("RGB").resize((200, 100)).save(images / "p.png")
    rect = {"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["thing"]}
    tasks = [
        {
            "data": {"image": "/data/local-files/?d=p.png"},
            "annotations": [{"result": [_region("rectanglelabels", rect)]}],
        }
    ]
    args = ["boxes-to-masks", _export(tmp_path, tasks), "--images", str(images), "-o", str(tmp_path / "out")]
    assert main([*args, "--checkpoint", str(ckpt_vit_t), "--img-size", str(SMALL)]) == 0
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    (ann,) = coco["annotations"]
    assert ann["bbox"] == [20, 20, 60, 40] and coco["categories"] == [{"id": 1, "name": "thing"}]
    want = (
        MobileSAM(ckpt_vit_t, img_size=SMALL).segment(images / "p.png", input_box=[20, 20, 80, 60]).masks[0]
    )
    assert np.array_equal(rle.decode(ann["segmentation"]), want)
