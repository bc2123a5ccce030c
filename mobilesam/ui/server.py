"""The UI's HTTP API (FastAPI; OpenAPI at /docs) and the page's static files.

    GET  /api/status                          mode, model, embedding cache
    GET  /api/images                          [{name, done, review}] (review: imported, not yet saved by a person)
    GET  /api/images/{name}/file | /thumb     the image, a 256-px JPEG thumbnail
    POST /api/images/{name}/open              encode (cached), prefetch the next image
    POST /api/images/{name}/predict           prompts (+ brush strokes) -> candidates' scores + one mask (COCO RLE)
    POST /api/images/{name}/paint             a mask + brush/eraser/polygon strokes -> the painted mask
    POST /api/images/{name}/outline           a mask -> its outlines and holes as closed strokes (vertex editing)
    POST /api/images/{name}/cutout            a mask -> the object on a transparent background (RGBA PNG),
                                              hard, grown, or with the model's soft edge
    POST /api/images/{name}/propagate         another image's objects, re-prompted here by their boxes
    POST /api/images/{name}/everything        automatic masks (options as the CLI's, decoder_precision too)
    GET  /api/images/{name}/everything/progress  its point prompts done / in all, while it runs
    GET  /api/images/{name}/annotations       saved objects + revision
    PUT  /api/images/{name}/annotations       save (409 if the revision is stale)
    GET  /api/images/{name}/export/labels.png label map (0 background, i + 1 object i)
    GET  /api/images/{name}/export/masks.zip  one PNG per object
    GET  /api/export/coco                     the folder as one COCO JSON (also written to --out);
                                              ?reviewed=true: only images a person has saved (all exports)
    GET  /api/export/yolo.zip                 the folder as YOLO segmentation labels + classes.txt
    GET  /api/export/labelme.zip              the folder as LabelMe files, one per image (unzip beside the images)
    GET  /api/export/label-maps.zip           the folder as class-index PNGs, one per image, + classes.txt
    GET  /api/export/instance-maps.zip        the folder as instance-index PNGs, one per image, + instances.json
    GET  /api/export/label-studio.zip         the folder as Label Studio tasks (brush masks) + labeling config
    POST /api/upload                          an image (upload mode only)

Coordinates are original-image pixels. Masks travel as COCO compressed RLE (a few KB
for a photo-sized mask) and are decoded on the page.
"""

from __future__ import annotations

import io
import json
import math
import time
import zipfile
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field

from ..convert import (
    ConvertError,
    label_maps,
    label_studio_config_path,
    to_label_studio,
    to_labelme,
    to_yolo,
    yolo_files,
)
from ..errors import ImageLoadError, MobileSAMError, PromptError
from ..image_io import load_image, opened_image, upright_size
from ..options import BY_NAME, DECODER_PRECISIONS, check_decoder_precision, generator_kwargs
from ..utils import rle
from ..utils.files import atomic_write_text
from ..utils.matte import soft_mask
from ..utils.regions import dilate
from ..visualize import cutout
from .model import ModelService
from .strokes import check_strokes, outline, paint
from .workspace import (
    MAX_UPLOAD_BYTES,
    BadRequest,
    Conflict,
    NotFound,
    Workspace,
    check_rle,
    mask_of,
    saved_by_person,
)

STATIC = Path(__file__).with_name("static")


class Body(BaseModel):
    """A request body: a field it does not define (misspelt, another version's) is a 422
    naming it, not ignored."""

    model_config = ConfigDict(extra="forbid")


class PromptBody(Body):
    points: list[list[float]] = Field(
        default_factory=list, description="[[x, y, label], ...]; label 1 fg, 0 bg"
    )
    box: list[float] | None = Field(None, description="[x0, y0, x1, y1]")
    multimask: bool = Field(True, description="three candidates (else SAM's single-mask output)")
    mask_id: int | None = Field(
        None, description="the candidate whose mask to return (1-3; default: the best)"
    )
    strokes: list = Field(
        default_factory=list,
        description="brush/eraser strokes applied to the mask in order (strokes.py): "
        "[{mode: 'add'|'erase', radius, points: [[x, y], ...]}, ...]",
    )
    preview: bool = Field(
        False,
        description="a mask of at most 2 MP, the image scaled down (its area and bbox in those pixels): "
        "for drawing the hover preview of a big photo quickly",
    )


class PropagateBody(Body):
    source: str = Field(description="the image whose saved objects to carry over (a name of /api/images)")


class PaintBody(Body):
    rle: dict | None = Field(None, description="the object's mask now (COCO RLE); null: an empty mask")
    strokes: list = Field(description="brush/eraser strokes to apply in order, as in predict")


class OutlineBody(Body):
    rle: dict = Field(description="the mask to outline (COCO RLE)")
    tolerance: float = Field(1.0, description="simplification in pixels (0: every pixel corner)")


class CutoutBody(Body):
    rle: dict = Field(description="the object's mask (COCO RLE)")
    dilate: float = Field(0.0, ge=0, le=1024, description="grow the mask by this many pixels first")
    crop: bool = Field(True, description="crop to the mask's extent")
    soft: bool = Field(
        False,
        description="the model's own soft edge (its logits' sigmoid on the outline, utils.matte): "
        "`rle` unedited, made by `prompt` or by a recent segment-everything run; not with dilate",
    )
    prompt: PromptBody | None = Field(None, description="with soft: the prompts that made the mask, if any")


class SaveBody(Body):
    revision: int
    objects: list[dict]


def _encoded(mask: np.ndarray) -> dict:
    """A mask as the page gets it: its area and COCO XYWH box ([0, 0, 0, 0] if empty, as
    the exports write them), read off its COCO RLE, and the RLE."""
    seg = rle.encode(mask)
    area, bbox = rle.area_bbox(seg)
    return {"area": area, "bbox": bbox, "rle": seg}


def _candidates(ids: list[int], scores: np.ndarray) -> list[dict]:
    return [{"mask_id": m, "score": float(s)} for m, s in zip(ids, scores)]


def _mask_json(mask: np.ndarray, mask_id: int, score: float) -> dict:
    return {"mask_id": mask_id, "score": score, **_encoded(mask)}


PREVIEW_PX = 2_000_000


def preview_size(size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of an image -> the size of its preview masks: scaled down to PREVIEW_PX at most."""
    h, w = size
    f = min(1.0, (PREVIEW_PX / (h * w)) ** 0.5)
    return max(1, math.floor(h * f)), max(1, math.floor(w * f))


def _candidate_choice(body: PromptBody) -> tuple[list[int], int | None]:
    """The mask ids a prompt set's candidates have, and the index of the one asked for."""
    ids = [1, 2, 3] if body.multimask else [0]
    if body.mask_id is not None and body.mask_id not in ids:
        raise PromptError(f"mask_id must be one of {ids}")
    return ids, None if body.mask_id is None else ids.index(body.mask_id)


def _prompt_arrays(body: PromptBody, size: tuple[int, int]):
    h, w = size
    points = labels = box = None
    if body.points:
        arr = np.asarray(body.points, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise PromptError("points must be [[x, y, label], ...]")
        if not np.isin(arr[:, 2], (0, 1)).all():
            raise PromptError("point labels must be 1 (foreground) or 0 (background)")
        points, labels = arr[:, :2], arr[:, 2].astype(int)
    if body.box is not None:
        if len(body.box) != 4:
            raise PromptError("box must be [x0, y0, x1, y1]")
        box = np.asarray(body.box, dtype=float)
        if np.isfinite(box).all() and not (box[0] < box[2] and box[1] < box[3]):  # NaN: below
            raise PromptError("box must have x0 < x1 and y0 < y1")
    coords = [c for c in (points, None if box is None else box.reshape(2, 2)) if c is not None]
    if not coords:
        raise PromptError("give at least one point or a box")
    allc = np.concatenate(coords)
    if (
        not np.isfinite(allc).all()
        or (allc < -1).any()
        or (allc[:, 0] > w + 1).any()
        or (allc[:, 1] > h + 1).any()
    ):
        raise PromptError(f"prompts must lie inside the {w}x{h} image")
    return points, labels, box


def _shown_as_is(img: Image.Image) -> bool:
    """Whether a browser shows this image file exactly as the model sees it (`load_image`):
    a format it decodes, 8-bit without transparency, upright or a JPEG (whose EXIF
    orientation browsers apply). Anything else (TIFF, HEIC, 16-bit, CMYK, an alpha
    channel over colour the model sees) is sent as a PNG of the model's pixels."""
    opaque = img.mode in ("1", "L", "RGB") or (img.mode == "P" and "transparency" not in img.info)
    upright = img.format == "JPEG" or img.getexif().get(0x0112, 1) == 1
    return img.format in ("JPEG", "PNG", "WEBP", "BMP", "AVIF") and opaque and upright


def _json_safe(value: object) -> object:
    """`value` with every NaN or infinite float written as text (strict JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _revalidation(path: Path) -> dict[str, str]:
    """Cache headers by which a browser asks again, and an unchanged file costs a stat."""
    st = path.stat()
    return {"ETag": f'"{st.st_mtime_ns:x}-{st.st_size:x}"', "Cache-Control": "no-cache"}


def create_app(workspace: Workspace, service: ModelService, model_name: str = "") -> FastAPI:
    app = FastAPI(title="mobilesam ui", description=__doc__)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        """Refuse a body over the upload limit before reading it."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_UPLOAD_BYTES + (1 << 20)):
            return JSONResponse(
                {"detail": f"request over the {MAX_UPLOAD_BYTES >> 20} MB limit"}, status_code=413
            )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer, but a NaN or infinite input (Python's json and requests
        # send them) is given back as text: as a number it made the answer a 500.
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(MobileSAMError)
    async def _errors(request: Request, exc: MobileSAMError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return JSONResponse({"detail": str(exc)}, status_code=404)
        if isinstance(exc, Conflict):
            return JSONResponse({"detail": str(exc), "revision": exc.revision}, status_code=409)
        status = 422 if isinstance(exc, (PromptError, BadRequest, ImageLoadError, ConvertError)) else 500
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.get("/api/status")
    def status() -> dict:
        return {
            "mode": "upload" if workspace.uploads else ("image" if workspace.only else "folder"),
            "model": model_name,
            "img_size": service.predictor.img_size,  # the model's input side
            "device": str(service.predictor.device),
            "cache": service.cache_info(),
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "everything_options": {o.name: o.default for o in BY_NAME.values()},
            "decoder_precisions": list(DECODER_PRECISIONS),  # the first is the default
            "classes": workspace.classes,  # null: labels are typed freely
        }

    @app.get("/api/images")
    def images() -> list[dict]:
        states = [(e.name, workspace.state(e.name)) for e in workspace.images()]
        return [{"name": name, "done": state != "", "review": state == "review"} for name, state in states]

    @app.get("/api/images/{name:path}/file")
    def image_file(name: str, request: Request) -> Response:
        path = workspace.image(name).path
        with opened_image(path) as img:
            as_is = _shown_as_is(img)
        if as_is:
            return FileResponse(path)
        cache = _revalidation(path)
        if request.headers.get("if-none-match") == cache["ETag"]:
            return Response(status_code=304, headers=cache)
        buf = io.BytesIO()
        Image.fromarray(load_image(path)).save(buf, "PNG", compress_level=1)
        return Response(buf.getvalue(), media_type="image/png", headers=cache)

    @app.get("/api/images/{name:path}/thumb")
    def thumb(name: str, request: Request) -> Response:
        # The list asks again for a row scrolled back into view: the browser revalidates
        # (no-cache) and an unchanged file costs a stat, not a decode.
        path = workspace.image(name).path
        cache = _revalidation(path)
        if request.headers.get("if-none-match") == cache["ETag"]:
            return Response(status_code=304, headers=cache)
        with opened_image(path) as img:
            img.thumbnail((256, 256))  # a JPEG decodes at a reduced scale: fast for a long list
            img = ImageOps.exif_transpose(img).convert("RGB")  # upright, as the model sees it
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80)
        return Response(buf.getvalue(), media_type="image/jpeg", headers=cache)

    @app.post("/api/images/{name:path}/open")
    def open_image(name: str) -> dict:
        entry = workspace.image(name)
        emb, ms = service.embed(entry.name, entry.path)
        after = workspace.next_image(entry.name)
        if after is not None:  # the next image is encoded while this one is worked on
            service.prefetch(after.name, after.path)
        h, w = emb.original_size
        return {"name": name, "width": w, "height": h, "encode_ms": ms, "cached": ms == 0.0}

    @app.post("/api/images/{name:path}/predict")
    def predict(name: str, body: PromptBody) -> dict:
        entry = workspace.image(name)
        start = time.perf_counter()
        emb, _ = service.embed(entry.name, entry.path)
        points, labels, box = _prompt_arrays(body, emb.original_size)
        ids, pick = _candidate_choice(body)
        strokes = check_strokes(body.strokes)
        if strokes and body.preview:
            raise PromptError("strokes are painted on full-size masks: not with preview")
        size = preview_size(emb.original_size) if body.preview else None
        scores, i, mask, _ = service.predict(emb, points, labels, box, body.multimask, pick, size)
        if strokes:
            mask = paint(mask, strokes)
        return {
            "candidates": _candidates(ids, scores),
            "best": int(np.argmax(scores)),
            "mask": _mask_json(mask, ids[i], float(scores[i])),
            "server_ms": (time.perf_counter() - start) * 1e3,
        }

    @app.post("/api/images/{name:path}/propagate")
    def propagate(name: str, body: PropagateBody) -> dict:
        """The saved objects of image `source` carried over to this one (the next frame of a
        video, another shot of a scene): each object's box (its mask's extent, scaled to
        this image's size) prompts this image, as a box drawn here would; its label is
        kept. Objects with an empty mask are skipped and counted."""
        entry = workspace.image(name)
        objects = workspace.load(body.source)["objects"]
        h, w = upright_size(entry.path)
        labels, boxes, skipped = [], [], 0
        for obj in objects:
            area, (x, y, bw, bh) = rle.area_bbox(obj["rle"])  # the mask's extent, not decoded
            if not area:
                skipped += 1
                continue
            sy, sx = h / obj["rle"]["size"][0], w / obj["rle"]["size"][1]
            labels.append(obj["label"])
            boxes.append(np.array([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy]))  # pixel corners
        made = service.box_masks(entry.name, entry.path, np.array(boxes, float).reshape(-1, 4))
        out = [
            {
                "label": label,
                "box": box.tolist(),
                "candidates": _candidates([1, 2, 3], scores),
                "mask": _mask_json(mask, mask_id, float(scores[mask_id - 1])),
            }
            for label, box, (mask, mask_id, scores) in zip(labels, boxes, made)
        ]
        return {"objects": out, "skipped": skipped}

    @app.post("/api/images/{name:path}/paint")
    def paint_mask(name: str, body: PaintBody) -> dict:
        """Brush/eraser strokes on a mask (the object's current one): the painted mask."""
        size = upright_size(workspace.image(name).path)
        strokes = check_strokes(body.strokes)
        mask = np.zeros(size, bool) if body.rle is None else rle.decode(check_rle(body.rle, size))
        mask = paint(mask, strokes)
        return {"mask": _encoded(mask)}

    @app.post("/api/images/{name:path}/outline")
    def outline_mask(name: str, body: OutlineBody) -> dict:
        """The mask as closed strokes (outlines add, holes erase) whose vertices the page
        edits; `paint` with them on an empty mask gives the edited mask."""
        size = upright_size(workspace.image(name).path)
        return outline(rle.decode(check_rle(body.rle, size)), body.tolerance)

    @app.post("/api/images/{name:path}/cutout")
    def cutout_png(name: str, body: CutoutBody) -> Response:
        """The image's pixels inside the mask, the rest transparent: an RGBA PNG."""
        entry = workspace.image(name)
        mask = rle.decode(check_rle(body.rle, upright_size(entry.path)))
        if not mask.any():
            raise PromptError("nothing to cut out: the mask is empty")
        alpha = _soft_matte(entry, body, mask) if body.soft else dilate(mask, body.dilate)
        buf = io.BytesIO()
        cutout(load_image(entry.path), alpha, body.crop).save(buf, "PNG")
        return Response(buf.getvalue(), media_type="image/png")

    def _soft_matte(entry, body: CutoutBody, mask: np.ndarray) -> np.ndarray:
        if body.dilate:
            raise PromptError("a soft edge follows the model's outline, dilate grows past it: not both")
        if body.prompt is not None and body.prompt.strokes:
            raise PromptError("a soft edge is the model's: a painted mask has none")
        matte = service.soft_matte(entry.name, entry.path, mask)  # a mask of segment everything
        if matte is not None:
            return matte
        if body.prompt is None or (not body.prompt.points and body.prompt.box is None):
            raise PromptError(
                "no soft edge: the mask has no prompts and no recent segment-everything run of "
                "this image made it (drawn by hand, imported, edited, or its run is no longer kept)"
            )
        emb, _ = service.embed(entry.name, entry.path)
        points, labels, box = _prompt_arrays(body.prompt, emb.original_size)
        _, pick = _candidate_choice(body.prompt)
        *_, predicted, low_res = service.predict(emb, points, labels, box, body.prompt.multimask, pick)
        if not np.array_equal(predicted, mask):  # the logits describe the prediction only
            raise PromptError(
                "no soft edge: the mask was edited after the model made it (brush, vertices); "
                "the hard cutout still works"
            )
        return soft_mask(low_res, mask, emb.input_size, service.predictor.mask_threshold)

    @app.post("/api/images/{name:path}/everything")
    def run_everything(name: str, options: dict) -> dict:
        """options: the CLI's numeric knobs, and decoder_precision (float32 or bf16)."""
        entry = workspace.image(name)
        precision = check_decoder_precision(options.pop("decoder_precision", "float32"))
        unknown = sorted(set(options) - set(BY_NAME))
        if unknown:
            raise PromptError(f"unknown options {unknown}; known: {sorted(BY_NAME)}")
        generator_kwargs(options)  # checks the values before the work starts
        start = time.perf_counter()
        annotations = service.everything(entry.name, entry.path, options, precision)
        masks = [
            {"rle": a["segmentation"], "score": a["score"], "bbox": a["bbox"], "area": a["area"]}
            for a in annotations
        ]
        return {"masks": masks, "seconds": time.perf_counter() - start}

    @app.get("/api/images/{name:path}/everything/progress")
    def everything_progress(name: str) -> dict:
        """Point prompts done and in all in the latest segment-everything run of this image."""
        done, total = service.progress.get(workspace.image(name).name, (0, 0))
        return {"done": done, "total": total}

    @app.get("/api/images/{name:path}/annotations")
    def load(name: str) -> dict:
        return workspace.load(name)

    @app.put("/api/images/{name:path}/annotations")
    def save(name: str, body: SaveBody) -> dict:
        return {"revision": workspace.save(name, body.revision, body.objects)}

    @app.get("/api/images/{name:path}/export/labels.png")
    def label_map(name: str) -> Response:
        objects = workspace.load(name)["objects"]
        entry = workspace.image(name)
        h, w = upright_size(entry.path)
        labels = np.zeros((h, w), np.uint16 if len(objects) > 255 else np.uint8)
        for i, obj in enumerate(objects):
            labels[mask_of(obj)] = i + 1
        buf = io.BytesIO()
        Image.fromarray(labels).save(buf, "PNG")
        return Response(buf.getvalue(), media_type="image/png")

    @app.get("/api/images/{name:path}/export/masks.zip")
    def masks_zip(name: str) -> Response:
        files = {}
        for i, obj in enumerate(workspace.load(name)["objects"]):
            png = io.BytesIO()
            Image.fromarray(mask_of(obj).astype(np.uint8) * 255).save(png, "PNG")
            label = "".join(c if c.isalnum() or c in "-_" else "_" for c in obj["label"])[:40]
            files[f"{i + 1:03d}_{label}.png"] = png.getvalue()
        return _zip(files)

    @app.get("/api/export/coco")
    def export_coco(reviewed: bool = False) -> dict:
        coco = folder_coco(workspace, reviewed)
        name = "annotations-reviewed.json" if reviewed else "annotations.json"
        atomic_write_text(workspace.out / name, json.dumps(coco))
        return coco

    @app.get("/api/export/yolo.zip")
    def export_yolo(reviewed: bool = False) -> Response:
        return _zip(yolo_files(*to_yolo(folder_coco(workspace, reviewed))))

    @app.get("/api/export/labelme.zip")
    def export_labelme(reviewed: bool = False) -> Response:
        labelme = to_labelme(folder_coco(workspace, reviewed))
        return _zip({path: json.dumps(data, indent=1) for path, data in labelme.items()})

    @app.get("/api/export/label-maps.zip")
    def export_label_maps(reviewed: bool = False) -> Response:
        return _zip(dict(label_maps(folder_coco(workspace, reviewed))[1]))

    @app.get("/api/export/instance-maps.zip")
    def export_instance_maps(reviewed: bool = False) -> Response:
        return _zip(dict(label_maps(folder_coco(workspace, reviewed), instances=True)[1]))

    @app.get("/api/export/label-studio.zip")
    def export_label_studio(reviewed: bool = False) -> Response:
        # A person's reviewed work goes in as annotations; everything, as predictions to review.
        tasks, config = to_label_studio(folder_coco(workspace, reviewed), as_annotations=reviewed)
        return _zip({"tasks.json": json.dumps(tasks), label_studio_config_path("tasks.json").name: config})

    @app.post("/api/upload")
    async def upload(file: UploadFile) -> dict:
        data = await file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            return JSONResponse(
                {"detail": f"upload over the {MAX_UPLOAD_BYTES >> 20} MB limit"}, status_code=413
            )
        return {"name": workspace.add_upload(file.filename or "upload", data)}

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _zip(files: dict) -> Response:
    """A zip of {path: text or bytes} as the response."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(str(path), data)
    return Response(buf.getvalue(), media_type="application/zip")


def folder_coco(workspace: Workspace, reviewed: bool = False) -> dict:
    """Every image's saved objects as one COCO dict: the label names are the categories
    (the workspace's classes in their order, used or not, then any other label, sorted;
    without classes the labels used, sorted), masks compressed RLE, as `mobilesam
    everything DIR` writes them. Every image is listed, one with no objects as a
    negative; `reviewed`: only the images a person has saved (with or without objects),
    leaving out those never saved and those imported and awaiting review."""
    saved = [(e, workspace.saved(e.name)) for e in workspace.images()]
    if reviewed:
        saved = [(e, data) for e, data in saved if saved_by_person(data)]
    classes = workspace.classes or []
    used = {o["label"] for _, data in saved for o in data["objects"]}
    names = classes + sorted(used - set(classes))
    category = {n: i + 1 for i, n in enumerate(names)}
    images, annotations = [], []
    for image_id, (entry, data) in enumerate(saved, start=1):
        try:
            h, w = upright_size(entry.path)
        except ImageLoadError:
            if not data["objects"]:
                continue  # an unreadable file in the folder, with nothing labelled
            h, w = data["objects"][0]["rle"]["size"]  # labelled before it became unreadable
        images.append({"id": image_id, "width": w, "height": h, "file_name": entry.name})
        for obj in data["objects"]:
            area, bbox = rle.area_bbox(obj["rle"])  # from the runs: no mask decoded
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category[obj["label"]],
                "segmentation": obj["rle"],
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
            }
            for key in ("score", "box_score", "mask_id"):
                if key in obj:
                    ann[key] = obj[key]
            prompt = {k: obj[k] for k in ("points", "box") if k in obj}
            if prompt:
                ann["prompt"] = prompt
            annotations.append(ann)
    categories = [{"id": i, "name": n} for n, i in category.items()]
    return {"images": images, "annotations": annotations, "categories": categories}
