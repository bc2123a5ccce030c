"""`mobilesam convert LABELS --to coco`: YOLO label files (a detector's boxes, a segmentation
dataset, LabelImg's) read as COCO, so that boxes-to-masks and the UI take them; bad lines
are refused naming file and line, with nothing written."""

import json
import shutil

import numpy as np
import pytest
from conftest import IMAGES, SMALL
from PIL import Image
from test_polygons import _coco_file, _coco_fill, _island_and_friends

from mobilesam import MobileSAM
from mobilesam.box_job import BoxJob
from mobilesam.cli import main
from mobilesam.convert import ConvertError, convert
from mobilesam.label_files import labelme_to_coco, read_classes, voc_to_coco, yolo_to_coco
from mobilesam.utils import rle


def _images(root, sizes: dict) -> None:
    for name, (w, h) in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), (90, 120, 30)).save(root / name)


def _labels(root, files: dict) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_our_yolo_labels_come_back_as_the_same_masks(tmp_path, capsys):
    """COCO RLE -> YOLO (exact) -> COCO polygons: every pixel, the class names, bbox and area."""
    src, mask = _coco_file(tmp_path, extra_categories=True)
    dataset = tmp_path / "dataset"
    assert main(["convert", str(src), "--to", "yolo", "--out", str(dataset), "--tolerance", "0"]) == 0
    _images(dataset / "images", {"cam1/a.jpg": (50, 40), "b.png": (50, 40)})
    capsys.readouterr()
    out = tmp_path / "back.json"
    args = ["convert", str(dataset / "labels"), "--to", "coco", "--images", str(dataset / "images")]
    assert main([*args, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"coco: 2 objects of 2 images in {out} (from YOLO labels; class names from {dataset / 'classes.txt'})"
    )
    coco = json.loads(out.read_text())
    assert coco["categories"] == [{"id": 1, "name": "tree"}, {"id": 2, "name": "car"}]
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        ("b.png", 50, 40),
        ("cam1/a.jpg", 50, 40),
    ]
    masks = [mask, _island_and_friends(mask)]
    assert [a["category_id"] for a in coco["annotations"]] == [1, 2]  # tree, car, as they were
    for ann, m in zip(coco["annotations"], masks):
        assert ann["image_id"] == 2 and ann["iscrowd"] == 0
        assert (_coco_fill(ann["segmentation"], m.shape) == m).all()  # holes, parts, lines: all kept
        assert ann["area"] == m.sum()  # the cuts add nothing, holes subtract
        ys, xs = np.nonzero(m)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    # And into YOLO again: the same label files.
    convert(out, "yolo", tmp_path / "again", tolerance=0)
    for name in ("labels/cam1/a.txt", "labels/b.txt", "classes.txt"):
        assert (tmp_path / "again" / name).read_text() == (dataset / name).read_text()


def test_detector_output_boxes_polygons_scores_and_rotated_photos(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    _images(images, {"a.png": (200, 100), "empty.png": (10, 10)})
    (images / "notes.md").write_text("not an image: passed over")
    rotated = Image.new("RGB", (200, 100))
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored 200x100, shown (and segmented) 100x200
    rotated.save(images / "turned.jpg", exif=exif)
    _labels(
        labels,
        {
            "a.txt": "0 0.5 0.5 0.2 0.4\n\n2 0.25 0.5 0.5 1 0.875\n"  # box; blank; box + conf
            "1 0.1 0.1 0.3 0.1 0.3 0.6\n"  # a triangle
            "1 0 0 1 0 1 1 0 1 0.5\n",  # the whole image, with a confidence
            "turned.txt": "0 0.5 0.5 0.5 0.5\n",
            "empty.txt": "",
        },
    )
    coco = yolo_to_coco(labels, images)
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        ("a.png", 200, 100),
        ("empty.png", 10, 10),
        ("turned.jpg", 100, 200),  # EXIF applied, as load_image does
    ]
    assert coco["categories"] == [{"id": 1, "name": "0"}, {"id": 2, "name": "1"}, {"id": 3, "name": "2"}]
    anns = coco["annotations"]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in anns] == [
        (1, 1, 1),
        (2, 1, 3),
        (3, 1, 2),
        (4, 1, 2),
        (5, 3, 1),
    ]
    assert anns[0]["bbox"] == [80, 30, 40, 40] and anns[0]["area"] == 1600 and "segmentation" not in anns[0]
    assert anns[1]["bbox"] == [0, 0, 100, 100] and anns[1]["score"] == 0.875
    assert anns[2]["segmentation"] == [[20, 10, 60, 10, 60, 60]] and anns[2]["bbox"] == [20, 10, 40, 50]
    assert anns[2]["area"] == 1000 and "score" not in anns[2]
    assert anns[3]["area"] == 20000 and anns[3]["score"] == 0.5
    assert anns[4]["bbox"] == [25, 50, 50, 100]  # fractions of the upright image
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    with pytest.raises(
        ConvertError, match="annotation 1: it has no segmentation, a box only: `mobilesam boxes-to"
    ):
        convert(tmp_path / "boxes.json", "yolo", tmp_path / "yolo")  # boxes-to-masks first
    coco["annotations"][0]["segmentation"] = []  # CVAT's and Roboflow's box-only annotations
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    with pytest.raises(ConvertError, match="annotation 1: it has no segmentation, a box only"):
        convert(tmp_path / "boxes.json", "yolo", tmp_path / "yolo")

    # Class names: a dataset YAML (list or {index: name}), LabelImg's classes.txt in the labels.
    (tmp_path / "data.yaml").write_text("path: .\nnames:\n  0: person\n  1: bicycle\n  2: car\n")
    assert [c["name"] for c in yolo_to_coco(labels, images, tmp_path / "data.yaml")["categories"]] == [
        "person",
        "bicycle",
        "car",
    ]
    (tmp_path / "list.yaml").write_text("names: [person, bicycle, car, bus]\n")
    assert len(yolo_to_coco(labels, images, tmp_path / "list.yaml")["categories"]) == 4
    (labels / "classes.txt").write_text("person\nbicycle\ncar\n")
    out = tmp_path / "c.json"
    assert convert(labels, "coco", out, images=images).classes == labels / "classes.txt"
    assert [c["name"] for c in json.loads(out.read_text())["categories"]] == ["person", "bicycle", "car"]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("0 0.5 0.5 a 0.2", "line 2: not numbers"),
        ("-1 0.5 0.5 0.2 0.2", "line 2: class -1 is not a class number"),
        ("1.5 0.5 0.5 0.2 0.2", "line 2: class 1.5 is not a class number"),
        ("3 0.5 0.5 0.2 0.2", "line 2: class 3, but .*classes.txt names 3 classes"),
        ("0 0.5 0.5 0.2", "line 2: 3 numbers after the class: neither a box"),
        ("0", "line 2: 0 numbers after the class"),
        ("0 0.5 0.5 1.2 0.2", "line 2: coordinates outside 0..1"),
        ("0 0.5 nan 0.2 0.2", "line 2: a coordinate is not finite"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_written(tmp_path, line, match):
    images, labels = tmp_path / "images", tmp_path / "labels"
    _images(images, {"a.png": (20, 10)})
    _labels(labels, {"a.txt": f"0 0.5 0.5 0.2 0.2\n{line}\n"})
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    with pytest.raises(ConvertError, match=match):
        convert(labels, "coco", tmp_path / "out.json", images=images)
    assert not (tmp_path / "out.json").exists()


def test_bad_folders_are_refused_before_anything_is_written(tmp_path, capsys):
    images, labels, out = tmp_path / "images", tmp_path / "labels", tmp_path / "out.json"
    _images(images, {"a.png": (20, 10), "b.png": (20, 10)})
    _labels(labels, {"a.txt": "0 0.5 0.5 0.2 0.2\n"})

    def refused(match, src=labels, to="coco", **kwargs):
        with pytest.raises(ConvertError, match=match):
            convert(src, to, out, **{"images": images, **kwargs})
        assert not out.exists()

    refused("label files need --images DIR", images=None)
    refused(r"is a folder: label files \(YOLO, Pascal VOC, LabelMe\) convert --to coco", to="yolo")
    (tmp_path / "c.json").write_text(json.dumps({"images": []}))
    refused("is COCO already: --to coco reads label files or a Label Studio export", src=tmp_path / "c.json")
    refused("missing.json: no such file", src=tmp_path / "missing.json")
    refused("--images and --classes are for a folder of label files", src=tmp_path / "c.json", to="yolo")
    refused("--images .*missing: not a folder", images=tmp_path / "missing")
    (tmp_path / "bad.yaml").write_text("names: {1: a}\n")
    refused("indices are not 0..0", classes=tmp_path / "bad.yaml")
    (tmp_path / "none.yaml").write_text("nc: 3\n")
    refused("no 'names' list", classes=tmp_path / "none.yaml")
    refused("cannot read class names", classes=tmp_path / "missing.txt")
    _labels(labels, {"sub/c.txt": "0 0.5 0.5 0.2 0.2\n", "d.txt": ""})
    refused(r"labels/d.txt: no image of that name below .*images and 1 more")
    (labels / "d.txt").unlink()
    (labels / "sub" / "c.txt").unlink()
    shutil.copy(images / "a.png", images / "a.jpg")
    refused("images a.jpg and a.png would share the label file")
    (images / "a.jpg").unlink()
    (images / "b.png").write_bytes(b"\x89PNG not really")
    refused("b.png is not an image file Pillow can read")
    (images / "b.png").unlink()
    assert main(["convert", str(labels), "--to", "coco", "--images", str(images), "--out", str(out)]) == 0
    args = ["convert", str(labels), "--to", "coco", "--images", str(images), "--out", str(out)]
    assert main([*args, "--tolerance", "1"]) == 2
    assert "label files' polygons are taken as they are" in capsys.readouterr().err


def test_read_classes_from_text_files(tmp_path):
    (tmp_path / "obj.names").write_text("person\n\n traffic light \n")
    assert read_classes(tmp_path / "obj.names") == ["person", "traffic light"]


def test_files_saved_by_windows_tools_with_a_bom_read_as_without(tmp_path):
    """UTF-8 with a byte-order mark and CRLF lines (Notepad, Excel's CSV-to-text, some
    exporters): class lists, YOLO labels, LabelMe and COCO JSON read as plain UTF-8 ones;
    the BOM was taken for part of the first class name, the first number or the JSON."""
    from mobilesam.convert import load_coco

    bom = "\ufeff"
    _images(tmp_path / "images", {"a.jpg": (100, 80)})
    (tmp_path / "classes.txt").write_text(bom + "café\r\ncar\r\n", encoding="utf-8", newline="")
    assert read_classes(tmp_path / "classes.txt") == ["café", "car"]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(
        bom + "1 0.5 0.5 0.2 0.25\r\n\r\n", encoding="utf-8", newline=""
    )
    coco = yolo_to_coco(tmp_path / "labels", tmp_path / "images", tmp_path / "classes.txt")
    assert [a["bbox"] for a in coco["annotations"]] == [[40.0, 30.0, 20.0, 20.0]]
    assert [c["name"] for c in coco["categories"]] == ["café", "car"] and coco["annotations"][0][
        "category_id"
    ] == 2
    shape = {"label": "car", "shape_type": "rectangle", "points": [[10, 10], [30, 20]], "group_id": None}
    labelme = {"shapes": [shape], "imagePath": "a.jpg", "imageHeight": 80, "imageWidth": 100}
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "a.json").write_text(bom + json.dumps(labelme), encoding="utf-8")
    assert len(labelme_to_coco(tmp_path / "lm", tmp_path / "images")["annotations"]) == 1
    (tmp_path / "c.json").write_text(bom + json.dumps(coco), encoding="utf-8")
    assert load_coco(tmp_path / "c.json")["annotations"] == coco["annotations"]


def test_detector_boxes_to_yolo_segmentation_labels(ckpt_vit_t, tmp_path, capsys):
    """The auto-labelling chain: a detector's YOLO boxes -> COCO -> boxes-to-masks -> YOLO
    segmentation labels, each mask inside its box."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    shutil.copy(IMAGES / "truck.jpg", images / "truck.jpg")  # 1800x1200
    _labels(labels, {"truck.txt": "2 0.3125 0.6145833 0.1527778 0.2291667 0.91\n"})  # TRUCK_BOX
    (tmp_path / "classes.txt").write_text("person\nbicycle\ncar\n")
    convert(labels, "coco", tmp_path / "boxes.json", images=images)
    sam = MobileSAM(ckpt_vit_t, img_size=SMALL)
    summary = BoxJob(tmp_path / "boxes.json", images, tmp_path / "masks", progress=lambda m: None).run(sam)
    assert summary.done == ["truck.jpg"] and not summary.failed
    (ann,) = json.loads((tmp_path / "masks" / "annotations.json").read_text())["annotations"]
    x, y, w, h = ann["bbox"]
    assert [x, y, w, h] == pytest.approx([425, 600, 275, 275], abs=1e-3) and ann["category_id"] == 3
    assert ann["box_score"] == 0.91 and 0 <= ann["score"] <= 1  # the detector's; the mask's
    want = sam.segment(images / "truck.jpg", input_box=[x, y, x + w, y + h]).masks[0]
    assert np.array_equal(rle.decode(ann["segmentation"]), want)
    # The labels folder itself as boxes-to-masks' input: the same annotations.
    args = ["boxes-to-masks", str(labels), "--images", str(images), "-o", str(tmp_path / "direct")]
    args += ["--checkpoint", str(ckpt_vit_t), "--img-size", str(SMALL)]
    assert main([*args, "--classes", str(tmp_path / "classes.txt")]) == 0
    direct = json.loads((tmp_path / "direct" / "annotations.json").read_text())
    assert direct == json.loads((tmp_path / "masks" / "annotations.json").read_text())
    args = [
        "boxes-to-masks",
        str(tmp_path / "boxes.json"),
        "--images",
        str(images),
        "-o",
        str(tmp_path / "x"),
    ]
    assert main([*args, "--classes", str(tmp_path / "classes.txt")]) == 2  # a COCO file has its categories
    assert "classes names the classes of a folder of label files" in capsys.readouterr().err
    convert(tmp_path / "masks" / "annotations.json", "yolo", tmp_path / "seg")
    assert (tmp_path / "seg" / "classes.txt").read_text() == "person\nbicycle\ncar\n"
    (line,) = (tmp_path / "seg" / "labels" / "truck.txt").read_text().splitlines()
    assert line.startswith("2 ")  # car, class 2 as it came in


VOC_000001 = """<annotation>
\t<folder>VOC2007</folder>
\t<filename>000001.jpg</filename>
\t<source><database>The VOC2007 Database</database></source>
\t<size><width>353</width><height>500</height><depth>3</depth></size>
\t<segmented>0</segmented>
\t<object>
\t\t<name>dog</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
\t\t<bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox>
\t</object>
\t<object>
\t\t<name>person</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
\t\t<bndbox><xmin>8</xmin><ymin>12</ymin><xmax>352</xmax><ymax>498</ymax></bndbox>
\t</object>
</annotation>
"""


def test_pascal_voc_files_become_coco_boxes(tmp_path, capsys):
    """VOC's own layout (Annotations/, JPEGImages/), its 1-based inclusive corners, a float
    box as CVAT writes them, a box past the edge, `difficult` kept."""
    voc, images = tmp_path / "Annotations", tmp_path / "JPEGImages"
    _images(images, {"000001.jpg": (353, 500), "sub/b.png": (40, 30), "none.jpg": (8, 8)})
    cvat = (
        "<annotation><filename>renamed.png</filename><size><width>0</width><height>0</height></size>"
        "<object><name>car</name><difficult>1</difficult><bndbox><xmin>10.5</xmin><ymin>1</ymin>"
        "<xmax>45</xmax><ymax>20.25</ymax></bndbox></object></annotation>"
    )
    _labels(voc, {"000001.xml": VOC_000001, "sub/b.xml": cvat})
    out = tmp_path / "voc.json"
    assert main(["convert", str(voc), "--to", "coco", "--images", str(images), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"coco: 3 objects of 3 images in {out} (from Pascal VOC labels; classes named in the files)"
    )
    coco = json.loads(out.read_text())
    assert coco["categories"] == [
        {"id": 1, "name": "car"},
        {"id": 2, "name": "dog"},
        {"id": 3, "name": "person"},
    ]
    assert [i["file_name"] for i in coco["images"]] == ["000001.jpg", "none.jpg", "sub/b.png"]
    dog, person, car = coco["annotations"]
    assert (dog["image_id"], dog["category_id"], dog["bbox"], dog["area"]) == (
        1,
        2,
        [47, 239, 148, 132],
        148 * 132,
    )
    assert dog["difficult"] == 0 and person["bbox"] == [7, 11, 345, 487]
    # A file name inside the XML is not used (files get renamed; the pairing is by path);
    # a size of 0 means unknown; the box is clipped to the image.
    assert (car["image_id"], car["category_id"], car["difficult"]) == (3, 1, 1)
    assert car["bbox"] == [9.5, 0, 30.5, 20.25] and car["area"] == 30.5 * 20.25  # xmax 45 clipped to 40

    (tmp_path / "classes.txt").write_text("person\ndog\ncar\nbus\n")  # --classes: its order
    coco = voc_to_coco(voc, images, tmp_path / "classes.txt")
    assert [c["name"] for c in coco["categories"]] == ["person", "dog", "car", "bus"]
    assert [a["category_id"] for a in coco["annotations"]] == [2, 1, 3]


@pytest.mark.parametrize(
    ("xml", "match"),
    [
        ("<annotation><object>", "a.xml: not XML"),
        ("<labels/>", "its root is <labels>, not <annotation>"),
        (
            "<annotation><object><name>x</name></object></annotation>",
            "a.xml object 1: needs a <name> and a <bndbox>",
        ),
        (
            "<annotation><object><name>x</name><bndbox><xmin>a</xmin></bndbox></object></annotation>",
            "a.xml object 1: <xmin> is 'a', not a number",
        ),
        (
            "<annotation><object><name>x</name><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>4</xmax>"
            "<ymax>3</ymax></bndbox></object></annotation>",
            r"xmax/ymax \(4, 3\) below xmin/ymin \(5, 1\)",
        ),
        (
            "<annotation><size><width>10</width><height>20</height></size></annotation>",
            "<size> says 10x20, the image is 20x10",
        ),
        (
            "<annotation><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax>"
            "<ymax>3</ymax></bndbox></object></annotation>",
            "a.xml object 1: class 'cat' is not in .*names.txt",
        ),
    ],
)
def test_a_bad_voc_file_is_named_and_nothing_is_written(tmp_path, xml, match):
    images, voc = tmp_path / "images", tmp_path / "voc"
    _images(images, {"a.png": (20, 10)})
    _labels(voc, {"a.xml": xml})
    (tmp_path / "names.txt").write_text("dog\nx\n")
    with pytest.raises(ConvertError, match=match):
        convert(voc, "coco", tmp_path / "out.json", images=images, classes=tmp_path / "names.txt")
    assert not (tmp_path / "out.json").exists()


def test_a_folder_of_both_kinds_is_refused(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    _images(images, {"a.png": (20, 10), "b.png": (20, 10)})
    _labels(labels, {"a.txt": "0 0.5 0.5 0.2 0.2\n", "b.xml": "<annotation/>", "classes.txt": "x\n"})
    with pytest.raises(ConvertError, match=r"holds label files of several kinds \(voc and yolo\): keep one"):
        convert(labels, "coco", tmp_path / "out.json", images=images)
    (labels / "a.txt").unlink()  # a VOC folder with a classes.txt beside: VOC
    assert convert(labels, "coco", tmp_path / "out.json", images=images).source == "voc"


def test_masks_to_labelme_files_and_back(tmp_path, capsys):
    """COCO RLE -> LabelMe (exact polygons, parts grouped, holes cut in) -> COCO: every pixel;
    LabelMe files are never overwritten."""
    src, mask = _coco_file(tmp_path, extra_categories=True)
    images, out = tmp_path / "photos", tmp_path / "labelme"
    _images(images, {"cam1/a.jpg": (50, 40), "b.png": (50, 40)})
    args = ["convert", str(src), "--to", "labelme", "--out", str(out), "--images", str(images)]
    assert main([*args, "--tolerance", "0"]) == 0
    assert capsys.readouterr().out.strip() == f"labelme: 2 masks of 2 images, 2 files in {out}"
    a = json.loads((out / "cam1" / "a.json").read_text())
    assert a["imagePath"] == "../../photos/cam1/a.jpg" and a["imageData"] is None
    assert (a["imageHeight"], a["imageWidth"]) == (40, 50) and a["version"] and a["flags"] == {}
    labels = {(s["label"], s["group_id"]) for s in a["shapes"]}
    assert labels == {("tree", 1), ("car", 2)}  # each mask has several parts: one group each
    assert all(s["shape_type"] == "polygon" and len(s["points"]) >= 4 for s in a["shapes"])
    assert json.loads((out / "b.json").read_text())["shapes"] == []

    back = tmp_path / "back.json"
    assert main(["convert", str(out), "--to", "coco", "--images", str(images), "--out", str(back)]) == 0
    assert "(from LabelMe labels; classes named in the files)" in capsys.readouterr().out
    coco = json.loads(back.read_text())
    assert coco["categories"] == [{"id": 1, "name": "car"}, {"id": 2, "name": "tree"}]
    tree, car = coco["annotations"]
    assert (tree["category_id"], car["category_id"]) == (2, 1)
    for ann, m in ((tree, mask), (car, _island_and_friends(mask))):
        assert (_coco_fill(ann["segmentation"], m.shape) == m).all() and ann["area"] == m.sum()

    with pytest.raises(ConvertError, match=r"a.json exists .*not overwritten"):
        convert(src, "labelme", out, images=images)
    # Without --images the files name their image only: they belong beside it.
    convert(src, "labelme", tmp_path / "beside")
    assert json.loads((tmp_path / "beside" / "cam1" / "a.json").read_text())["imagePath"] == "a.jpg"


def _b64_png(mask: np.ndarray) -> str:
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_labelme_shapes(tmp_path, capsys):
    """Every region shape LabelMe and X-AnyLabeling write; groups; points and lines left out."""
    images = tmp_path / "photos"
    _images(images, {"a.jpg": (100, 80)})
    patch = np.zeros((10, 20), dtype=bool)
    patch[2:8, 5:15] = True

    def shape(label, kind, points, group=None, **extra):
        return {"label": label, "points": points, "group_id": group, "shape_type": kind, "flags": {}, **extra}

    shapes = [
        shape("cup", "polygon", [[10, 10], [30, 10], [30, 20], [10, 20]]),
        shape("cup", "rectangle", [[80, 70], [60, 50]]),  # corners in any order
        shape("ball", "circle", [[50, 40], [50, 30]]),  # centre, a point on the rim: r = 10
        shape("cup", "mask", [[40.2, 60], [60, 70]], mask=_b64_png(patch)),
        shape("tag", "point", [[5, 5]]),
        shape("tag", "line", [[1, 1], [9, 9]]),
        shape("tag", "linestrip", [[1, 1], [9, 9], [1, 9]]),
        shape("bowl", "polygon", [[0, 0], [10, 0], [10, 10]], group=3),
        shape("bowl", "polygon", [[20, 0], [30, 0], [30, 10]], group=3),
        shape("bowl", "rectangle", [[0, 30], [10, 40]], group=4),
        shape("bowl", "polygon", [[20, 30], [30, 30], [30, 40], [20, 40]], group=4),
        shape("cup", None, [[0, 70], [-5, 90], [10, 90]]),  # no shape_type: a polygon; clipped to the image
    ]
    data = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": "x.jpg", "imageData": None}
    _labels(images, {"a.json": json.dumps({**data, "imageHeight": 80, "imageWidth": 100})})
    out = tmp_path / "c.json"
    assert main(["convert", str(images), "--to", "coco", "--images", str(images), "--out", str(out)]) == 0
    assert "3 shapes left out, not regions: line 1, linestrip 1, point 1" in capsys.readouterr().out
    coco = json.loads(out.read_text())
    assert coco["info"]["left_out"] == {"point": 1, "line": 1, "linestrip": 1}
    assert [c["name"] for c in coco["categories"]] == ["ball", "bowl", "cup"]
    poly, rect, circle, masked, bowls, box_and_poly, clipped = coco["annotations"]
    assert poly["segmentation"] == [[10, 10, 30, 10, 30, 20, 10, 20]] and poly["area"] == 200
    assert rect["bbox"] == [60, 50, 20, 20] and rect["area"] == 400 and "segmentation" not in rect
    assert (
        circle["bbox"] == pytest.approx([40, 30, 20, 20], abs=0.05) and len(circle["segmentation"][0]) == 128
    )
    assert circle["area"] == pytest.approx(np.pi * 100, rel=0.01)
    m = rle.decode(masked["segmentation"])  # the patch placed at the rounded first point
    assert m.sum() == 60 and m[62:68, 45:55].all() and masked["bbox"] == [45, 62, 10, 6]
    assert bowls["segmentation"] == [[0, 0, 10, 0, 10, 10], [20, 0, 30, 0, 30, 10]] and bowls["area"] == 100
    m = rle.decode(box_and_poly["segmentation"])  # a group with a rectangle: one mask
    assert m.sum() == 200 and m[30:40, 0:10].all() and m[30:40, 20:30].all()
    assert clipped["segmentation"] == [[0, 70, 0, 80, 10, 80]]
    assert (poly["category_id"], circle["category_id"], bowls["category_id"]) == (3, 1, 2)

    def refused(shapes, match, classes=None, **fields):
        _labels(images, {"a.json": json.dumps({**data, "shapes": shapes, **fields})})
        with pytest.raises(ConvertError, match=match):
            convert(images, "coco", tmp_path / "bad.json", images=images, classes=classes)
        assert not (tmp_path / "bad.json").exists()

    refused(
        shapes, r"imageWidth x imageHeight says 80x100, the image is 100x80", imageWidth=80, imageHeight=100
    )
    refused([shape("", "polygon", [[0, 0], [1, 0], [1, 1]])], "a.json shape 1: no label")
    refused([shape("x", "polygon", [[0, 0], [1, 0]])], "shape 1: a polygon needs 3 or more points, it has 2")
    refused([shape("x", "rectangle", [[0, 0], [1, 0], [2, 2]])], "a rectangle needs 2 points, it has 3")
    refused([shape("x", "polygon", [[0, 0], [1, "a"], [2, 2]])], "points must be a list of finite")
    refused([shape("x", "mask", [[0, 0], [2, 2]], mask="not png")], "its mask is not a base64 PNG")
    refused(["polygon"], "shape 1: not an object")
    refused(
        [shape("x", "polygon", [[0, 0], [1, 0], [1, 1]], group=[1])], r"group_id \[1\] is not a whole number"
    )
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\ncup\n")  # labelme's labels.txt
    refused(
        [shape("x", "polygon", [[0, 0], [1, 0], [1, 1]])], r"class 'x' is not in", tmp_path / "labels.txt"
    )
    _labels(images, {"a.json": json.dumps({**data, "shapes": shapes[:1]})})
    coco = labelme_to_coco(images, images, tmp_path / "labels.txt")
    assert coco["categories"] == [{"id": 1, "name": "cup"}]  # __ignore__, _background_: no classes
    _labels(images, {"a.json": "[1]"})
    with pytest.raises(ConvertError, match="not a LabelMe file"):
        convert(images, "coco", tmp_path / "bad.json", images=images)
