"""The `mobilesam` command end to end on a generated checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import IMAGES, SMALL
from PIL import Image

from mobilesam.cli import main

TRUCK = str(IMAGES / "truck.jpg")


def test_segment_boxes_to_files(ckpt_vit_t, tmp_path, capsys):
    rc = main(
        [
            "segment",
            TRUCK,
            "--box",
            "[[425, 600, 700, 875], [1240, 675, 1400, 750]]",
            "--box",
            "1375,550,1650,800",
            "--checkpoint",
            str(ckpt_vit_t),
            "--img-size",
            str(SMALL),
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "o.png"),
            "--masks-dir",
            str(tmp_path / "m"),
            "--json",
            str(tmp_path / "m.json"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("mask ") == 3
    assert Image.open(tmp_path / "o.png").size == (1800, 1200)
    assert len(list((tmp_path / "m").glob("mask_*.png"))) == 3
    assert len(json.loads((tmp_path / "m.json").read_text())["annotations"]) == 3
    # A detector's empty box list (`--box '[]'`, also beside other boxes) adds no mask.
    rc = main(
        ["segment", TRUCK, "--box", "[]", "--checkpoint", str(ckpt_vit_t), "--json", str(tmp_path / "0.json")]
    )
    assert rc == 0 and "mask " not in capsys.readouterr().out
    assert json.loads((tmp_path / "0.json").read_text())["annotations"] == []
    assert main(["segment", TRUCK, "--box", "[]", "--box", "1,2,30,40", "--checkpoint", str(ckpt_vit_t)]) == 0
    assert capsys.readouterr().out.count("mask ") == 1


def test_segment_cutout_and_grown_masks(ckpt_vit_t, tmp_path, capsys):
    """Photo and inpainting tools: the object on transparency, its mask grown by a margin."""
    import numpy as np

    args = [
        "segment",
        TRUCK,
        "--box",
        "425,600,700,875",
        "--checkpoint",
        str(ckpt_vit_t),
        "--img-size",
        str(SMALL),
    ]
    assert main([*args, "--cutout", str(tmp_path / "car.png"), "--masks-dir", str(tmp_path / "m")]) == 0
    assert (
        main(
            [
                *args,
                "--cutout",
                str(tmp_path / "big.png"),
                "--masks-dir",
                str(tmp_path / "g"),
                "--dilate",
                "9",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("cutout: ") == 2
    mask, grown = (np.asarray(Image.open(tmp_path / d / "mask_000.png")) > 0 for d in ("m", "g"))
    assert grown.sum() > mask.sum() and (grown | mask).sum() == grown.sum()
    for cut, m in ((tmp_path / "car.png", mask), (tmp_path / "big.png", grown)):
        rgba = np.asarray(Image.open(cut))
        ys, xs = np.nonzero(m)
        assert rgba.shape == (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1, 4)
        assert (rgba[..., 3] > 0).sum() == m.sum()
    assert main([*args, "--cutout", str(tmp_path / "soft.png"), "--feather", "2"]) == 0
    alpha = np.asarray(Image.open(tmp_path / "soft.png"))[..., 3]
    assert ((alpha > 0) & (alpha < 255)).any()  # a soft edge
    # The model's own soft edge: on the outline only, 128 or more exactly on the mask.
    soft = ["--cutout", str(tmp_path / "s.png"), "--masks-dir", str(tmp_path / "s"), "--soft"]
    assert main([*args, *soft, "--cutouts-dir", str(tmp_path / "sc")]) == 0
    assert (tmp_path / "sc" / "cutout_000.png").read_bytes() == (tmp_path / "s.png").read_bytes()
    matte = np.asarray(Image.open(tmp_path / "s" / "mask_000.png"))
    assert np.array_equal(matte >= 128, mask) and ((matte > 0) & (matte < 255)).any()
    ys, xs = np.nonzero(matte)
    crop = matte[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png"))[..., 3], crop)
    capsys.readouterr()
    for extra in (["--soft"], ["--soft", "--cutout", str(tmp_path / "d.png"), "--dilate", "3"]):
        assert main([*args, *extra]) == 2
        assert "--soft" in capsys.readouterr().err
    assert not (tmp_path / "d.png").exists()


def test_segment_refined_with_its_logits(ckpt_vit_t, tmp_path, capsys):
    """--logits writes the masks' low-res logits; --mask-input feeds them back as a mask
    prompt, as the API's mask_input; a bad file is an error before any compute."""
    import numpy as np

    from mobilesam import MobileSAM

    base = ["segment", TRUCK, "--checkpoint", str(ckpt_vit_t), "--img-size", str(SMALL)]
    assert main([*base, "--point", "500,375", "--logits", str(tmp_path / "l.npy")]) == 0
    logits = np.load(tmp_path / "l.npy")
    assert logits.shape == (1, SMALL // 4, SMALL // 4) and logits.dtype == np.float32
    refine = [*base, "--point", "500,375", "--point", "1125,625,0", "--mask-input", str(tmp_path / "l.npy")]
    assert main([*refine, "--json", str(tmp_path / "r.json")]) == 0
    sam = MobileSAM(ckpt_vit_t, device="cpu", img_size=SMALL)
    ref = sam.segment(
        TRUCK, input_point=[[500, 375], [1125, 625]], input_point_label=[1, 0], mask_input=logits
    )
    assert json.loads((tmp_path / "r.json").read_text())["annotations"][0]["area"] == int(ref.areas[0])
    (tmp_path / "junk.npy").write_text("not numpy")
    np.save(tmp_path / "text.npy", np.array(["a"]))
    capsys.readouterr()
    for bad, error in (
        ("missing.npy", "no such file"),
        ("junk.npy", "not a NumPy"),
        ("text.npy", "not numbers"),
    ):
        assert main([*refine[:-1], str(tmp_path / bad), "--json", str(tmp_path / "bad.json")]) == 2
        assert error in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()


def test_segment_points_mask_id_percent(ckpt_vit_t, tmp_path):
    common = ["--mask-id", "2", "--input-size-percent", "50", "--checkpoint", str(ckpt_vit_t)]
    common += ["--img-size", str(SMALL)]
    points = ["--point", "500,375", "--point", "1125,625,0"]
    assert main(["segment", TRUCK, *points, *common, "--json", str(tmp_path / "p.json")]) == 0
    ann = json.loads((tmp_path / "p.json").read_text())["annotations"][0]
    assert ann["mask_id"] == 2 and ann["prompt"]["labels"] == [1, 0]
    assert ann["segmentation"]["size"] == [1200, 1800]
    # The same points as one JSON list, as --box takes boxes: the same mask.
    listed = ["segment", TRUCK, "--point", "[[500, 375], [1125, 625, 0]]", "--point", "[]", *common]
    assert main([*listed, "--json", str(tmp_path / "j.json"), "--svg", str(tmp_path / "m.svg")]) == 0
    same = json.loads((tmp_path / "j.json").read_text())["annotations"][0]
    assert same["prompt"] == ann["prompt"] and same["segmentation"] == ann["segmentation"]
    # --svg: the mask as a vector path, its outline within 1 px (the default simplification).
    import re
    import xml.etree.ElementTree as ET

    import numpy as np

    from mobilesam.utils import rle
    from mobilesam.utils.polygons import fill_polygons

    (path,) = ET.parse(tmp_path / "m.svg").getroot()
    parts = [np.array(re.findall(r"(\d+) (\d+)", p), float) for p in path.get("d").split("Z") if p.strip()]
    mask, drawn = rle.decode(same["segmentation"]), fill_polygons(parts, (1200, 1800))
    assert path.get("id") == "mask-0" and (mask & drawn).sum() / (mask | drawn).sum() > 0.97


def test_bad_inputs_give_one_line_errors(ckpt_vit_t, tmp_path, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "x.pt").write_text("nope")
    ck = ["--checkpoint", str(ckpt_vit_t)]
    cases = [
        ([TRUCK, "--box", "700,600,425,875", *ck], "x1 < x0"),
        ([TRUCK, "--box", "1,2,3", *ck], "input_box"),
        ([TRUCK, "--point", "5", *ck], "--point"),
        ([TRUCK, "--point", "5,5,2", *ck], "input_point_label"),
        ([TRUCK, "--point", "[[5, 5, 1, 1]]", *ck], "x,y or x,y,label"),
        ([TRUCK, "--point", "[[5, 5]", *ck], "not valid JSON"),
        ([TRUCK, "--point", '{"x": 5}', *ck], "--point"),
        ([TRUCK, "--point", "[]", *ck], "no prompt"),
        ([TRUCK, "--point", "5000,5", *ck], "outside"),
        ([TRUCK, "--point", "5,5", "--mask-id", "7", *ck], "mask_id"),
        ([TRUCK, "--box", "1,2,3,4", "--input-size-percent", "200", *ck], "input_size_percent"),
        ([str(tmp_path / "bad.jpg"), "--box", "1,2,3,4", *ck], "bad.jpg"),
        ([TRUCK, "--box", "1,2,3,4", "--checkpoint", str(tmp_path / "x.pt")], "x.pt"),
        ([TRUCK, "--box", "1,2,3,4", "--device", "cuda", *ck], "cuda"),
        ([TRUCK, *ck], "no prompt"),
        (
            [TRUCK, "--box", "1,2,3,4", "--label-map", str(tmp_path / "l.jpg"), *ck],
            ".jpg cannot hold exact labels",
        ),
        ([TRUCK, "--box", "1,2,3,4", "--cutout", str(tmp_path / "c.jpg"), *ck], "cannot hold a transparent"),
        ([TRUCK, "--box", "1,2,3,4", "--dilate", "-2", *ck], "--dilate must be"),
        ([TRUCK, "--box", "1,2,3,4", "--feather", "-1", *ck], "--feather must be"),
        # an option with no output to shape is refused, not ignored
        (
            [TRUCK, "--box", "1,2,3,4", "--feather", "3", *ck],
            "--feather blurs the edge of --cutout: give --cutout",
        ),
        (
            [TRUCK, "--box", "1,2,3,4", "--dilate", "3", "-o", str(tmp_path / "o.png"), *ck],
            "--dilate grows the masks of --masks-dir, --cutouts-dir, --cutout: give one of them",
        ),
        # an option the backend does not use is refused, not ignored
        ([TRUCK, "--box", "1,2,3,4", "--int8", *ck], "--int8: not used by --backend torch"),
        (
            [TRUCK, "--box", "1,2,3,4", "--backend", "onnx", "--onnx", str(tmp_path), *ck, "--compile"],
            "--checkpoint, --compile: not used by --backend onnx",
        ),
        (
            [TRUCK, "--box", "1,2,3,4", "--backend", "onnx", "--onnx", "x", "--model-type", "vit_b"],
            "--model-type: not used by --backend onnx",
        ),
        (
            [TRUCK, "--box", "1,2,3,4", "--backend", "executorch", "--onnx", "x", "--precision", "bf16"],
            "--precision bf16, --onnx: not used by --backend executorch",
        ),
    ]
    for args, needle in cases:
        assert main(["segment", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("mobilesam: error:") and needle in err, (args, err)
        assert "Traceback" not in err


def test_console_script_runs(ckpt_vit_t, tmp_path):
    """The installed entry point, as a user runs it: no traceback on a bad prompt."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilesam.cli",
            "segment",
            TRUCK,
            "--box",
            "nan,1,2,3",
            "--checkpoint",
            str(ckpt_vit_t),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "NaN" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_table(ckpt_vit_t, tmp_path, capsys):
    Image.open(IMAGES / "picture1.jpg").resize((256, 256)).save(tmp_path / "small.png")
    args = [
        "bench",
        "--image",
        str(tmp_path / "small.png"),
        "--checkpoint",
        str(ckpt_vit_t),
        "--img-size",
        str(SMALL),
        "--repeats",
        "1",
    ]
    assert main([*args, "--no-onnx", "--no-everything"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| torch")]
    assert [r[2].strip() for r in rows] == ["encoder", "encoder", "decoder, 1 box", "full prompt"]
    assert [r[1].strip() for r in rows][:2] == ["float32", "bf16 (opt-in)"]
    assert 5.5 < float(rows[0][5]) < 6.5  # the 256-px encoder's 6.1 GFLOP (77 at 1024), counted


def test_everything_on_ray_gets_the_model_options(ckpt_vit_t, tmp_path, monkeypatch, capsys):
    """`everything --engine ray` hands --precision, --no-fast-paths, --compile and --img-size to the
    workers' models, and refuses --device and --threads (Ray's per-worker options decide
    those) rather than ignoring them. Ray itself is not started (tests/test_ray.py does)."""
    import mobilesam.ray_engine as ray_engine
    from mobilesam.batch import BatchSummary

    seen = {}

    def fake(job, model, options):
        seen.update(model=model, options=options)
        return BatchSummary(annotations_path=tmp_path / "out" / "annotations.json")

    monkeypatch.setattr(ray_engine, "segment_everything_on_ray", fake)
    args = ["everything", str(IMAGES), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt_vit_t)]
    args += ["--engine", "ray", "--gpus-per-worker", "1"]
    assert main([*args, "--precision", "bf16", "--no-fast-paths", "--compile", "--img-size", "512"]) == 0
    assert seen["model"] == {
        "checkpoint": str(ckpt_vit_t),
        "model_type": "vit_t",
        "precision": "bf16",
        "fast_paths": False,
        "compile": True,
        "img_size": 512,
    }
    assert seen["options"].gpus_per_worker == 1
    assert main(args) == 0
    assert (seen["model"]["fast_paths"], seen["model"]["compile"], seen["model"]["img_size"]) == (
        None,
        False,
        1024,
    )
    capsys.readouterr()
    assert main([*args, "--device", "cpu", "--threads", "1"]) != 0
    assert "--device, --threads: with --engine ray" in capsys.readouterr().err
    assert main([*args, "--int8"]) != 0  # the backend's own check holds with Ray too
    assert "--int8: not used by --backend torch" in capsys.readouterr().err
    assert (seen["options"].num_workers, seen["options"].cpus_per_worker, seen["options"].batch_size) == (
        1,
        1.0,
        4,
    )
    # Ray's options without --engine ray: refused, not ignored (the run was one process)
    local = [a for a in args if a not in ("--engine", "ray")]
    assert main([*local, "--num-workers", "4", "--address", "auto"]) == 2
    assert capsys.readouterr().err == (
        "mobilesam: error: --address, --num-workers, --gpus-per-worker: options of --engine ray "
        "(this run is one process)\n"
    )
    boxes = [
        "boxes-to-masks",
        str(tmp_path / "none.json"),
        "--images",
        str(IMAGES),
        "-o",
        str(tmp_path / "b"),
    ]
    assert main([*boxes, "--batch-size", "8"]) == 2
    assert "--batch-size: options of --engine ray" in capsys.readouterr().err


def test_export_builds_the_model_at_img_size(ckpt_vit_t, tmp_path, monkeypatch):
    """`export onnx --img-size 256` exports the 256-px model (its metadata and the
    exported predictors follow `sam.img_size`); the exporter itself is not run here."""
    from types import SimpleNamespace

    import mobilesam.export.onnx as onnx_export

    seen = {}

    def fake(sam, out, **kwargs):
        seen["img_size"] = sam.img_size
        return SimpleNamespace(files={}, checks={"encoder": 0.0})

    monkeypatch.setattr(onnx_export, "export_onnx", fake)
    args = ["export", "onnx", "--checkpoint", str(ckpt_vit_t), "--out", str(tmp_path / "o")]
    for given, built in (([], 1024), (["--img-size", "256"], 256)):
        assert main([*args, *given]) == 0 and seen.pop("img_size") == built


def test_convert_offers_every_target_the_converter_has():
    """`convert --to`'s choices are written out in cli/labels.py (importing convert there would
    put PIL into every command's start-up): they must stay `convert.FORMATS`."""
    import argparse

    from mobilesam.cli import build_parser
    from mobilesam.convert import FORMATS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    to = next(a for a in sub.choices["convert"]._actions if a.dest == "to")
    assert tuple(to.choices) == FORMATS


def test_distill_options_explain_themselves():
    """`distill train/finetune-decoder --help`: every config option with its meaning and
    default, from the config dataclass (one source for both)."""
    import dataclasses

    from mobilesam.cli import build_parser
    from mobilesam.cli.distill import FINETUNE_OPTIONS, TRAIN_OPTIONS
    from mobilesam.distill.config import FinetuneConfig, TrainConfig

    commands = build_parser()._subparsers._group_actions[0].choices["distill"]._subparsers._group_actions[0]
    for name, config, options in (
        ("train", TrainConfig, TRAIN_OPTIONS),
        ("finetune-decoder", FinetuneConfig, FINETUNE_OPTIONS),
    ):
        actions = {a.dest: a for a in commands.choices[name]._actions}
        fields = {f.name: f for f in dataclasses.fields(config)}
        assert len(options) >= 18
        for field in map(fields.get, options):
            text = actions[field.name].help
            assert text.startswith(field.metadata["help"].replace("%", "%%")), (name, field.name)
            assert (f"(default: {field.default})" in text) == (field.default is not None), (name, field.name)
