"""Label files: `mobilesam boxes-to-masks` (a mask for every box of a dataset) and
`mobilesam convert` (between COCO, YOLO, VOC, LabelMe, mask PNGs and Label Studio)."""

from __future__ import annotations

import argparse

from ..errors import MobileSAMError
from .common import (
    add_backend_args,
    add_label_source,
    add_model_args,
    add_ray_args,
    backend,
    ray_model,
    ray_options,
    report,
    uses_ray,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    box = sub.add_parser(
        "boxes-to-masks",
        help="a mask for every box of a COCO file (a detector's boxes, a box-labelled dataset)",
        allow_abbrev=False,
    )
    add_label_source(
        box,
        "COCO JSON whose annotations have a bbox, a folder of YOLO, Pascal VOC or LabelMe "
        "label files, or a Label Studio JSON export (read as `convert ... --to coco` reads them)",
    )
    box.add_argument(
        "-o", "--output", required=True, help="output folder: annotations.json, parts/ (a rerun goes on)"
    )
    box.add_argument(
        "--mask-id", help="1-3: which of SAM's three candidate masks (default: single-mask output)"
    )
    box.add_argument("--input-size-percent", default=100, help="1-100: shrink before encoding (default 100)")
    box.add_argument("--overlays", action="store_true", help="also write OUT/overlays/<file_name>.png")
    add_model_args(box)
    add_backend_args(box)
    add_ray_args(box, batch_size=True)
    box.set_defaults(func=_boxes_to_masks)

    con = sub.add_parser(
        "convert",
        help="COCO JSON with RLE masks to COCO polygons, YOLO or LabelMe labels, mask PNGs, label maps or Label Studio tasks; "
        "YOLO, VOC or LabelMe labels or a Label Studio export to COCO",
        allow_abbrev=False,
    )
    con.add_argument(
        "source",
        help="COCO JSON (`everything`'s annotations.json, a --json file, the UI's export), or a "
        "folder of YOLO (.txt), Pascal VOC (.xml) or LabelMe (.json) label files or a Label Studio "
        "JSON export (with --to coco)",
    )
    con.add_argument(
        "--to",
        required=True,
        choices=[
            "coco-polygon",
            "yolo",
            "labelme",
            "masks",
            "label-maps",
            "instance-maps",
            "label-studio",
            "coco",
        ],
        help="coco-polygon: one JSON file; yolo: a folder of labels/FILE.txt per image and classes.txt; "
        "labelme: a folder of FILE.json per image (never overwritten); masks: a folder of FILE/ID.png "
        "per annotation (RLE or polygons, 255 inside; each image's folder replaced whole); label-maps: a "
        "folder of FILE.png per image, pixel = class (0 background, i the i-th category by id; "
        "classes.txt names them; never overwritten); instance-maps: the same with pixel = the image's "
        "k-th annotation (instances.json names them); label-studio: one JSON file of Label Studio tasks "
        "with brush masks, and its labeling config beside it (NAME.label_config.xml); coco: a folder of YOLO, VOC "
        "or LabelMe labels (boxes, polygons, masks) as one COCO JSON file",
    )
    con.add_argument(
        "--out",
        required=True,
        help="the JSON file (coco-polygon, label-studio, coco) or folder (yolo, labelme, masks, label-maps, instance-maps) "
        "to write",
    )
    con.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="simplify outlines by up to this many pixels; 0: exact, every pixel corner (default 1)",
    )
    con.add_argument(
        "--images",
        help="label files: the folder of their images (labels/a/x.txt, .xml or .json goes with "
        "images/a/x.jpg); --to labelme: where the images are, for each file's imagePath "
        "(default: beside the files); a Label Studio export: where its images are, checked and "
        "their sizes read (optional: the regions carry their image's size)",
    )
    con.add_argument(
        "--classes",
        help="label files: the class names in order, classes.txt (one per line) or a dataset YAML's "
        "names (default, YOLO: classes.txt beside or inside the labels folder, else numbers; VOC, "
        "LabelMe: the names found, sorted)",
    )
    con.add_argument(
        "--overwrite",
        action="store_true",
        help="label-maps, instance-maps: replace the label maps there (one-channel PNGs only; "
        "default: refuse, --out may hold the images)",
    )
    con.add_argument(
        "--image-root",
        help="label-studio: put before each file_name to make the task's image URL (default "
        "/data/local-files/?d=, Label Studio's local files; or http://host/images/); a Label Studio "
        "export --to coco: the start of its image URLs to strip, leaving the file names",
    )
    con.add_argument(
        "--as-annotations",
        action="store_true",
        help="label-studio: write the masks as the tasks' annotations (finished work) instead of "
        "predictions (pre-annotations to review)",
    )
    con.set_defaults(func=_convert)


def _boxes_to_masks(args: argparse.Namespace) -> int:
    from ..box_job import BoxJob

    on_ray = uses_ray(args)  # the options first
    options = {"mask_id": args.mask_id, "input_size_percent": args.input_size_percent}
    job = BoxJob(  # input checked here
        args.source, args.images, args.output, options, overlays=args.overlays, classes=args.classes
    )
    if on_ray:
        from ..ray_engine import boxes_to_masks_on_ray

        return report(boxes_to_masks_on_ray(job, ray_model(args), ray_options(args)))
    return report(job.run(backend(args)))


def _convert(args: argparse.Namespace) -> int:
    from ..convert import convert

    if args.overwrite and args.to not in ("label-maps", "instance-maps"):
        raise MobileSAMError(
            f"--overwrite replaces label maps (--to label-maps, instance-maps), not --to {args.to}"
        )
    if args.to == "coco":
        if args.tolerance is not None:
            raise MobileSAMError(
                "--tolerance simplifies traced masks; label files' polygons are taken as they are"
            )
        done = convert(
            args.source,
            args.to,
            args.out,
            images=args.images,
            classes=args.classes,
            image_root=args.image_root,
        )
        named = "named by number" if done.source == "yolo" else "named in the files"
        notes = [f"class names from {done.classes}" if done.classes else f"classes {named}"]
        if done.left_out:
            kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(done.left_out.items()))
            what = "left out" if done.source == "label-studio" else "shapes left out, not regions"
            notes.append(f"{sum(done.left_out.values())} {what}: {kinds}")
        kind = {
            "yolo": "YOLO labels",
            "voc": "Pascal VOC labels",
            "labelme": "LabelMe labels",
            "label-studio": "a Label Studio export",
        }
        print(
            f"coco: {done.annotations} objects of {done.images} images in {args.out} "
            f"(from {kind[done.source]}; {'; '.join(notes)})"
        )
        return 0
    if args.to in ("masks", "label-maps", "instance-maps", "label-studio") and args.tolerance is not None:
        raise MobileSAMError(
            f"--tolerance simplifies traced outlines; --to {args.to} writes the masks as they are"
        )
    tolerance = 1.0 if args.tolerance is None else args.tolerance
    done = convert(
        args.source,
        args.to,
        args.out,
        tolerance,
        images=args.images,
        classes=args.classes,
        overwrite=args.overwrite,
        image_root=args.image_root,
        as_annotations=args.as_annotations,
    )
    why = "no pixel to draw" if args.to == "label-studio" else "no polygon"
    notes = [f"{done.empty} empty masks left out: {why}"] if done.empty else []
    if done.crowd:
        kept = {
            "coco-polygon": "kept as RLE",
            "labelme": "drawn as polygons",
            "masks": "written as masks",
            "label-maps": "painted with their class",
            "instance-maps": "painted as instances",
            "label-studio": "drawn as brush masks",
        }.get(args.to, "left out")
        notes.append(f"{done.crowd} crowd regions {kept}")
    note = f" ({'; '.join(notes)})" if notes else ""
    print(
        f"{args.to}: {done.annotations} masks of {done.images} images, {len(done.files)} files in {args.out}{note}"
    )
    return 0
