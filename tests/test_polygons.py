"""Masks as polygons: exact outlines (holes, parts, 1-pixel lines), simplification, and
the COCO polygon / YOLO outputs and `mobilesam convert` built on them."""

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from mobilesam.cli import main
from mobilesam.convert import ConvertError, convert
from mobilesam.result import SegmentationResult
from mobilesam.utils import rle
from mobilesam.utils.polygons import fill_polygons, mask_to_polygon, mask_to_polygons


def _png_bits(path: Path) -> int:
    """A PNG's bit depth from its header (Pillow before 10 reads 16-bit grey as mode "I")."""
    return path.read_bytes()[24]


def _nested() -> np.ndarray:
    """A ring (a part with a hole), an island in the hole, a 1-pixel line, a lone pixel
    touching the ring at a corner."""
    m = np.zeros((40, 50), dtype=bool)
    m[5:30, 5:35] = True
    m[10:25, 10:30] = False
    m[15:20, 15:20] = True
    m[35, 2:48] = True
    m[30, 35] = True  # touches the ring's corner pixel (29, 34) diagonally only
    return m


def _coco_fill(polygons: list, size: tuple[int, int]) -> np.ndarray:
    """pycocotools' rasterisation of a COCO polygon segmentation (a union of polygons)."""
    flat = [np.asarray(p, dtype=np.float64).ravel().tolist() for p in polygons]
    return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(flat, *size))).astype(bool)


def test_outlines_are_exact_for_any_mask():
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (1, 17), (17, 1), *[tuple(rng.integers(2, 25, 2)) for _ in range(60)]]
    for shape in shapes:
        mask = rng.random(shape) < rng.random()
        parts = mask_to_polygons(mask)
        assert (fill_polygons(parts, shape) == mask).all(), shape
        one = mask_to_polygon(mask)
        assert (fill_polygons([one], shape) == mask).all(), shape
        if mask.any():  # pycocotools, which COCO readers use, agrees to the pixel
            assert (_coco_fill(parts, shape) == mask).all(), shape
            assert (_coco_fill([one], shape) == mask).all(), shape


def test_parts_holes_and_corners():
    assert [p.tolist() for p in mask_to_polygons(np.ones((1, 1), bool))] == [[[1, 0], [1, 1], [0, 1], [0, 0]]]
    assert mask_to_polygons(np.zeros((3, 4), bool)) == [] and mask_to_polygon(
        np.zeros((3, 4), bool)
    ).shape == (0, 2)
    mask = _nested()
    parts = mask_to_polygons(mask)
    # The ring, the line, the island, the corner pixel: largest first, each its own polygon.
    areas = [fill_polygons([p], mask.shape).sum() for p in parts]
    assert areas == [25 * 30 - 15 * 20, 46, 25, 1]
    assert (fill_polygons(parts[:1], mask.shape) == (mask & ~_island_and_friends(mask))).all()
    filled = mask_to_polygons(mask, holes=False)
    assert fill_polygons(filled[:1], mask.shape).sum() == 25 * 30  # the hole is filled in
    assert [len(p) for p in filled] == [4, 4, 4, 4]
    with pytest.raises(ValueError, match="HxW"):
        mask_to_polygons(np.ones((2, 2, 3), bool))


def test_a_part_in_a_hole_keeps_its_own_holes():
    """Rings in rings: each hole belongs to the innermost part around it."""
    mask = np.zeros((40, 40), dtype=bool)
    for lo, hi in [(2, 38), (8, 32), (14, 26)]:  # three rings, each with a hole
        mask[lo:hi, lo:hi] = True
        mask[lo + 3 : hi - 3, lo + 3 : hi - 3] = False
    parts = mask_to_polygons(mask)
    assert len(parts) == 3
    for part, (lo, hi) in zip(parts, [(2, 38), (8, 32), (14, 26)]):
        ring = np.zeros_like(mask)
        ring[lo:hi, lo:hi] = True
        ring[lo + 3 : hi - 3, lo + 3 : hi - 3] = False
        assert (fill_polygons([part], mask.shape) == ring).all()
        assert (_coco_fill([part], mask.shape) == ring).all()
    # Holes side by side, each right of the next, and an island with its own holes in one:
    # a hole's part is found through the holes to its right (the run of mask pixels right of
    # a hole ends at the next hole), so every hole must land in its own part's polygon.
    mask = np.zeros((30, 80), dtype=bool)
    mask[2:28, 2:78] = True
    for x in range(6, 70, 12):
        mask[8:20, x : x + 8] = False
    mask[10:18, 32:36] = True  # the island in the third hole
    mask[12:14, 33] = mask[15:17, 34] = False  # its holes
    parts = mask_to_polygons(mask)
    assert len(parts) == 2
    island = np.zeros_like(mask)
    island[10:18, 32:36] = True
    island[12:14, 33] = island[15:17, 34] = False
    assert (fill_polygons(parts[1:], mask.shape) == island).all()
    assert (fill_polygons(parts[:1], mask.shape) == mask & ~island).all()


def test_pixels_touching_at_a_corner_are_two_parts():
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = mask[2, 2] = True
    assert sorted(p.tolist() for p in mask_to_polygons(mask)) == [
        [[2, 1], [2, 2], [1, 2], [1, 1]],
        [[3, 2], [3, 3], [2, 3], [2, 2]],
    ]


def _island_and_friends(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    out[15:20, 15:20] = out[35, 2:48] = out[30, 35] = True
    return out


def test_tolerance_simplifies_within_it():
    yy, xx = np.mgrid[:300, :400]
    disc = (yy - 150) ** 2 / 120**2 + (xx - 200) ** 2 / 170**2 < 1
    exact, simple = mask_to_polygons(disc)[0], mask_to_polygons(disc, tolerance=1.0)[0]
    assert len(simple) * 4 < len(exact)
    assert {tuple(v) for v in simple} <= {tuple(v) for v in exact}  # a subset of the corners
    filled = fill_polygons([simple], disc.shape)
    assert (filled & disc).sum() / (filled | disc).sum() > 0.99
    # Every corner of the exact outline is within the tolerance of the simplified one.
    a, b = simple.astype(float), np.roll(simple, -1, axis=0).astype(float)
    ab, ap = b - a, exact[:, None, :] - a[None]
    t = np.clip((ap * ab).sum(-1) / (ab**2).sum(-1), 0, 1)
    far = np.hypot(*(ap - t[..., None] * ab).transpose(2, 0, 1)).min(1)
    assert 0.5 < far.max() <= 1.0
    line = np.zeros((5, 60), bool)
    line[2, 3:50] = True  # too thin to simplify: kept as it is
    assert (fill_polygons(mask_to_polygons(line, tolerance=3), line.shape) == line).all()


def _douglas_peucker(loop: np.ndarray, tolerance: float) -> np.ndarray:
    """Textbook Douglas-Peucker on a closed loop, one loop at a time, by recursion: from
    vertex 0 and the vertex farthest from it (the first such), each span split at its
    first farthest inner vertex while that lies beyond the tolerance of its chord."""
    pts = np.vstack([loop, loop[:1]]).astype(np.float64)
    keep = {0}

    def split(i: int, j: int) -> None:
        if j - i < 2:
            return
        (ax, ay), (bx, by) = pts[i], pts[j]
        dx, dy = bx - ax, by - ay
        norm = np.hypot(dx, dy)
        mid = pts[i + 1 : j]
        if norm == 0:
            dist = np.hypot(mid[:, 0] - ax, mid[:, 1] - ay)
        else:
            dist = np.abs(dx * (mid[:, 1] - ay) - dy * (mid[:, 0] - ax)) / norm
        k = i + 1 + int(np.argmax(dist))
        if dist[k - i - 1] > tolerance:
            keep.add(k)
            split(i, k)
            split(k, j)

    far = int(np.argmax(((pts[:-1] - pts[0]) ** 2).sum(1)))
    keep.add(far)
    split(0, far)
    split(far, len(loop))
    return loop[sorted(keep)] if len(keep) >= 3 and len(loop) > 4 else loop


def test_all_loops_at_once_simplify_as_one_at_a_time():
    """`simplify_loops` (every loop of a mask in one vectorised pass) keeps exactly the
    vertices recursive Douglas-Peucker keeps, loop by loop: noisy masks' specks and holes,
    a big smooth outline, float and repeated vertices, tiny loops, a loop of one point
    repeated and one on a line (which keep themselves: fewer than 3 vertices would stay)."""
    from mobilesam.utils.polygons import mask_outlines, simplify_loop, simplify_loops

    rng = np.random.default_rng(3)
    noisy = np.zeros((120, 160), bool)
    noisy[::2, ::3] = rng.random((60, 54)) < 0.5
    noisy |= rng.random(noisy.shape) < 0.3
    yy, xx = np.mgrid[:300, :400]
    disc = (yy - 150) ** 2 / 120**2 + (xx - 200) ** 2 / 170**2 < 1
    loops = mask_outlines(noisy) + mask_outlines(disc) + mask_outlines(_nested())
    loops += [rng.normal(0, 20, (n, 2)) for n in (3, 4, 5, 9, 40)]
    loops += [np.array([[0, 0], [5, 0], [5, 5], [0, 0], [0, 5], [-5, 5], [-5, 0]])]  # back to 0
    loops += [np.repeat(rng.integers(0, 30, (12, 2)), 2, axis=0)]  # every vertex twice
    loops += [np.full((6, 2), 7), np.array([[0, 0], [1, 0], [2, 0], [3, 0], [2, 0], [1, 0]])]
    assert len(loops) > 1000
    for tolerance in (0.5, 1.0, 2.5, 40.0):
        together = simplify_loops(loops, tolerance)
        for loop, simple in zip(loops, together, strict=True):
            expected = _douglas_peucker(loop, tolerance)
            assert np.array_equal(simple, expected) and simple.dtype == loop.dtype
            assert np.array_equal(simplify_loop(loop, tolerance), expected)
        assert sum(map(len, together)) < sum(map(len, loops))
    assert all(s is loop for s, loop in zip(simplify_loops(loops, 0), loops))
    assert simplify_loops([], 1.0) == []


def test_big_parts_are_joined_exactly_by_a_short_cut():
    """Two discs with over 2,048 corners each (the nearest-pair search subsamples them):
    one polygon, exact, and the cut between them about as long as the gap (110 px)."""
    yy, xx = np.mgrid[:960, :2000]
    mask = ((yy - 480) ** 2 + (xx - 475) ** 2 < 470**2) | ((yy - 480) ** 2 + (xx - 1525) ** 2 < 470**2)
    assert min(len(p) for p in mask_to_polygons(mask)) > 2048
    joined = mask_to_polygon(mask)
    assert (fill_polygons([joined], mask.shape) == mask).all()
    steps = np.hypot(*np.diff(np.vstack([joined, joined[:1]]), axis=0).T)
    assert 110 <= steps.max() <= 115


def _result(masks: np.ndarray) -> SegmentationResult:
    n, h, w = masks.shape
    image = np.zeros((h, w, 3), np.uint8)
    return SegmentationResult(
        image, masks, np.linspace(0.9, 0.5, n), np.ones(n, int), None, file_name="a.jpg"
    )


def _read_yolo(text: str, size: tuple[int, int]) -> list[tuple[int, np.ndarray]]:
    """(class, HxW mask) per label line, the polygon scaled back and filled."""
    h, w = size
    out = []
    for line in text.splitlines():
        cls, *xy = line.split()
        poly = np.round(np.asarray(xy, float).reshape(-1, 2) * [w, h])
        assert ((poly >= 0) & (poly <= [w, h])).all()
        out.append((int(cls), fill_polygons([poly], size)))
    return out


def test_result_exports_polygons_and_yolo(tmp_path):
    mask = _nested()
    masks = np.stack([mask, np.zeros_like(mask), _island_and_friends(mask)])
    result = _result(masks)
    coco = result.to_coco(segmentation="polygon", tolerance=0)
    # An empty mask has no polygon and no annotation (an empty list breaks pycocotools).
    assert [a["id"] for a in coco["annotations"]] == [1, 3]
    for ann, m in zip(coco["annotations"], masks[[0, 2]]):
        assert (_coco_fill(ann["segmentation"], m.shape) == m).all()
        assert ann["area"] == m.sum()
    assert result.to_coco()["annotations"][0]["segmentation"] == rle.encode(mask)  # RLE stays the default
    with pytest.raises(ValueError, match="'rle' or 'polygon'"):
        result.to_coco(segmentation="polygons")
    saved = json.loads(result.save_json(tmp_path / "p.json", segmentation="polygon").read_text())
    assert len(saved["annotations"][0]["segmentation"]) == 4  # tolerance 1: still one polygon per part

    labels = _read_yolo(result.save_yolo(tmp_path / "a.txt", class_id=3, tolerance=0).read_text(), mask.shape)
    assert [cls for cls, _ in labels] == [3, 3]  # one line per non-empty mask, all its parts in it
    assert (labels[0][1] == mask).all() and (labels[1][1] == masks[2]).all()
    assert result.polygons(0, tolerance=0)[0].dtype == np.int32


def test_result_exports_svg_paths(tmp_path):
    """to_svg / save_svg: the image's size, one even-odd path per non-empty mask in the
    overlay's colours, larger masks first; at tolerance 0 each path fills back to its mask."""
    import re
    import xml.etree.ElementTree as ET

    from mobilesam.visualize import palette

    mask = _nested()
    ring = mask & ~_island_and_friends(mask)
    masks = np.stack([_island_and_friends(mask), np.zeros_like(mask), ring, mask])
    result = _result(masks)
    svg = ET.parse(result.save_svg(tmp_path / "m.svg", tolerance=0)).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert (svg.get("width"), svg.get("height"), svg.get("viewBox")) == ("50", "40", "0 0 50 40")
    paths = list(svg)
    assert [p.get("id") for p in paths] == ["mask-3", "mask-2", "mask-0"]  # largest first, empty left out
    for path in paths:
        i = int(path.get("id")[5:])
        assert path.get("fill-rule") == "evenodd"
        assert path.get("fill") == "rgb({},{},{})".format(*palette(4)[i].tolist())
        polygons = [
            np.array(re.findall(r"(-?\d+) (-?\d+)", part), dtype=float)
            for part in path.get("d").split("Z")
            if part.strip()
        ]
        assert (fill_polygons(polygons, mask.shape) == masks[i]).all(), i
    assert [p.get("id") for p in ET.fromstring(result.to_svg(indices=[-1, 2]))] == ["mask-3", "mask-2"]
    yy, xx = np.mgrid[:40, :50]
    disc = _result(((yy - 20) ** 2 + (xx - 25) ** 2 < 15**2)[None])
    exact, simple = (ET.fromstring(disc.to_svg(tolerance=t))[0].get("d") for t in (0, 1))
    assert simple.count("L") * 2 < exact.count("L")  # simplified by up to 1 px (the default)
    with pytest.raises(IndexError, match="out of range"):
        result.to_svg(indices=4)


def test_label_map_formats(tmp_path):
    """PNG by default, TIFF when asked, 16-bit from 256 masks; lossy formats and more masks
    than 16 bits number refused."""
    from PIL import Image

    from mobilesam.errors import OutputError

    masks = np.zeros((300, 20, 30), dtype=bool)
    for i in range(300):
        masks[i].flat[i] = True  # mask i: pixel i alone
    for n, suffix, fmt in [(3, ".png", "PNG"), (3, ".TIF", "TIFF"), (300, ".tiff", "TIFF"), (300, "", "PNG")]:
        result = _result(masks[:n])
        with Image.open(result.save_label_map(tmp_path / f"l{n}{suffix}")) as img:
            assert img.format == fmt
            assert np.array_equal(np.asarray(img), result.label_map()), (n, suffix)
    with pytest.raises(OutputError, match=r"\.webp cannot hold exact labels; use \.png or \.tif"):
        _result(masks[:3]).save_label_map(tmp_path / "l.webp")
    assert not list(tmp_path.glob("l.webp*"))
    # Past 65535 masks the numbers would wrap round in 16 bits (65536 -> 0): refused.
    many = _result(np.ones((65536, 1, 1), dtype=bool))
    with pytest.raises(OutputError, match="65536 masks: a label map numbers at most 65535"):
        many.save_label_map(tmp_path / "many.png")
    assert not list(tmp_path.glob("many*"))
    assert _result(np.ones((65535, 1, 1), dtype=bool)).label_map().tolist() == [[65535]]


def _coco_file(tmp_path, extra_categories=False):
    """A folder job's annotations.json: two masks on cam1/a.jpg, nothing on b.png."""
    mask = _nested()
    coco = _result(np.stack([mask, _island_and_friends(mask)])).to_coco(image_id=7)
    coco["images"][0]["file_name"] = "cam1/a.jpg"
    coco["images"].append({"id": 8, "width": 50, "height": 40, "file_name": "b.png"})
    if extra_categories:  # as the UI exports: named labels
        coco["categories"] = [{"id": 2, "name": "car"}, {"id": 1, "name": "tree"}]
        coco["annotations"][1]["category_id"] = 2
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(coco))
    return path, mask


def test_convert_cli_writes_yolo_labels_and_coco_polygons(tmp_path, capsys):
    src, mask = _coco_file(tmp_path, extra_categories=True)
    assert (
        main(["convert", str(src), "--to", "yolo", "--out", str(tmp_path / "yolo"), "--tolerance", "0"]) == 0
    )
    assert "2 masks of 2 images, 3 files" in capsys.readouterr().out
    yolo = tmp_path / "yolo"
    assert (yolo / "classes.txt").read_text() == "tree\ncar\n"  # class i: the i-th category by id
    assert (yolo / "labels" / "b.txt").read_text() == ""  # an image with nothing in it has an empty file
    labels = _read_yolo((yolo / "labels" / "cam1" / "a.txt").read_text(), mask.shape)
    assert [cls for cls, _ in labels] == [0, 1]
    assert (labels[0][1] == mask).all() and (labels[1][1] == _island_and_friends(mask)).all()

    out = tmp_path / "poly.json"
    assert main(["convert", str(src), "--to", "coco-polygon", "--out", str(out), "--tolerance", "0"]) == 0
    converted, original = json.loads(out.read_text()), json.loads(src.read_text())
    for new, old in zip(converted["annotations"], original["annotations"]):
        assert (_coco_fill(new["segmentation"], (40, 50)) == rle.decode(old["segmentation"])).all()
        assert {k: v for k, v in new.items() if k != "segmentation"} == {
            k: v for k, v in old.items() if k != "segmentation"
        }
    assert converted["images"] == original["images"]
    # Polygons in, polygons out; and into YOLO as they are.
    again = tmp_path / "again.json"
    convert(out, "coco-polygon", again)
    assert json.loads(again.read_text())["annotations"] == converted["annotations"]
    convert(out, "yolo", tmp_path / "yolo2", tolerance=0)
    a_txt = Path("labels", "cam1", "a.txt")
    assert (tmp_path / "yolo2" / a_txt).read_text() == (yolo / a_txt).read_text()
    # A polygon reaching past its 50x40 image (as annotators' often do, by a little) stays
    # on it: Ultralytics drops every label of an image with a coordinate outside 0-1.
    converted["annotations"][0]["segmentation"] = [[-3, -2, 60, 20, 25, 45.5]]
    out.write_text(json.dumps(converted))
    convert(out, "yolo", tmp_path / "yolo3")
    assert (tmp_path / "yolo3" / a_txt).read_text().splitlines()[0] == "0 0 0 1 0.5 0.5 1"


def test_convert_refuses_bad_input_and_writes_nothing(tmp_path, capsys):
    src, _ = _coco_file(tmp_path)
    coco = json.loads(src.read_text())
    out = tmp_path / "out"

    def refused(data, match, to="yolo", tolerance=1.0):
        path = tmp_path / "in.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        with pytest.raises(ConvertError, match=match):
            convert(path, to, out, tolerance)
        assert not out.exists() or not any(out.rglob("*.txt"))

    refused("{not json", "not JSON")
    refused([1, 2], "not COCO JSON")
    refused(
        {**coco, "annotations": [{**coco["annotations"][0], "image_id": 99}]}, "annotation 1: its image_id 99"
    )
    bad_rle = {**coco["annotations"][1], "segmentation": {"size": [40, 50], "counts": "!!"}}
    refused({**coco, "annotations": [coco["annotations"][0], bad_rle]}, "annotation 2")
    small = {**coco["annotations"][0], "segmentation": rle.encode(np.ones((4, 5), bool))}
    refused({**coco, "annotations": [small]}, "RLE is 4x5, its image 40x50")
    refused({**coco, "annotations": [{**small, "segmentation": "x"}]}, "neither RLE nor a list of polygons")
    images = [{**coco["images"][0], "file_name": "../../etc/a.jpg"}]
    refused({**coco, "images": images}, "would reach outside the folder")
    images = [coco["images"][1], {"id": 7, "width": 50, "height": 40, "file_name": "b.jpg"}]
    refused({**coco, "images": images}, "would share the label file b.txt")
    refused({**coco, "categories": [{"id": 5, "name": "x"}]}, "category 1 is not in 'categories'")
    for bad in ("x", None, float("nan")):  # were written into YOLO and LabelMe files as they were
        polygon = {**coco["annotations"][0], "segmentation": [[1, 1, 5, 1, 5, bad]]}
        for to in ("yolo", "labelme", "coco-polygon"):
            refused({**coco, "annotations": [polygon]}, "annotation 1: its polygons hold a coordinate", to=to)
            assert not out.is_file() and not (out.is_dir() and any(out.iterdir())), to
            if out.is_dir():
                out.rmdir()  # made empty, before the input was read
    refused(coco, "tolerance must be 0 or more", tolerance=-1)
    refused(coco, "tolerance must be 0 or more", tolerance=float("nan"))
    refused(coco, "tolerance must be 0 or more", tolerance=float("inf"))
    refused(coco, "unknown format", to="voc")
    assert main(["convert", str(tmp_path / "missing.json"), "--to", "yolo", "--out", str(out)]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err


def test_convert_leaves_out_empty_masks_and_crowds_and_says_so(tmp_path, capsys):
    """A mask with no pixel has no polygon (pycocotools fails on an empty polygon list); a
    crowd region stays RLE in COCO and is no YOLO object (as Ultralytics converts COCO)."""
    full, empty, corner = np.ones((4, 5), bool), np.zeros((4, 5), bool), np.zeros((4, 5), bool)
    corner[0, 0] = True
    coco = _result(np.stack([full, empty, corner])).to_coco()
    coco["annotations"][2]["iscrowd"] = 1
    src = tmp_path / "c.json"
    src.write_text(json.dumps(coco))
    for to, crowd in (("coco-polygon", "kept as RLE"), ("yolo", "left out")):
        assert main(["convert", str(src), "--to", to, "--out", str(tmp_path / to)]) == 0
        line = capsys.readouterr().out
        assert "3 masks of 1 images" in line
        assert f"(1 empty masks left out: no polygon; 1 crowd regions {crowd})" in line
    anns = json.loads((tmp_path / "coco-polygon").read_text())["annotations"]
    assert [a["id"] for a in anns] == [1, 3] and anns[1]["segmentation"] == coco["annotations"][2][
        "segmentation"
    ]
    assert (tmp_path / "yolo" / "labels" / "a.txt").read_text() == "0 1 0 1 1 0 1 0 0\n"


def test_yolo_labels_of_an_image_named_classes_keep_the_class_list(tmp_path):
    """labels/ apart from classes.txt: an image classes.jpg does not overwrite the class names."""
    coco = _result(np.ones((1, 4, 5), bool)).to_coco()
    coco["images"][0]["file_name"] = "classes.jpg"
    coco["categories"] = [{"id": 1, "name": "cup"}]
    (tmp_path / "c.json").write_text(json.dumps(coco))
    convert(tmp_path / "c.json", "yolo", tmp_path / "y")
    assert (tmp_path / "y" / "classes.txt").read_text() == "cup\n"
    assert (tmp_path / "y" / "labels" / "classes.txt").read_text() == "0 1 0 1 1 0 1 0 0\n"


def _centres_inside(poly: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference fill, one pixel centre at a time: a ray to the right crosses the
    outline an odd number of times (an edge counts for the lines in [its top, its bottom),
    and where it passes through the centre, not: a centre on a left edge is inside)."""
    out = np.zeros(size, dtype=bool)
    a, b = poly, np.roll(poly, -1, axis=0)
    for r, c in np.ndindex(*size):
        x, y, odd = c + 0.5, r + 0.5, False
        for (x0, y0), (x1, y1) in zip(a, b):
            if min(y0, y1) <= y < max(y0, y1) and x0 + (y - y0) * (x1 - x0) / (y1 - y0) > x:
                odd = not odd
        out[r, c] = odd
    return out


def test_fill_polygons_of_any_outline():
    """Outlines from elsewhere (float vertices, on pixel-centre lines too, reaching out of
    the image): each pixel centre's ray test, and pycocotools on a vertex where the outline
    passes through a centre line (the fill dropped that row before)."""
    rng = np.random.default_rng(3)
    for k in range(40):
        poly = rng.uniform(-4, 24, (int(rng.integers(3, 9)), 2))
        if k % 2:
            poly = np.round(poly * 2) / 2  # vertices on the centre lines and pixel edges
        assert np.array_equal(fill_polygons([poly], (18, 21)), _centres_inside(poly, (18, 21))), poly
    through = np.array([[2, 2], [12, 5.5], [18, 12], [4, 14], [1, 5.5]])
    filled = fill_polygons([through], (16, 20))
    assert filled[5].sum() == 11 and np.array_equal(filled[5], _coco_fill([through], (16, 20))[5])


def test_convert_to_mask_pngs(tmp_path, capsys):
    """--to masks: one PNG per annotation, FILE/ID.png, 255 inside: RLE masks as they are,
    polygons filled, a crowd region too; an image with nothing gets an empty folder; a
    rerun replaces each image's folder whole; bad input refused before anything is
    written."""
    from PIL import Image

    from mobilesam.errors import OutputError

    src, _ = _coco_file(tmp_path)
    coco = json.loads(src.read_text())
    coco["annotations"][1]["iscrowd"] = 1
    polygons = [{**a, "id": a["id"] + 10, "iscrowd": 0} for a in convert_polygons(coco)]
    coco["annotations"] += polygons
    src.write_text(json.dumps(coco))
    out = tmp_path / "masks"
    (out / "cam1" / "a.jpg").mkdir(parents=True)
    (out / "cam1" / "a.jpg" / "99.png").write_bytes(b"an earlier run's")
    assert main(["convert", str(src), "--to", "masks", "--out", str(out)]) == 0
    assert "masks: 4 masks of 2 images, 4 files" in capsys.readouterr().out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "b.png",
        "cam1",
        "cam1/a.jpg",
        "cam1/a.jpg/1.png",
        "cam1/a.jpg/11.png",
        "cam1/a.jpg/12.png",
        "cam1/a.jpg/2.png",
    ]
    pngs = {p.stem: np.asarray(Image.open(p)) for p in (out / "cam1" / "a.jpg").iterdir()}
    assert all(v.dtype == np.uint8 and set(np.unique(v)) <= {0, 255} for v in pngs.values())
    for ann in coco["annotations"][:2]:
        expected = rle.decode(ann["segmentation"])
        assert np.array_equal(pngs[str(ann["id"])] == 255, expected)
        assert np.array_equal(pngs[str(ann["id"] + 10)] == 255, expected)  # traced exactly, filled back

    def refused(data, match):
        path = tmp_path / "in.json"
        path.write_text(json.dumps(data))
        with pytest.raises(ConvertError, match=match):
            convert(path, "masks", tmp_path / "fresh")
        assert not (tmp_path / "fresh").exists()

    anns = coco["annotations"]
    refused({**coco, "annotations": [anns[0], {**anns[2], "id": 1}]}, "annotation 1: a second annotation")
    refused({**coco, "annotations": [{**anns[0], "id": "../x"}]}, "its id cannot name a file")
    small = {**anns[0], "id": 5, "segmentation": rle.encode(np.ones((4, 5), bool))}
    refused({**coco, "annotations": [anns[0], small]}, "annotation 5: its RLE is no 40x50 mask")
    short = {**anns[0], "segmentation": {"size": [40, 50], "counts": [5, 10]}}
    refused({**coco, "annotations": [short]}, "RLE is no 40x50 mask")
    negative = {**anns[2], "segmentation": {"size": [40, 50], "counts": [-5, 2005]}}  # sums right
    refused({**coco, "annotations": [anns[0], negative]}, "annotation 11: its RLE is no 40x50 mask")
    refused({**coco, "annotations": [{**anns[0], "segmentation": []}]}, "boxes-to-masks")
    for bad in ("x", None, float("nan")):  # before any image is written, not half-way
        polygon = {**anns[2], "segmentation": [[1, 1, 5, 1, 5, bad]]}
        refused({**coco, "annotations": [anns[0], polygon]}, "annotation 11: its polygons")
    images = [coco["images"][0], {**coco["images"][1], "file_name": "cam1/a.jpg"}]
    refused({**coco, "images": images}, "a second image")
    (tmp_path / "fresh").write_text("a file")
    with pytest.raises(OutputError, match=r"output folder .* is a file"):
        convert(src, "masks", tmp_path / "fresh")
    photos = tmp_path / "photos"
    (photos / "cam1").mkdir(parents=True)
    (photos / "b.png").write_bytes(b"the image")
    with pytest.raises(ConvertError, match=r"b\.png is a file, where the masks of its image go"):
        convert(src, "masks", photos)
    assert (photos / "b.png").read_bytes() == b"the image" and not (photos / "cam1" / "a.jpg").exists()
    assert main(["convert", str(src), "--to", "masks", "--out", str(out), "--tolerance", "1"]) == 2


def convert_polygons(coco: dict) -> list[dict]:
    from mobilesam.convert import to_coco_polygons

    return to_coco_polygons(coco, tolerance=0)["annotations"]


def test_convert_to_label_maps(tmp_path, capsys):
    """--to label-maps: one PNG per image (its file_name as .png), pixel = the class (i:
    the i-th category by id, 0 background), smaller masks over larger whatever their
    order, polygons as RLE; classes.txt names the values; 16-bit past 255 categories; a
    label map there already is refused before anything is written."""
    from PIL import Image

    src, mask = _coco_file(tmp_path, extra_categories=True)  # tree (id 1): mask, car (id 2): its island
    coco = json.loads(src.read_text())
    coco["annotations"].reverse()  # the small one first: painted last all the same
    expected = np.where(_island_and_friends(mask), 2, np.where(mask, 1, 0)).astype(np.uint8)
    for name, data in (("rle", coco), ("poly", {**coco, "annotations": convert_polygons(coco)})):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        out = tmp_path / name
        assert main(["convert", str(tmp_path / f"{name}.json"), "--to", "label-maps", "--out", str(out)]) == 0
        assert "label-maps: 2 masks of 2 images, 3 files" in capsys.readouterr().out
        with Image.open(out / "cam1" / "a.png") as img:
            assert img.mode == "L" and np.array_equal(np.asarray(img), expected)
        assert not np.asarray(Image.open(out / "b.png")).any() and Image.open(out / "b.png").size == (50, 40)
        assert (out / "classes.txt").read_text() == "background\ntree\ncar\n"

    many = {**coco, "categories": [{"id": i, "name": f"c{i}"} for i in range(1, 301)]}
    many["annotations"] = [{**coco["annotations"][0], "category_id": 300}]
    (tmp_path / "many.json").write_text(json.dumps(many))
    convert(tmp_path / "many.json", "label-maps", tmp_path / "many")
    assert _png_bits(tmp_path / "many" / "cam1" / "a.png") == 16
    with Image.open(tmp_path / "many" / "cam1" / "a.png") as img:
        assert set(np.unique(np.asarray(img))) == {0, 300}

    before = (tmp_path / "rle" / "cam1" / "a.png").read_bytes()
    (tmp_path / "rle" / "classes.txt").unlink()
    with pytest.raises(ConvertError, match=r"a\.png exists .*not overwritten"):
        convert(tmp_path / "rle.json", "label-maps", tmp_path / "rle")
    assert (tmp_path / "rle" / "cam1" / "a.png").read_bytes() == before
    assert not (tmp_path / "rle" / "classes.txt").exists()
    # --overwrite replaces label maps (the annotations changed: one class fewer), but only
    # one-channel PNGs: a photo where a map would go is refused and nothing is written.
    fewer = {**coco, "annotations": [a for a in coco["annotations"] if a["category_id"] == 1]}
    (tmp_path / "fewer.json").write_text(json.dumps(fewer))
    rle_out = str(tmp_path / "rle")
    assert main(["convert", str(tmp_path / "fewer.json"), "--to", "label-maps", "--out", rle_out]) == 2
    assert "pass --overwrite to replace them" in capsys.readouterr().err
    assert (
        main(["convert", str(tmp_path / "fewer.json"), "--to", "label-maps", "--out", rle_out, "--overwrite"])
        == 0
    )
    with Image.open(tmp_path / "rle" / "cam1" / "a.png") as img:
        assert np.array_equal(np.asarray(img), np.where(mask, 1, 0))
    assert (tmp_path / "rle" / "classes.txt").read_text() == "background\ntree\ncar\n"
    replaced = (tmp_path / "rle" / "cam1" / "a.png").read_bytes()
    Image.new("RGB", (50, 40)).save(tmp_path / "rle" / "b.png")
    with pytest.raises(
        ConvertError, match=r"b\.png is a PNG image in mode RGB, not a label map: --overwrite replaces"
    ):
        convert(tmp_path / "rle.json", "label-maps", tmp_path / "rle", overwrite=True)
    assert (tmp_path / "rle" / "cam1" / "a.png").read_bytes() == replaced
    assert main(["convert", str(src), "--to", "yolo", "--out", str(tmp_path / "y"), "--overwrite"]) == 2
    assert "--overwrite replaces label maps" in capsys.readouterr().err
    unknown = {**coco, "annotations": [{**coco["annotations"][0], "category_id": 9}]}
    (tmp_path / "unknown.json").write_text(json.dumps(unknown))
    with pytest.raises(ConvertError, match="category 9 is not in 'categories'"):
        convert(tmp_path / "unknown.json", "label-maps", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_convert_to_instance_maps(tmp_path, capsys, monkeypatch):
    """--to instance-maps: one PNG per image, pixel = the image's k-th annotation (smaller
    over larger), equal to the one-image `label_map` / `save_label_map` of the result the
    COCO file came from (8-bit, and 16-bit from 256 masks); instances.json names each
    value; categories are not needed; an existing map is refused before anything is written."""
    from PIL import Image

    rng = np.random.default_rng(4)
    masks = np.zeros((300, 40, 50), dtype=bool)
    masks[0] = _nested()
    masks[1] = _island_and_friends(masks[0])
    masks[2, 10:30, 20:45] = True  # overlaps the ring: smaller, so on top
    masks[3, 5:35, 15:48] = True  # larger than both, later in the file: below them
    for m in masks[4:]:  # specks, some on top of others
        y, x = rng.integers(0, 38, 2)
        m[y : y + 2, x : x + 3] = True
    for n in (3, 300):
        result = _result(masks[:n])
        coco = result.to_coco(image_id=5)
        coco["annotations"][1]["iscrowd"] = 1
        coco["images"].append({"id": 6, "width": 7, "height": 3, "file_name": "sub/empty.jpg"})
        del coco["categories"]
        (tmp_path / f"{n}.json").write_text(json.dumps(coco))
        out = tmp_path / f"maps{n}"
        assert main(["convert", str(tmp_path / f"{n}.json"), "--to", "instance-maps", "--out", str(out)]) == 0
        said = capsys.readouterr().out
        assert f"instance-maps: {n} masks of 2 images, 3 files" in said and "1 crowd regions painted" in said
        result.save_label_map(tmp_path / f"one{n}.png")
        assert _png_bits(out / "a.png") == _png_bits(tmp_path / f"one{n}.png") == (8 if n < 256 else 16)
        with Image.open(out / "a.png") as img, Image.open(tmp_path / f"one{n}.png") as one:
            assert np.array_equal(np.asarray(img), result.label_map())
            assert np.array_equal(np.asarray(img), np.asarray(one))
        with Image.open(out / "sub" / "empty.png") as img:
            assert img.size == (7, 3) and not np.asarray(img).any()
        index = json.loads((out / "instances.json").read_text())
        assert list(index) == ["a.png", "sub/empty.png"] and index["sub/empty.png"] == []
        ids = [a["id"] for a in coco["annotations"]]
        assert [(v["value"], v["id"]) for v in index["a.png"]] == list(enumerate(ids, start=1))
        assert [v["iscrowd"] for v in index["a.png"][:3]] == [0, 1, 0]
        assert {v["category_id"] for v in index["a.png"]} == {1}

    before = (out / "a.png").read_bytes()
    (out / "instances.json").unlink()
    with pytest.raises(ConvertError, match=r"a\.png exists .*not overwritten"):
        convert(tmp_path / "300.json", "instance-maps", out)
    assert (out / "a.png").read_bytes() == before and not (out / "instances.json").exists()
    assert (
        main(["convert", str(tmp_path / "3.json"), "--to", "instance-maps", "--out", "x", "--tolerance", "1"])
        == 2
    )
    assert "--to instance-maps writes the masks as they are" in capsys.readouterr().err
    monkeypatch.setattr("mobilesam.convert.MOST_LABELS", 299)  # 65535 (16-bit) really
    with pytest.raises(ConvertError, match=r"300 annotations, more than a 16-bit instance map holds \(299\)"):
        convert(tmp_path / "300.json", "instance-maps", tmp_path / "crowded")
    assert not (tmp_path / "crowded").exists()
