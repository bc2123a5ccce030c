"""`mobilesam ui`'s API with a synthetic checkpoint: masks equal to SamPredictor's, saving,
export (checked with pycocotools), the embedding cache, and bad input refused."""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile

import numpy as np
import pytest
from conftest import IMAGES, SMALL
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from mobilesam import MobileSAMError, SamPredictor
from mobilesam.ui.model import ModelService
from mobilesam.ui.server import create_app
from mobilesam.ui.workspace import NotFound, Workspace
from mobilesam.utils import lsrle, rle


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    shutil.copy(IMAGES / "truck.jpg", root / "a_truck.jpg")
    Image.open(IMAGES / "picture4.jpg").convert("RGB").resize((400, 300)).save(root / "b_small.png")
    (root / "notes.txt").write_text("not an image")
    outside = tmp_path_factory.mktemp("outside") / "secret.jpg"
    shutil.copy(IMAGES / "truck.jpg", outside)
    (root / "escape.jpg").symlink_to(outside)
    return root


@pytest.fixture(scope="module")
def service(small_sam_vit_t):
    s = ModelService(SamPredictor(small_sam_vit_t), cache_images=2)
    yield s
    s.close()


@pytest.fixture()
def client(folder, service, tmp_path):
    return TestClient(create_app(Workspace(folder, tmp_path / "out"), service, "vit_t"))


def test_lists_only_images_inside_the_folder(client):
    assert [i["name"] for i in client.get("/api/images").json()] == ["a_truck.jpg", "b_small.png"]
    assert client.get("/api/status").json()["mode"] == "folder"


@pytest.mark.parametrize(
    "name", ["escape.jpg", "notes.txt", "..%2Foutside%2Fsecret.jpg", "%2Fetc%2Fpasswd", "..", "missing.jpg"]
)
def test_no_file_outside_the_listing(client, name):
    for what in ("file", "thumb", "annotations"):
        r = client.get(f"/api/images/{name}/{what}")
        assert r.status_code == 404, (name, what, r.status_code)


def test_requests_find_their_image_without_listing_the_folder(tmp_path):
    """A request names one image: it is taken from the last listing while its file is still
    there (a folder of thousands lists slowly), and a file added, removed or turned into a
    link out of the folder since is seen at once."""
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(IMAGES / "truck.jpg", root / name)
    w = Workspace(root, tmp_path / "out")
    listings = []
    listed = w.images

    def counted():
        listings.append(1)
        return listed()

    w.images = counted
    assert w.image("b.jpg").path == root / "b.jpg" and listings == [1]  # the first request lists
    assert w.image("a.jpg").name == "a.jpg" and w.image("b.jpg").name == "b.jpg" and listings == [1]
    assert w.next_image("a.jpg").name == "b.jpg" and w.next_image("c.jpg") is None
    shutil.copy(IMAGES / "truck.jpg", root / "d.jpg")
    assert w.image("d.jpg").name == "d.jpg" and listings == [1, 1]  # added since: listed again
    (root / "a.jpg").unlink()
    with pytest.raises(NotFound):
        w.image("a.jpg")
    (root / "d.jpg").unlink()
    (root / "d.jpg").mkdir()  # a folder has the name now
    with pytest.raises(NotFound):
        w.image("d.jpg")
    outside = tmp_path / "secret.jpg"
    shutil.copy(IMAGES / "truck.jpg", outside)
    (root / "c.jpg").unlink()
    (root / "c.jpg").symlink_to(outside)
    with pytest.raises(NotFound):
        w.image("c.jpg")
    for name in ("../secret.jpg", "", ".", "out"):
        with pytest.raises(NotFound):
            w.image(name)


def test_image_states_are_read_once_per_change_of_their_file(tmp_path):
    """The page lists every image's state on each load: a saved file is parsed again only
    when it changed (a save here, another process writing it)."""
    root = tmp_path / "photos"
    root.mkdir()
    shutil.copy(IMAGES / "truck.jpg", root / "a.jpg")
    w = Workspace(root, tmp_path / "out")
    parsed = []
    saved = w.saved
    w.saved = lambda name: parsed.append(name) or saved(name)
    assert w.state("a.jpg") == "" and parsed == []  # no file: nothing to parse
    obj = {"label": "x", "rle": rle.encode(np.ones((1200, 1800), bool))}
    w.save("a.jpg", 0, [obj])
    parsed.clear()
    assert [w.state("a.jpg") for _ in range(3)] == ["done"] * 3 and len(parsed) == 1
    w.save("a.jpg", 1, [])
    assert w.state("a.jpg") == ""
    data = json.loads((tmp_path / "out" / "a.jpg.json").read_text())  # a script marks it for review
    (tmp_path / "out" / "a.jpg.json").write_text(json.dumps({**data, "objects": [obj], "reviewed": False}))
    assert w.state("a.jpg") == "review"


def test_open_encodes_once_and_prefetches_the_next(client, service):
    first = client.post("/api/images/a_truck.jpg/open").json()
    assert (first["width"], first["height"]) == (1800, 1200)
    again = client.post("/api/images/a_truck.jpg/open").json()
    assert again["cached"] and again["encode_ms"] == 0.0
    for _ in range(100):  # the next image is encoded in the background
        if "b_small.png" in service.cache_info()["images"]:
            break
        time.sleep(0.1)
    info = service.cache_info()
    assert (
        set(info["images"]) == {"a_truck.jpg", "b_small.png"}
        and info["bytes"] == 2 * 256 * (SMALL // 16) ** 2 * 4
    )


def test_predict_equals_the_predictor(client, small_sam_vit_t, folder):
    rgb = np.asarray(Image.open(folder / "a_truck.jpg").convert("RGB"))
    predictor = SamPredictor(small_sam_vit_t)
    predictor.set_image(rgb)
    cases = [
        {"points": [[500, 375, 1]]},
        {"points": [[500, 375, 1], [900, 600, 0]], "box": [300, 200, 1100, 800]},
        {"box": [425, 600, 700, 875], "multimask": False},
    ]
    for body in cases:
        pts = np.array(body.get("points", []), dtype=float)
        masks, scores, _ = predictor.predict(
            pts[:, :2] if len(pts) else None,
            pts[:, 2] if len(pts) else None,
            np.array(body["box"]) if "box" in body else None,
            multimask_output=body.get("multimask", True),
        )
        out = client.post("/api/images/a_truck.jpg/predict", json=body).json()
        assert [c["score"] for c in out["candidates"]] == pytest.approx(scores.tolist(), abs=1e-6)
        assert (
            out["best"] == int(np.argmax(scores))
            and out["mask"]["mask_id"] == out["candidates"][out["best"]]["mask_id"]
        )
        for i, cand in enumerate(out["candidates"]):  # each candidate's mask, asked for by mask_id
            got = client.post(
                "/api/images/a_truck.jpg/predict", json={**body, "mask_id": cand["mask_id"]}
            ).json()
            assert np.array_equal(rle.decode(got["mask"]["rle"]), masks[i])
            assert got["mask"]["area"] == int(masks[i].sum())
    bad = client.post("/api/images/a_truck.jpg/predict", json={**cases[2], "mask_id": 2})
    assert bad.status_code == 422  # the single-mask output has only mask 0


def test_hover_previews_are_masks_of_at_most_2_mp(client, small_sam_vit_t, folder):
    """`preview`: the mask upsampled straight to the image scaled down to 2 MP (the page
    draws the hover preview scaled up); a small image's preview is its mask."""
    import torch

    from mobilesam.ui.server import preview_size

    rgb = np.asarray(Image.open(folder / "a_truck.jpg").convert("RGB"))
    predictor = SamPredictor(small_sam_vit_t)
    predictor.set_image(rgb)
    _, scores, low_res = predictor.predict(np.array([[500, 375]]), np.array([1]))
    size = preview_size((1200, 1800))
    assert size == (1154, 1732) and size[0] * size[1] <= 2_000_000
    with torch.inference_mode():
        logits = small_sam_vit_t.postprocess_masks(
            torch.from_numpy(low_res)[None], predictor.input_size, size
        )
    want = (logits[0, int(np.argmax(scores))] > 0).numpy()
    out = client.post(
        "/api/images/a_truck.jpg/predict", json={"points": [[500, 375, 1]], "preview": True}
    ).json()
    assert np.array_equal(rle.decode(out["mask"]["rle"]), want)
    assert [c["score"] for c in out["candidates"]] == pytest.approx(scores.tolist(), abs=1e-6)
    body = {"points": [[200, 150, 1]]}
    small = [
        client.post("/api/images/b_small.png/predict", json={**body, "preview": p}).json() for p in (1, 0)
    ]
    assert small[0]["mask"] == small[1]["mask"]  # 400x300: the preview is the mask
    stroke = {"mode": "add", "radius": 3, "points": [[5, 5]]}
    refused = client.post(
        "/api/images/b_small.png/predict", json={**body, "preview": True, "strokes": [stroke]}
    )
    assert refused.status_code == 422 and "preview" in refused.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"points": [[10, 10, 2]]},
        {"points": [[10, 10]]},
        {"points": [[5000, 10, 1]]},
        {"box": [100, 100, 50, 200]},
        {"box": [1, 2, 3]},
        {"points": "here"},
    ],
)
def test_bad_prompts_are_4xx(client, body):
    r = client.post("/api/images/a_truck.jpg/predict", json=body)
    assert 400 <= r.status_code < 500 and "detail" in r.json()
    assert client.get("/api/images").status_code == 200  # and the server goes on


def _object(client, label, body):
    cand = client.post("/api/images/a_truck.jpg/predict", json=body).json()["mask"]
    return {"label": label, "rle": cand["rle"], "score": cand["score"], "mask_id": cand["mask_id"], **body}


def test_save_load_export_roundtrip(client, folder, tmp_path):
    pycocotools = pytest.importorskip("pycocotools.mask")
    objects = [
        _object(client, "wheel", {"box": [425, 600, 700, 875]}),
        _object(client, "car", {"points": [[500, 375, 1]]}),
    ]
    assert client.get("/api/images/a_truck.jpg/annotations").json()["revision"] == 0
    r = client.put("/api/images/a_truck.jpg/annotations", json={"revision": 0, "objects": objects})
    assert r.json() == {"revision": 1}
    # A second tab still at revision 0 is refused, not silently overwriting.
    stale = client.put("/api/images/a_truck.jpg/annotations", json={"revision": 0, "objects": []})
    assert stale.status_code == 409 and stale.json()["revision"] == 1
    saved = client.get("/api/images/a_truck.jpg/annotations").json()
    assert [o["label"] for o in saved["objects"]] == ["wheel", "car"]
    assert saved["objects"][0]["rle"] == objects[0]["rle"]
    assert json.loads((tmp_path / "out" / "a_truck.jpg.json").read_text())["revision"] == 1
    assert [i["done"] for i in client.get("/api/images").json()] == [True, False]

    coco = client.get("/api/export/coco").json()
    assert json.loads((tmp_path / "out" / "annotations.json").read_text()) == coco
    assert [c["name"] for c in coco["categories"]] == ["car", "wheel"]
    assert [i["file_name"] for i in coco["images"]] == ["a_truck.jpg", "b_small.png"]
    for ann, obj in zip(coco["annotations"], objects):
        seg = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
        mask = pycocotools.decode(seg).astype(bool)
        assert np.array_equal(mask, rle.decode(obj["rle"]))
        assert ann["area"] == int(pycocotools.area(seg))
        assert ann["bbox"] == [int(v) for v in pycocotools.toBbox(seg)]
        assert coco["categories"][ann["category_id"] - 1]["name"] == obj["label"]

    with zipfile.ZipFile(io.BytesIO(client.get("/api/export/yolo.zip").content)) as z:
        assert sorted(z.namelist()) == ["classes.txt", "labels/a_truck.txt", "labels/b_small.txt"]
        assert z.read("classes.txt") == b"car\nwheel\n" and z.read("labels/b_small.txt") == b""
        lines = z.read("labels/a_truck.txt").decode().splitlines()
    assert [line.split()[0] for line in lines] == ["1", "0"]  # wheel, car: classes by name
    for line, obj in zip(lines, objects):
        xy = np.asarray(line.split()[1:], float).reshape(-1, 2) * [1800, 1200]
        mask = rle.decode(obj["rle"])
        ys, xs = np.nonzero(mask)  # the polygon spans the mask's pixels (to a pixel: simplified)
        assert np.allclose(xy.min(0), [xs.min(), ys.min()], atol=1) and np.allclose(
            xy.max(0), [xs.max() + 1, ys.max() + 1], atol=1
        )

    with zipfile.ZipFile(io.BytesIO(client.get("/api/export/labelme.zip").content)) as z:
        assert sorted(z.namelist()) == ["a_truck.json", "b_small.json"]
        labelme = json.loads(z.read("a_truck.json"))
        assert json.loads(z.read("b_small.json"))["shapes"] == []
    assert labelme["imagePath"] == "a_truck.jpg" and (labelme["imageHeight"], labelme["imageWidth"]) == (
        1200,
        1800,
    )
    assert {s["label"] for s in labelme["shapes"]} == {"car", "wheel"}
    assert all(s["shape_type"] == "polygon" for s in labelme["shapes"])

    # Label maps: class values (car 1, wheel 2), the smaller object over the larger.
    with zipfile.ZipFile(io.BytesIO(client.get("/api/export/label-maps.zip").content)) as z:
        assert sorted(z.namelist()) == ["a_truck.png", "b_small.png", "classes.txt"]
        assert z.read("classes.txt") == b"background\ncar\nwheel\n"
        semantic = np.asarray(Image.open(io.BytesIO(z.read("a_truck.png"))))
        assert not np.asarray(Image.open(io.BytesIO(z.read("b_small.png")))).any()
    expected = np.zeros((1200, 1800), np.uint8)
    for obj in sorted(objects, key=lambda o: -rle.decode(o["rle"]).sum()):
        expected[rle.decode(obj["rle"])] = {"car": 1, "wheel": 2}[obj["label"]]
    assert expected.any() and np.array_equal(semantic, expected)
    # Instance maps: object k of the image is value k (the COCO export's order), smaller on top.
    with zipfile.ZipFile(io.BytesIO(client.get("/api/export/instance-maps.zip").content)) as z:
        assert sorted(z.namelist()) == ["a_truck.png", "b_small.png", "instances.json"]
        instances = np.asarray(Image.open(io.BytesIO(z.read("a_truck.png"))))
        index = json.loads(z.read("instances.json"))
    truck_id = next(i["id"] for i in coco["images"] if i["file_name"] == "a_truck.jpg")
    exported = [a for a in coco["annotations"] if a["image_id"] == truck_id]
    assert [v["id"] for v in index["a_truck.png"]] == [a["id"] for a in exported] and index[
        "b_small.png"
    ] == []
    expected = np.zeros((1200, 1800), np.uint8)
    for k in sorted(range(len(exported)), key=lambda k: -exported[k]["area"]):
        expected[rle.decode(exported[k]["segmentation"])] = k + 1
    assert len(exported) == len(objects) and np.array_equal(instances, expected)
    # Label Studio: every image a task, the objects its predictions; reviewed only: annotations.
    for reviewed, kind, files in ((False, "predictions", 2), (True, "annotations", 1)):
        url = f"/api/export/label-studio.zip{'?reviewed=true' if reviewed else ''}"
        with zipfile.ZipFile(io.BytesIO(client.get(url).content)) as z:
            assert sorted(z.namelist()) == ["tasks.json", "tasks.label_config.xml"]
            tasks = json.loads(z.read("tasks.json"))
            assert b'<Label value="car"' in z.read("tasks.label_config.xml")
        assert len(tasks) == files and tasks[0]["data"] == {"image": "/data/local-files/?d=a_truck.jpg"}
        regions = tasks[0][kind][0]["result"]
        assert [r["value"]["brushlabels"] for r in regions] == [["wheel"], ["car"]]
        for region, obj in zip(regions, objects):
            assert np.array_equal(lsrle.decode(region["value"]["rle"], (1200, 1800)), rle.decode(obj["rle"]))

    labels = np.asarray(
        Image.open(io.BytesIO(client.get("/api/images/a_truck.jpg/export/labels.png").content))
    )
    assert labels.shape == (1200, 1800)
    car = rle.decode(objects[1]["rle"])
    assert (labels[car] == 2).all()  # later objects paint over earlier ones
    with zipfile.ZipFile(io.BytesIO(client.get("/api/images/a_truck.jpg/export/masks.zip").content)) as z:
        assert z.namelist() == ["001_wheel.png", "002_car.png"]
        assert np.array_equal(np.asarray(Image.open(z.open("002_car.png"))) > 0, car)


@pytest.mark.parametrize(
    "objects",
    [
        [{"label": "x", "rle": {"size": [1200, 1800], "counts": "not rle ~~~"}}],
        [{"label": "x", "rle": {"size": [10, 10], "counts": "0"}}],
        [{"label": "x", "rle": {"size": [300, 400], "counts": "0`a3"}}],  # another image's size
        [{"label": 5, "rle": {"size": [1200, 1800], "counts": "0"}}],
        ["just a string"],
        # prompts that are not numbers: a string was a 500, a NaN was kept and sent as null
        [{"label": "x", "rle": rle.encode(np.zeros((300, 400), bool)), "box": [1, 2, "x", 4]}],
        [{"label": "x", "rle": rle.encode(np.zeros((300, 400), bool)), "points": [[1, "y", 1]]}],
        [{"label": "x", "rle": rle.encode(np.zeros((300, 400), bool)), "box": [1, 2, float("nan"), 4]}],
        [{"label": "x", "rle": rle.encode(np.zeros((300, 400), bool)), "points": [[1, 2, float("inf")]]}],
    ],
)
def test_malformed_saves_are_refused(client, objects):
    body = json.dumps({"revision": 0, "objects": objects})  # NaN as Python's json writes it
    r = client.put(
        "/api/images/b_small.png/annotations", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert client.get("/api/images/b_small.png/annotations").json()["revision"] == 0


def test_non_finite_numbers_are_a_422_naming_the_field(client):
    """Python's json (and requests) send NaN and Infinity; where a field wants an integer,
    FastAPI's answer held the NaN and could not be written: a 500. Now a 422 as any other."""
    url, json_type = "/api/images/b_small.png", {"content-type": "application/json"}
    for method, path, body, field in (
        ("PUT", "annotations", '{"revision": NaN, "objects": []}', "revision"),
        ("POST", "predict", '{"points": [[5, 5, 1]], "mask_id": Infinity}', "mask_id"),
    ):
        r = client.request(method, f"{url}/{path}", content=body, headers=json_type)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field], r.text
    for body in ('{"points": [[NaN, 5, 1]]}', '{"box": [1, 2, NaN, 4]}'):
        r = client.post(f"{url}/predict", content=body, headers=json_type)
        assert r.status_code == 422 and "inside" in r.json()["detail"], r.text


def test_a_field_the_api_does_not_know_is_a_422_naming_it(client):
    """A misspelt field (`multimask_output` for `multimask`, another version's `mask_input`)
    was ignored: the answer came back as if it had not been sent."""
    url = "/api/images/b_small.png"
    for method, path, body, unknown in (
        ("POST", "predict", {"points": [[5, 5, 1]], "multimask_output": False}, "multimask_output"),
        ("POST", "outline", {"rle": {"size": [300, 400], "counts": "0"}, "tolerence": 0}, "tolerence"),
        ("PUT", "annotations", {"revision": 0, "objects": [], "reviewed": True}, "reviewed"),
    ):
        r = client.request(method, f"{url}/{path}", json=body)
        assert r.status_code == 422, r.text
        assert [(d["type"], d["loc"]) for d in r.json()["detail"]] == [("extra_forbidden", ["body", unknown])]


def test_everything_endpoint(client):
    out = client.post(
        "/api/images/b_small.png/everything",
        json={"points_per_side": 4, "iou_thres": 0.5, "stability_score_thres": 0.5},
    ).json()
    assert out["masks"] and all(m["rle"]["size"] == [300, 400] for m in out["masks"])
    assert client.get("/api/images/b_small.png/everything/progress").json() == {"done": 16, "total": 16}
    bad = client.post("/api/images/b_small.png/everything", json={"points_per_sides": 4})
    assert bad.status_code == 422
    bad = client.post("/api/images/b_small.png/everything", json={"iou_thres": 7})
    assert bad.status_code == 422


def test_everything_masks_cut_out_with_their_soft_edge(client, folder, service, small_sam_vit_t, tmp_path):
    """A mask of segment everything has no prompts; its soft cutout is the matte of the
    run's own logits (as `segment_everything(keep_logits=True)`'s `soft_mask`), kept for
    the latest runs while the image's file is unchanged; an edited mask has none."""
    from mobilesam.highlevel import everything
    from mobilesam.image_io import load_image

    options = {"points_per_side": 4, "iou_thres": 0, "stability_score_thres": 0, "box_nms_thres": 1}
    masks = client.post("/api/images/b_small.png/everything", json=options).json()["masks"]
    image = load_image(folder / "b_small.png")
    reference = everything(SamPredictor(small_sam_vit_t), image, keep_logits=True, **options)
    assert [m["rle"] for m in masks] == [a["segmentation"] for a in reference.to_coco()["annotations"]]
    assert len(masks) > 1

    def alpha(body):
        r = client.post("/api/images/b_small.png/cutout", json={"crop": False, **body})
        assert r.status_code == 200, r.text
        return np.asarray(Image.open(io.BytesIO(r.content)))[..., 3]

    page = {"points": [], "box": None, "multimask": True, "mask_id": 0}  # what the page sends
    for i in range(0, len(masks), 5):  # every fifth: each mask's own edge, in any order
        m = masks[i]
        matte = alpha({"rle": m["rle"], "soft": True, "prompt": page})
        assert np.array_equal(matte, reference.soft_mask(i)), i
        assert ((matte > 0) & (matte < 255)).any() and np.array_equal(matte >= 128, rle.decode(m["rle"]))
    first = rle.decode(masks[0]["rle"])
    assert np.array_equal(alpha({"rle": masks[0]["rle"], "soft": True}), reference.soft_mask(0))  # no prompt
    client.post("/api/images/b_small.png/everything", json={**options, "points_per_side": 3})
    assert np.array_equal(alpha({"rle": masks[0]["rle"], "soft": True}), reference.soft_mask(0))  # still kept
    edited = first.copy()
    edited[tuple(np.argwhere(first)[0])] = False
    r = client.post("/api/images/b_small.png/cutout", json={"rle": rle.encode(edited), "soft": True})
    assert r.status_code == 422 and "no soft edge" in r.json()["detail"]
    assert (alpha({"rle": rle.encode(edited)}) > 0).sum() == edited.sum()  # the hard cutout still works

    # Kept while they hold under edge_bytes (the oldest runs go first; a run alone past it
    # is not kept) and while the image's file is unchanged.
    shutil.copy(folder / "b_small.png", tmp_path / "b_small.png")
    one_run = len(masks) * (SMALL // 4) ** 2 * 4  # float32 low-res logits
    small = ModelService(SamPredictor(small_sam_vit_t), edge_bytes=one_run)
    other = TestClient(create_app(Workspace(tmp_path, tmp_path / "out"), small, "vit_t"))

    def soft(mask_rle):
        r = other.post("/api/images/b_small.png/cutout", json={"rle": mask_rle, "soft": True})
        assert r.status_code == 200 or "no soft edge" in r.json()["detail"]
        return r.status_code

    assert other.post("/api/images/b_small.png/everything", json=options).json()["masks"] == masks
    assert soft(masks[0]["rle"]) == 200
    later = other.post("/api/images/b_small.png/everything", json={**options, "points_per_side": 3})
    later = later.json()["masks"][0]["rle"]
    assert later not in [m["rle"] for m in masks]
    assert soft(later) == 200 and soft(masks[0]["rle"]) == 422  # the first run went
    small.edge_bytes = one_run - 1
    other.post("/api/images/b_small.png/everything", json=options)
    assert soft(masks[0]["rle"]) == 422 and soft(later) == 200  # not kept; the later run stays
    Image.fromarray(image[::-1]).save(tmp_path / "b_small.png")
    assert soft(later) == 422
    small.close()


def test_a_mask_found_twice_keeps_the_edge_of_the_better_scored(service, folder, monkeypatch):
    """Two equal masks of one run (different points, different logits): the soft cutout
    takes the first's, the higher predicted IoU."""
    import mobilesam.ui.model as ui_model

    real, runs = ui_model.everything, []

    def twice(*args, **kwargs):  # mask 1 made equal to mask 0; its logits stay its own
        result = real(*args, **kwargs)
        packed = result._packed
        packed.bits[1], packed.areas[1], packed.boxes[1] = packed.bits[0], packed.areas[0], packed.boxes[0]
        runs.append(result)
        return result

    monkeypatch.setattr(ui_model, "everything", twice)
    options = {"points_per_side": 4, "iou_thres": 0, "stability_score_thres": 0, "box_nms_thres": 1}
    annotations = service.everything("b_small.png", folder / "b_small.png", options)
    assert annotations[0]["segmentation"] == annotations[1]["segmentation"]
    mask = rle.decode(annotations[0]["segmentation"])
    first, second = (runs[0].crop_logits.read(i).matte(mask) for i in (0, 1))
    assert not np.array_equal(first, second)
    assert np.array_equal(service.soft_matte("b_small.png", folder / "b_small.png", mask), first)


def test_everything_endpoint_with_the_bf16_decoder(client):
    """decoder_precision (listed by /api/status) reaches the generator; the bf16 masks
    agree with float32's; anything else is a 422 naming the choices."""
    assert client.get("/api/status").json()["decoder_precisions"] == ["float32", "bf16"]
    options = {"points_per_side": 4, "iou_thres": 0.5, "stability_score_thres": 0.5}
    out = {
        precision: client.post(
            "/api/images/b_small.png/everything", json={**options, "decoder_precision": precision}
        ).json()["masks"]
        for precision in ("float32", "bf16")
    }
    assert out["bf16"] and abs(len(out["bf16"]) - len(out["float32"])) <= 2
    best = rle.decode(out["float32"][0]["rle"])
    masks = [rle.decode(m["rle"]) for m in out["bf16"]]
    assert max((best & m).sum() / (best | m).sum() for m in masks) > 0.9
    bad = client.post("/api/images/b_small.png/everything", json={**options, "decoder_precision": "fp8"})
    assert bad.status_code == 422 and "bf16" in bad.json()["detail"]


def test_uploads(service, tmp_path, monkeypatch):
    upload = TestClient(create_app(Workspace(None, tmp_path / "up"), service))
    assert upload.get("/api/status").json()["mode"] == "upload"
    png = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(png, "PNG")
    r = upload.post("/api/upload", files={"file": ("../../evil name.png", png.getvalue(), "image/png")})
    name = r.json()["name"]
    assert name.startswith("evil_name-") and name.endswith(".png") and "/" not in name
    assert (tmp_path / "up" / name).is_file()
    assert [i["name"] for i in upload.get("/api/images").json()] == [name]
    r = upload.post("/api/upload", files={"file": ("x.png", b"this is not an image", "image/png")})
    assert r.status_code == 422 and "not an image" in r.json()["detail"]
    r = upload.post("/api/upload", files={"file": ("x.png", png.getvalue()[:40], "image/png")})
    assert r.status_code == 422
    monkeypatch.setattr("mobilesam.ui.server.MAX_UPLOAD_BYTES", 1000)
    monkeypatch.setattr("mobilesam.ui.workspace.MAX_UPLOAD_BYTES", 1000)
    big = TestClient(create_app(Workspace(None, tmp_path / "up"), service))
    r = big.post("/api/upload", files={"file": ("big.png", b"0" * 5_000_000, "image/png")})
    assert r.status_code == 413
    assert len(list((tmp_path / "up").glob("*.png"))) == 1


def test_phone_photos_and_broken_files(service, tmp_path):
    """A photo stored sideways with an EXIF rotation (as phones save them) is labelled
    upright end to end: its mask saves, the COCO export, label map and thumbnail have the
    upright size. A file that stopped being an image is a 422 for its own requests and
    leaves the folder's COCO export working."""
    root = tmp_path / "photos"
    root.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 300x200, shown 200 wide and 300 high
    Image.open(IMAGES / "picture1.jpg").resize((300, 200)).save(root / "phone.jpg", exif=exif)
    (root / "zz_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg any more")
    client = TestClient(create_app(Workspace(root, tmp_path / "out"), service, "vit_t"))
    assert client.post("/api/images/phone.jpg/open").json()["width"] == 200
    mask = client.post("/api/images/phone.jpg/predict", json={"points": [[100, 250, 1]]}).json()["mask"]
    assert mask["rle"]["size"] == [300, 200]
    saved = client.put(
        "/api/images/phone.jpg/annotations",
        json={"revision": 0, "objects": [{"label": "a", "rle": mask["rle"]}]},
    )
    assert saved.status_code == 200, saved.text
    coco = client.get("/api/export/coco").json()
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [("phone.jpg", 200, 300)]
    assert len(coco["annotations"]) == 1
    labels = Image.open(io.BytesIO(client.get("/api/images/phone.jpg/export/labels.png").content))
    assert labels.size == (200, 300)
    thumb = client.get("/api/images/phone.jpg/thumb")
    assert Image.open(io.BytesIO(thumb.content)).size == (171, 256)
    etag = {"If-None-Match": thumb.headers["etag"]}  # asked again (a row scrolled back): not decoded again
    assert client.get("/api/images/phone.jpg/thumb", headers=etag).status_code == 304
    for what in ("thumb", "export/labels.png"):
        r = client.get(f"/api/images/zz_broken.jpg/{what}")
        assert r.status_code == 422 and "not an image" in r.json()["detail"], what
    # the selected object cut out of the upright photo (the page's "Cutout (PNG)")
    from mobilesam.image_io import load_image
    from mobilesam.utils.regions import dilate

    upright, m = load_image(root / "phone.jpg"), rle.decode(mask["rle"])
    ys, xs = np.nonzero(m)
    box = np.s_[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    r = client.post("/api/images/phone.jpg/cutout", json={"rle": mask["rle"]})
    cut = np.asarray(Image.open(io.BytesIO(r.content)))
    assert r.headers["content-type"] == "image/png" and cut.shape == (*m[box].shape, 4)
    assert np.array_equal(cut[..., 3] > 0, m[box]) and (cut[m[box]][:, :3] == upright[box][m[box]]).all()
    r = client.post("/api/images/phone.jpg/cutout", json={"rle": mask["rle"], "dilate": 4, "crop": False})
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content)))[..., 3] > 0, dilate(m, 4))
    # With the model's soft edge: the mask must still be its prompt's prediction.
    prompt = {"points": [[100, 250, 1]], "mask_id": mask["mask_id"]}
    r = client.post("/api/images/phone.jpg/cutout", json={"rle": mask["rle"], "soft": True, "prompt": prompt})
    alpha = np.asarray(Image.open(io.BytesIO(r.content)))[..., 3]
    r = client.post(
        "/api/images/phone.jpg/cutout",
        json={"rle": mask["rle"], "soft": True, "prompt": prompt, "crop": False},
    )
    whole = np.asarray(Image.open(io.BytesIO(r.content)))
    assert np.array_equal(whole[..., 3] >= 128, m) and ((whole[..., 3] > 0) & (whole[..., 3] < 255)).any()
    assert (whole[m][:, :3] == upright[m]).all() and alpha.sum() == whole[..., 3].sum()
    edited = m.copy()
    edited[tuple(np.argwhere(m)[0])] = False  # one pixel erased by hand
    for body, error in (
        ({"rle": rle.encode(edited), "soft": True, "prompt": prompt}, "edited"),
        ({"rle": mask["rle"], "soft": True}, "no prompts"),
        ({"rle": mask["rle"], "soft": True, "prompt": {"points": []}}, "no prompts"),
        ({"rle": mask["rle"], "soft": True, "prompt": prompt, "dilate": 3}, "not both"),
        ({"rle": mask["rle"], "soft": True, "prompt": {**prompt, "mask_id": 7}}, "mask_id"),
    ):
        r = client.post("/api/images/phone.jpg/cutout", json=body)
        assert r.status_code == 422 and error in r.json()["detail"], error
    for name, body in (
        ("phone.jpg", {"rle": rle.encode(np.zeros((300, 200), bool))}),  # nothing to cut out
        ("phone.jpg", {"rle": mask["rle"], "dilate": -1}),
        ("phone.jpg", {"rle": rle.encode(np.ones((200, 300), bool))}),  # the stored, not the upright size
        ("zz_broken.jpg", {"rle": mask["rle"]}),
    ):
        r = client.post(f"/api/images/{name}/cutout", json=body)
        assert r.status_code == 422 and r.json()["detail"], (name, body)
    Image.open(IMAGES / "picture1.jpg").resize((300, 200)).save(
        root / "phone.jpg"
    )  # changed: a new thumbnail
    again = client.get("/api/images/phone.jpg/thumb", headers=etag)
    assert again.status_code == 200 and Image.open(io.BytesIO(again.content)).size == (256, 171)


def test_uploads_refused_in_folder_mode(client):
    r = client.post("/api/upload", files={"file": ("x.png", b"123", "image/png")})
    assert r.status_code == 422


def test_page_and_openapi(client):
    page = client.get("/")
    assert (
        page.status_code == 200
        and "app.js" in page.text
        and "http" not in page.text.replace("http-equiv", "")
    )
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/images/{name}/predict", "/api/images/{name}/annotations", "/api/export/coco"} <= set(paths)


def test_missing_extra_is_a_clear_error(monkeypatch):
    import builtins

    from mobilesam.errors import MobileSAMError
    from mobilesam.ui import _require_extra

    real_import = builtins.__import__

    def no_uvicorn(name, *args, **kwargs):
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'", name="uvicorn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    with pytest.raises(MobileSAMError, match=r"mobilesam\[ui\]"):
        _require_extra()


def test_a_taken_port_fails_before_the_model_loads(tmp_path, capsys, monkeypatch, ckpt_vit_t):
    """`mobilesam ui --port N` with N in use or out of range: one error line at once (the
    checkpoint, which does not exist here, is never read); port 0 gets a free port."""
    import socket

    import uvicorn

    from mobilesam.cli import main
    from mobilesam.errors import OutputError
    from mobilesam.ui import bind

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port), "--checkpoint", str(tmp_path / "none.pt")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mobilesam: error: cannot serve on 127.0.0.1:{port}") and "--port" in err
        with pytest.raises(OutputError, match="cannot serve"):
            bind("127.0.0.1", port)
    with bind("127.0.0.1", 0) as free:
        assert free.getsockname()[1] > 0
    for port in ("65536", "-1"):  # no port number: said, not a traceback
        assert main(["ui", "--port", port, "--checkpoint", str(tmp_path / "none.pt")]) == 2
        assert (
            capsys.readouterr().err == f"mobilesam: error: --port must be between 0 and 65535, got {port}\n"
        )
    # -r and --import reach the workspace (the file is read before the model loads, and
    # imported once it has).
    (tmp_path / "photos" / "cam1").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(tmp_path / "photos" / "cam1" / "a.jpg")
    mask = np.ones((6, 8), bool)
    coco = {"images": [{"id": 1, "file_name": "cam1/a.jpg"}], "annotations": [], "categories": []}
    coco["annotations"].append(
        {"id": 1, "image_id": 1, "segmentation": rle.encode(mask), "bbox": [0, 0, 8, 6]}
    )
    (tmp_path / "c.json").write_text(json.dumps(coco))
    args = ["ui", str(tmp_path / "photos"), "-r", "--import", str(tmp_path / "c.json"), "--port", "0"]
    assert main([*args, "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "none.pt" in capsys.readouterr().err and not (tmp_path / "photos" / ".mobilesam" / "cam1").exists()
    (tmp_path / "bad.json").write_text("{")
    bad = ["ui", str(tmp_path / "photos"), "--import", str(tmp_path / "bad.json"), "--port", "0"]
    assert main([*bad, "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "bad.json" in capsys.readouterr().err  # a bad file fails before the model loads
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: None)
    assert main([*args, "--checkpoint", str(ckpt_vit_t), "--device", "cpu", "--img-size", str(SMALL)]) == 0
    assert "imported 1 images" in capsys.readouterr().err
    saved = json.loads((tmp_path / "photos" / ".mobilesam" / "cam1" / "a.jpg.json").read_text())
    assert saved["objects"][0]["box"] == [0, 0, 8, 6]


def test_yolo_export_refuses_two_images_with_one_label_file(service, tmp_path):
    """YOLO pairs images and labels by stem: a.jpg and a.png cannot both be exported."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "a.png"):
        Image.new("RGB", (8, 6)).save(folder / name)
    client = TestClient(create_app(Workspace(folder, tmp_path / "out"), service, "vit_t"))
    r = client.get("/api/export/yolo.zip")
    assert r.status_code == 422 and "would share the label file a.txt" in r.json()["detail"]


def test_recursive_folder_names_images_by_their_path(service, tmp_path):
    """`mobilesam ui -r`: subfolders' images, named cam1/x.jpg, served, predicted, saved and
    exported under that name; hidden and symlinked folders and the output are not entered."""
    root = tmp_path / "photos"
    (root / "cam1" / "night").mkdir(parents=True)
    (root / ".hidden").mkdir()
    small = Image.open(IMAGES / "picture4.jpg").convert("RGB").resize((80, 60))
    for rel in ("top.jpg", "cam1/b.jpg", "cam1/night/c.png", ".hidden/h.jpg"):
        small.save(root / rel)
    (root / "elsewhere").symlink_to(tmp_path / "photos" / "cam1")  # a linked folder: a cycle risk
    out = root / "labels"  # the output inside the folder is not listed as images
    out.mkdir()
    small.save(out / "x.jpg")
    client = TestClient(create_app(Workspace(root, out, recursive=True), service, "vit_t"))
    names = [i["name"] for i in client.get("/api/images").json()]
    assert names == ["cam1/b.jpg", "cam1/night/c.png", "top.jpg"]
    flat = TestClient(create_app(Workspace(root, tmp_path / "o2"), service, "vit_t"))
    assert [i["name"] for i in flat.get("/api/images").json()] == ["top.jpg"]

    for url in ("/api/images/cam1/night/c.png", "/api/images/cam1%2Fnight%2Fc.png"):  # the page encodes '/'
        assert client.get(f"{url}/file").content == (root / "cam1/night/c.png").read_bytes()
    assert client.get("/api/images/cam1%2F..%2Ftop.jpg/file").status_code == 404  # names, never paths
    assert client.get("/api/images/.hidden/h.jpg/file").status_code == 404
    cand = client.post("/api/images/cam1/b.jpg/predict", json={"points": [[40, 30, 1]]}).json()["mask"]
    obj = {"label": "cat", "rle": cand["rle"]}
    assert client.put(
        "/api/images/cam1/b.jpg/annotations", json={"revision": 0, "objects": [obj]}
    ).json() == {"revision": 1}
    assert json.loads((out / "cam1" / "b.jpg.json").read_text())["revision"] == 1
    assert [i["done"] for i in client.get("/api/images").json()] == [True, False, False]
    coco = client.get("/api/export/coco").json()
    assert [i["file_name"] for i in coco["images"]] == names
    with zipfile.ZipFile(io.BytesIO(client.get("/api/export/yolo.zip").content)) as z:
        assert sorted(z.namelist()) == [
            "classes.txt",
            "labels/cam1/b.txt",
            "labels/cam1/night/c.txt",
            "labels/top.txt",
        ]
    from mobilesam.errors import MobileSAMError

    with pytest.raises(MobileSAMError, match="recursive: for a folder"):
        Workspace(root / "top.jpg", tmp_path / "o3", recursive=True)


def test_import_seeds_unlabelled_images_to_review(service, tmp_path, ckpt_vit_t, capsys):
    """`mobilesam ui --import COCO.json`: each annotation becomes an object (label from its
    category, its prompt kept for refining); labelled images and other files are left alone."""
    from mobilesam.ui import build_app
    from mobilesam.utils.polygons import mask_to_polygons

    root = tmp_path / "photos"
    root.mkdir()
    small = Image.open(IMAGES / "picture4.jpg").convert("RGB")
    for name, size in (("a.jpg", (80, 60)), ("b.jpg", (80, 60)), ("c.jpg", (80, 60)), ("d.jpg", (40, 30))):
        small.resize(size).save(root / name)
    m1, m2 = np.zeros((60, 80), bool), np.zeros((60, 80), bool)
    m1[5:20, 10:30] = True
    m2[30:50, 40:70] = True
    m2[38:42, 50:60] = False  # a hole: polygons cut it in
    poly = [p.ravel().tolist() for p in mask_to_polygons(m2, tolerance=0)]
    coco = {
        "images": [
            {"id": i, "file_name": n}
            for i, n in enumerate(["a.jpg", "b.jpg", "d.jpg", "zzz.jpg", "c.jpg"], 1)
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "segmentation": rle.encode(m1),
                "bbox": [10, 5, 20, 15],
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 8,
                "segmentation": poly,
                "point_coords": [[55, 35]],
                "score": 0.9,
            },
            {
                "id": 3,
                "image_id": 1,
                "segmentation": rle.encode(m1, compressed=False),
                "prompt": {"points": [[12, 8]], "labels": [0]},
            },
            {"id": 4, "image_id": 2, "category_id": 7, "segmentation": rle.encode(m1)},
            {"id": 5, "image_id": 3, "category_id": 7, "segmentation": rle.encode(m1)},  # d.jpg is 40x30
            {"id": 6, "image_id": 5, "category_id": 7, "bbox": [1, 2, 3, 4]},  # a detector's box, no mask
        ],
        "categories": [{"id": 7, "name": "cup"}, {"id": 8, "name": "plate"}],
    }
    out = tmp_path / "out"
    work = Workspace(root, out)
    work.save("b.jpg", 0, [{"label": "mine", "rle": rle.encode(m2)}])  # a person's work: kept
    done = work.import_coco(coco)
    assert done["imported"] == ["a.jpg"] and done["kept"] == ["b.jpg"] and done["unknown"] == ["zzz.jpg"]
    assert len(done["skipped"]) == 2
    assert "d.jpg: annotation 5: mask [60, 80] is not the image's [30, 40]" in done["skipped"][0]
    assert done["skipped"][1] == (
        "c.jpg: annotation 6: it has no segmentation, a box only: `mobilesam boxes-to-masks` makes its mask"
    )

    client = TestClient(create_app(work, service, "vit_t"))
    saved = client.get("/api/images/a.jpg/annotations").json()
    assert saved["revision"] == 1
    a, b, c = saved["objects"]
    assert [o["label"] for o in saved["objects"]] == ["cup", "plate", "object"]
    assert np.array_equal(rle.decode(a["rle"]), m1) and a["box"] == [10, 5, 30, 20]  # bbox: the box prompt
    assert np.array_equal(rle.decode(b["rle"]), m2) and b["points"] == [[55, 35, 1]] and b["score"] == 0.9
    assert np.array_equal(rle.decode(c["rle"]), m1) and c["points"] == [[12, 8, 0]] and "box" not in c
    assert client.get("/api/images/b.jpg/annotations").json()["objects"][0]["label"] == "mine"
    assert work.import_coco(coco)["imported"] == []  # a second import changes nothing

    # Imported images await review until a person saves them (the page's R, or any change).
    def states():
        return {i["name"]: (i["done"], i["review"]) for i in client.get("/api/images").json()}

    assert states() == {
        "a.jpg": (True, True),
        "b.jpg": (True, False),
        "c.jpg": (False, False),
        "d.jpg": (False, False),
    }

    def exported(reviewed: bool) -> list[str]:
        images = client.get("/api/export/coco", params={"reviewed": reviewed}).json()["images"]
        return [i["file_name"] for i in images]

    assert exported(False) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]  # unlabelled ones as negatives
    assert exported(True) == ["b.jpg"]  # a.jpg awaits review, c.jpg and d.jpg were never saved
    client.put(
        "/api/images/a.jpg/annotations", json={"revision": 1, "objects": saved["objects"]}
    ).raise_for_status()
    assert states()["a.jpg"] == (True, False)
    old = {"image": "c.jpg", "revision": 3, "objects": [a]}  # saved before the review state existed
    (out / "c.jpg.json").write_text(json.dumps(old))
    assert states()["c.jpg"] == (True, False)
    client.put("/api/images/d.jpg/annotations", json={"revision": 0, "objects": []}).raise_for_status()
    assert exported(True) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]  # d.jpg: a person saved it empty
    assert json.loads((out / "annotations-reviewed.json").read_text())["images"][3]["file_name"] == "d.jpg"
    (out / "a.jpg.json").unlink()
    with zipfile.ZipFile(io.BytesIO(client.get("/api/export/yolo.zip?reviewed=true").content)) as z:
        assert sorted(n for n in z.namelist() if n.startswith("labels/")) == [
            f"labels/{c}.txt" for c in "bcd"
        ]
    with zipfile.ZipFile(io.BytesIO(client.get("/api/export/labelme.zip?reviewed=true").content)) as z:
        assert sorted(z.namelist()) == ["b.json", "c.json", "d.json"]

    # The command's flag: build_app imports before serving, the model segmenting the box
    # without a mask (c.jpg), and says what it did.
    src = tmp_path / "coco.json"
    src.write_text(json.dumps(coco))
    build_app(root, tmp_path / "out2", checkpoint=ckpt_vit_t, device="cpu", img_size=SMALL, import_from=src)[
        1
    ].close()
    err = capsys.readouterr().err
    assert "imported 3 images" in err and "0 without annotations, 1 not in this folder, 1 skipped" in err
    assert "skipped: d.jpg: annotation 5" in err and "c.jpg: 1 masks from boxes in" in err


def test_import_skips_an_image_whose_polygon_is_not_numbers(tmp_path):
    """A NaN or a string in an imported polygon skips its image, named; it was filled as
    far as it went and imported, a mask of nothing in particular awaiting review. A NaN
    score (information only) is left out; it was kept and sent to the page as null."""
    Image.new("RGB", (80, 60)).save(tmp_path / "a.jpg")
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [
            {"id": 7, "image_id": 1, "segmentation": [[1, 1, 50, 1, 9, 40]], "score": float("nan")}
        ],
    }
    work = Workspace(tmp_path, tmp_path / "nan_score")
    assert work.import_coco(coco)["imported"] == ["a.jpg"]
    assert "score" not in work.saved("a.jpg")["objects"][0]
    for bad in (float("nan"), "40"):
        coco = {
            "images": [{"id": 1, "file_name": "a.jpg"}],
            "annotations": [{"id": 7, "image_id": 1, "segmentation": [[1, 1, 50, 1, bad, 40]]}],
        }
        done = Workspace(tmp_path, tmp_path / "out").import_coco(coco)
        assert done["imported"] == [] and done["skipped"] == [
            "a.jpg: annotation 7: its polygons hold a coordinate that is no finite number"
        ]


def test_import_segments_boxes_without_masks(service, tmp_path):
    """`--import` of a detector's boxes: each box without a mask gets the mask a box drawn
    in the UI gets (best of three candidates), clipped to the image; the detector's score
    is kept as box_score. A box outside the image is dropped and said; an image whose size
    is not the COCO file's, or with a malformed bbox, is skipped; an import interrupted
    part-way goes on where it stopped."""
    root = tmp_path / "photos"
    root.mkdir()
    small = Image.open(IMAGES / "picture4.jpg").convert("RGB").resize((80, 60))
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"):
        small.save(root / name)
    (root / "f.jpg").write_bytes(b"not a jpeg")
    m1 = np.zeros((60, 80), bool)
    m1[5:20, 10:30] = True
    sizes = {"a.jpg": (80, 60), "b.jpg": (100, 60)}
    coco = {
        "images": [
            {"id": i, "file_name": n, **dict(zip(("width", "height"), sizes.get(n, ())))}
            for i, n in enumerate(["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"], 1)
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "segmentation": rle.encode(m1)},
            {"id": 2, "image_id": 1, "category_id": 8, "bbox": [10, 5, 40, 30], "score": 0.8},
            {"id": 3, "image_id": 1, "category_id": 8, "bbox": [-10, -10, 5, 5]},  # outside
            {"id": 4, "image_id": 1, "bbox": [70, 50, 30, 30]},  # clipped to the image
            {"id": 5, "image_id": 2, "bbox": [1, 2, 30, 40]},  # b.jpg is 80x60, not 100x60
            {"id": 6, "image_id": 3, "bbox": [1, 2, "x", 40]},
            {"id": 7, "image_id": 4, "bbox": [200, 200, 5, 5]},  # nothing usable left
            {"id": 8, "image_id": 5, "category_id": 7, "bbox": [20, 10, 30, 30], "segmentation": []},
            {"id": 9, "image_id": 6, "bbox": [1, 1, 5, 5]},  # an unreadable file
        ],
        "categories": [{"id": 7, "name": "cup"}, {"id": 8, "name": "person"}],
    }
    work = Workspace(root, tmp_path / "out")
    calls = []

    def interrupted(name, path, boxes):
        calls.append(name)
        if name == "e.jpg":
            raise KeyboardInterrupt
        return service.box_masks(name, path, boxes)

    with pytest.raises(KeyboardInterrupt):
        work.import_coco(coco, interrupted)
    assert calls == ["a.jpg", "e.jpg"] and work.done("a.jpg") and not work.done("e.jpg")
    done = work.import_coco(coco, service.box_masks)  # run again: a.jpg is kept, e.jpg imported
    assert done["imported"] == ["e.jpg"] and done["kept"] == ["a.jpg"] and done["dropped"] == []
    assert done["skipped"][:3] == [
        "b.jpg: the image is 80x60, the COCO file says 100x60",
        "c.jpg: annotation 6: no segmentation and no [x, y, w, h] bbox",
        "d.jpg: no annotation could be used",
    ]
    assert len(done["skipped"]) == 4 and "f.jpg is not an image file Pillow can read" in done["skipped"][3]
    fresh = Workspace(root, tmp_path / "out2").import_coco(coco, service.box_masks)
    assert fresh["imported"] == ["a.jpg", "e.jpg"]
    assert fresh["dropped"] == [
        "a.jpg: annotation 3: bbox [-10, -10, 5, 5] has no area inside the 80x60 image"
    ]

    client = TestClient(create_app(work, service, "vit_t"))
    objects = client.get("/api/images/a.jpg/annotations").json()["objects"]
    assert [(o["id"], o["label"], o.get("box")) for o in objects] == [
        (1, "cup", None),
        (2, "person", [10, 5, 50, 35]),
        (3, "object", [70, 50, 80, 60]),
    ]
    for obj in objects[1:]:  # the mask, candidate and score a box drawn on the page gets
        drawn = client.post("/api/images/a.jpg/predict", json={"box": obj["box"], "multimask": True}).json()
        assert obj["rle"] == drawn["mask"]["rle"] and obj["mask_id"] == drawn["mask"]["mask_id"]
        assert obj["score"] == pytest.approx(drawn["mask"]["score"])
    assert objects[1]["box_score"] == 0.8 and "box_score" not in objects[2]
    (e,) = client.get("/api/images/e.jpg/annotations").json()["objects"]  # "segmentation": [] is no mask
    assert e["box"] == [20, 10, 50, 40] and e["mask_id"] in (1, 2, 3) and rle.decode(e["rle"]).any()
    exported = client.get("/api/export/coco").json()["annotations"]
    assert [a.get("box_score") for a in exported] == [None, 0.8, None, None]  # a.jpg's three, e.jpg's one


def test_ui_command_builds_the_model_its_checkpoint_fits(tmp_path, monkeypatch, capsys):
    """`mobilesam ui --checkpoint student.pt` without --model-type: the checkpoint's layout
    decides (here a TinyViT-3M student), as for every other command; --img-size its input."""
    import torch
    import uvicorn
    from conftest import synthetic_state_dict

    from mobilesam.cli import main

    ckpt = tmp_path / "student.pt"
    torch.save(synthetic_state_dict("tiny_vit_3m", seed=3), ckpt)
    Image.new("RGB", (8, 6)).save(tmp_path / "a.jpg")
    served = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: served.update(app=self.config.app))
    args = ["ui", str(tmp_path / "a.jpg"), "--port", "0", "--checkpoint", str(ckpt), "--device", "cpu"]
    assert main([*args, "--img-size", "512"]) == 0
    status = TestClient(served["app"]).get("/api/status").json()
    assert (status["model"], status["img_size"]) == ("tiny_vit_3m", 512)


def test_import_takes_windows_paths_and_explains_names_it_cannot_find(service, tmp_path, capsys):
    """A COCO file written on Windows (`cam1\\a.jpg`) names the folder's `cam1/a.jpg`; a file
    whose names are all elsewhere (another root) gets a hint, not just "0 imported"."""
    from mobilesam.ui import _import

    root = tmp_path / "photos"
    (root / "cam1").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(root / "cam1" / "a.jpg")
    mask = rle.encode(np.ones((6, 8), bool))
    coco = {
        "images": [{"id": 1, "file_name": "cam1\\a.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "segmentation": mask}],
    }
    work = Workspace(root, tmp_path / "out", recursive=True)
    _import(work, coco, "c.json", service)
    assert "imported 1 images" in capsys.readouterr().err and work.done("cam1/a.jpg")
    coco["images"][0]["file_name"] = "train/cam1/a.jpg"
    _import(Workspace(root, tmp_path / "out2", recursive=True), coco, "c.json", service)
    err = capsys.readouterr().err
    assert "imported 0 images" in err and "none of its file names is an image of" in err
    assert "'train/cam1/a.jpg', the folder has 'cam1/a.jpg'" in err


def test_import_reads_label_files_beside_the_images(tmp_path, capsys, service):
    """`ui --import photos/`: LabelMe files beside their images (or YOLO, VOC) seed the UI."""
    from mobilesam.convert import load_annotations
    from mobilesam.ui import _import
    from mobilesam.utils.polygons import fill_polygons

    root = tmp_path / "photos"
    root.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (80, 60)).save(root / name)
    square = [[10, 10], [40, 10], [40, 30], [10, 30]]
    shapes = [{"label": "cup", "points": square, "shape_type": "polygon", "group_id": None}]
    (root / "a.json").write_text(json.dumps({"shapes": shapes, "imageHeight": 60, "imageWidth": 80}))
    work = Workspace(root, tmp_path / "out")
    _import(work, load_annotations(root, work.root), root, service)
    assert "imported 1 images" in capsys.readouterr().err  # b.jpg: without annotations, not skipped
    (obj,) = work.saved("a.jpg")["objects"]
    assert obj["label"] == "cup" and obj["source"] == "import"
    assert np.array_equal(rle.decode(obj["rle"]), fill_polygons([np.array(square)], (60, 80)))
    assert work.saved("b.jpg")["objects"] == []


def test_classes_fix_the_exports_numbering_and_keep_other_labels(service, tmp_path, folder):
    """`--classes`: the status lists them for the page; the exports number the classes in
    the file's order, used or not, then any other label (saved by a script, or before the
    list existed), so a YOLO dataset's class ids do not depend on what has been labelled."""
    workspace = Workspace(folder, tmp_path / "out", classes=["person", "wheel", "car"])
    client = TestClient(create_app(workspace, service, "vit_t"))
    assert client.get("/api/status").json()["classes"] == ["person", "wheel", "car"]
    objects = [
        _object(client, "car", {"points": [[500, 375, 1]]}),
        _object(client, "truck", {"box": [425, 600, 700, 875]}),
    ]
    assert (
        client.put(
            "/api/images/a_truck.jpg/annotations", json={"revision": 0, "objects": objects}
        ).status_code
        == 200
    )
    coco = client.get("/api/export/coco").json()
    assert coco["categories"] == [
        {"id": 1, "name": "person"},
        {"id": 2, "name": "wheel"},
        {"id": 3, "name": "car"},
        {"id": 4, "name": "truck"},
    ]
    assert [a["category_id"] for a in coco["annotations"]] == [3, 4]
    with zipfile.ZipFile(io.BytesIO(client.get("/api/export/yolo.zip").content)) as z:
        assert z.read("classes.txt") == b"person\nwheel\ncar\ntruck\n"
        assert [line.split()[0] for line in z.read("labels/a_truck.txt").decode().splitlines()] == ["2", "3"]
    free = TestClient(create_app(Workspace(folder, tmp_path / "out"), service, "vit_t"))
    assert free.get("/api/status").json()["classes"] is None
    assert [c["name"] for c in free.get("/api/export/coco").json()["categories"]] == ["car", "truck"]
    for bad, message in (
        ([], "empty"),
        (["car", "bus", "car"], "listed twice: \\['car'\\]"),
        ([""], "1 to 200"),
    ):
        with pytest.raises(MobileSAMError, match=message):
            Workspace(folder, tmp_path / "out", classes=bad)


def test_ui_command_reads_the_classes_file(tmp_path, monkeypatch, ckpt_vit_t):
    """`ui --classes data.yaml`: a YOLO dataset YAML (or classes.txt) names the classes; with
    `--import labels/` its names go to the YOLO files' class numbers. A missing file fails
    before the model loads."""
    import uvicorn

    from mobilesam.cli import main

    Image.new("RGB", (40, 30)).save(tmp_path / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.1 0.1 0.6 0.1 0.6 0.8\n")
    (tmp_path / "data.yaml").write_text("names: {0: person, 1: dog}\n")
    served = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: served.update(app=self.config.app))
    args = ["ui", str(tmp_path), "--port", "0", "--checkpoint", str(ckpt_vit_t), "--device", "cpu"]
    args += ["--img-size", str(SMALL)]
    assert main([*args, "--classes", str(tmp_path / "data.yaml"), "--import", str(tmp_path / "labels")]) == 0
    client = TestClient(served["app"])
    assert client.get("/api/status").json()["classes"] == ["person", "dog"]
    assert [o["label"] for o in client.get("/api/images/a.jpg/annotations").json()["objects"]] == ["dog"]
    assert main([*args, "--classes", str(tmp_path / "missing.txt")]) != 0


def test_propagate_prompts_an_image_with_another_images_boxes(client):
    """The previous image's objects carried over: each one's mask extent, scaled to this
    image's size, prompts it exactly as a box drawn here does; labels kept; empty masks
    skipped; an unknown source is 404."""
    car = _object(client, "car", {"box": [425, 600, 700, 875]})
    empty = {"label": "nothing", "rle": rle.encode(np.zeros((1200, 1800), bool))}
    client.put("/api/images/a_truck.jpg/annotations", json={"revision": 0, "objects": [car, empty]})
    out = client.post("/api/images/b_small.png/propagate", json={"source": "a_truck.jpg"}).json()
    assert out["skipped"] == 1 and [o["label"] for o in out["objects"]] == ["car"]
    ys, xs = np.nonzero(rle.decode(car["rle"]))
    box = [
        xs.min() * 400 / 1800,
        ys.min() * 300 / 1200,
        (xs.max() + 1) * 400 / 1800,
        (ys.max() + 1) * 300 / 1200,
    ]
    (got,) = out["objects"]
    assert got["box"] == pytest.approx(box)
    direct = client.post("/api/images/b_small.png/predict", json={"box": got["box"]}).json()
    assert got["mask"] == direct["mask"] and got["candidates"] == direct["candidates"]
    same = client.post("/api/images/a_truck.jpg/propagate", json={"source": "a_truck.jpg"}).json()
    assert same["objects"][0]["box"] == [float(xs.min()), float(ys.min()), xs.max() + 1.0, ys.max() + 1.0]
    assert client.post("/api/images/b_small.png/propagate", json={"source": "missing.jpg"}).status_code == 404


def test_images_a_browser_cannot_show_come_as_the_models_pixels(service, tmp_path):
    """The page draws `/file`: a JPEG, PNG, WebP or AVIF goes as it is stored; a TIFF, a
    HEIC, a 16-bit PNG (12-bit data: the model sees it scaled up), an alpha channel and a
    PNG with an EXIF rotation go as a PNG of exactly the pixels the model segments, so
    what is drawn on is what was segmented. HEIC and AVIF are listed, and an uploaded HEIC
    keeps its suffix."""
    from mobilesam.image_io import load_image

    pillow_heif = pytest.importorskip("pillow_heif")
    root = tmp_path / "photos"
    root.mkdir()
    photo = Image.open(IMAGES / "picture2.jpg").convert("RGB").resize((120, 80))
    photo.save(root / "a.jpg")
    photo.save(root / "b.avif")
    photo.save(root / "c.tif")
    pillow_heif.from_pillow(photo).save(root / "d.heic")
    Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 16).save(root / "e16.png")  # 12-bit
    photo.convert("RGBA").save(root / "f_alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    photo.save(root / "g_turned.png", exif=exif)
    client = TestClient(create_app(Workspace(root, tmp_path / "out"), service, "vit_t"))
    names = [i["name"] for i in client.get("/api/images").json()]
    assert names == ["a.jpg", "b.avif", "c.tif", "d.heic", "e16.png", "f_alpha.png", "g_turned.png"]
    for name in names:
        r = client.get(f"/api/images/{name}/file")
        assert r.status_code == 200, name
        if name in ("a.jpg", "b.avif"):
            assert r.content == (root / name).read_bytes(), name
            continue
        assert r.headers["content-type"] == "image/png", name
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), load_image(root / name)), name
        again = client.get(f"/api/images/{name}/file", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304, name
    assert client.post("/api/images/g_turned.png/open").json()["width"] == 80  # upright: 80 wide
    for name in ("b.avif", "c.tif", "d.heic", "e16.png"):
        assert Image.open(io.BytesIO(client.get(f"/api/images/{name}/thumb").content)).size == (120, 80)
    upload = TestClient(create_app(Workspace(None, tmp_path / "up"), service))
    heic = io.BytesIO()
    pillow_heif.from_pillow(photo).save(heic)
    name = upload.post(
        "/api/upload", files={"file": ("IMG_0001.HEIC", heic.getvalue(), "image/heic")}
    ).json()["name"]
    assert name.startswith("IMG_0001-") and name.endswith(".heic")
    r = upload.get(f"/api/images/{name}/file")
    assert r.headers["content-type"] == "image/png" and Image.open(io.BytesIO(r.content)).size == (120, 80)
