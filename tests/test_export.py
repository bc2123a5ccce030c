"""ONNX export: checked files, segment-anything's decoder interface, parity in onnxruntime."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import IMAGES, synthetic_state_dict
from PIL import Image

from mobilesam import MobileSAMError, PromptError, SamPredictor, build_sam
from mobilesam.cli import main
from mobilesam.export.onnx import encoder_description, export_onnx, weights_digest
from mobilesam.onnx_predictor import OnnxPredictor, check_pair, session
from mobilesam.utils.regions import mask_iou

pytestmark = pytest.mark.slow  # every test here exports (about 25 s once per module)

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(ckpt_vit_t, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    assert (
        main(["export", "onnx", "--checkpoint", str(ckpt_vit_t), "--out", str(out), "--quantize", "int8"])
        == 0
    )
    return out


@pytest.fixture(scope="module")
def truck_setup(sam_vit_t):
    image = np.asarray(Image.open(IMAGES / "truck.jpg").convert("RGB"))
    predictor = SamPredictor(sam_vit_t)
    predictor.set_image(image)
    x = predictor.model.preprocess(
        torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)[None].float()
    )
    return image, predictor, x.numpy()


def _feed(embedding, coords, labels, size):
    return {
        "image_embeddings": embedding,
        "point_coords": np.asarray(coords, np.float32)[None],
        "point_labels": np.asarray(labels, np.float32)[None],
        "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.asarray(size, np.float32),
    }


def _close(ours, ref):
    assert np.abs(ours.reshape(ref.shape) - ref).max() <= 1e-3 * max(1.0, float(np.abs(ref).max()))


def test_files_and_metadata(exported, ckpt_vit_t):
    import onnx

    for name in ("encoder", "decoder", "decoder_batch", "encoder.int8", "decoder.int8", "decoder_batch.int8"):
        name += ".onnx"
        onnx.checker.check_model(str(exported / name))
    meta = json.loads((exported / "metadata.json").read_text())
    assert meta["opset"] == 18 and meta["model_type"] == "vit_t"
    assert meta["source_sha256"] == __import__("hashlib").sha256(ckpt_vit_t.read_bytes()).hexdigest()
    assert meta["int8"] == {
        "encoder_int8": "encoder.int8.onnx",
        "decoder_int8": "decoder.int8.onnx",
        "decoder_batch_int8": "decoder_batch.int8.onnx",
    }
    # encoder + 2 decoder runs x 3 outputs + 2 batch decoder runs x 2 outputs
    assert len(meta["checks_max_abs_diff"]) == 11
    assert meta["encoder"]["output"] == "image_embeddings: 1x256x64x64 float32"
    check_pair(exported / "encoder.onnx", exported / "decoder.onnx")


def test_encoder_description_follows_the_input_size():
    """metadata.json describes the encoder of the size exported (it said 64x64 for every size)."""
    small = build_sam("vit_t", img_size=256)
    assert encoder_description(small) == {
        "input": "image: 1x3x256x256 float32, RGB resized so the longest side is 256, "
        "(x - pixel_mean) / pixel_std, zero-padded at the bottom and right",
        "output": "image_embeddings: 1x256x16x16 float32",
    }
    raw = encoder_description(small, "uint8")
    assert raw["input"].startswith("image: HxWx3 uint8 RGB 0-255, any size") and raw["output"].endswith(
        "16x16 float32"
    )


def test_decoder_interface_is_segment_anythings(exported):
    dec = session(exported / "decoder.onnx")
    inputs = {i.name: i for i in dec.get_inputs()}
    assert list(inputs) == [
        "image_embeddings",
        "point_coords",
        "point_labels",
        "mask_input",
        "has_mask_input",
        "orig_im_size",
    ]
    assert all(i.type == "tensor(float)" for i in inputs.values())
    assert inputs["image_embeddings"].shape == [1, 256, 64, 64]
    assert inputs["point_coords"].shape[:1] == [1] and isinstance(inputs["point_coords"].shape[1], str)
    assert isinstance(inputs["point_labels"].shape[1], str) and inputs["orig_im_size"].shape == [2]
    assert [o.name for o in dec.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]


def test_web_demo_feed_matches_the_official_outputs(exported, truck_setup, parity_cases, expected):
    """Fed as SAM's web demo does (a click plus a padding point, or box corners labelled 2/3):
    the fixture's expected low-res logits and scores from the official code."""
    image, predictor, x = truck_setup
    enc, dec = session(exported / "encoder.onnx"), session(exported / "decoder.onnx")
    embedding = enc.run(None, {"image": x})[0]
    _close(embedding[0, :, ::8, ::8], expected["embedding_truck.jpg"])
    t = predictor.transform
    cases = {c["name"]: c["args"] for c in parity_cases}
    for name in ("point_fg", "points_fg_bg", "box_and_point"):
        args = cases[name]
        coords = t.apply_coords(np.array(args["point_coords"], float), image.shape[:2])
        labels = list(args["point_labels"])
        if "box" in args:
            coords = np.concatenate(
                [coords, t.apply_boxes(np.array(args["box"]), image.shape[:2]).reshape(2, 2)]
            )
            labels += [2, 3]
        else:
            coords, labels = np.concatenate([coords, [[0.0, 0.0]]]), [*labels, -1]
        masks, scores, low_res = dec.run(None, _feed(embedding, coords, labels, image.shape[:2]))
        sel = slice(1, None) if args["multimask_output"] else slice(0, 1)
        _close(low_res[0, sel], expected[f"{name}/low_res_logits"])
        assert np.abs(scores[0, sel] - expected[f"{name}/iou_predictions"]).max() <= 1e-3
        assert masks.shape[-2:] == image.shape[:2]


def test_int8_runs_and_agrees(exported, truck_setup):
    """Bounds set below what was measured on the fixture's point prompts (synthetic weights):
    int8 decoder min mask IoU 0.95-0.98, int8 encoder 0.83-0.95 against float32."""
    image, predictor, x = truck_setup
    coords = np.concatenate(
        [predictor.transform.apply_coords(np.array([[500.0, 375.0]]), image.shape[:2]), [[0, 0]]]
    )
    runs = {}
    for enc_name, dec_name in (
        ("encoder", "decoder"),
        ("encoder", "decoder.int8"),
        ("encoder.int8", "decoder"),
    ):
        emb = session(exported / f"{enc_name}.onnx").run(None, {"image": x})[0]
        masks = session(exported / f"{dec_name}.onnx").run(
            None, _feed(emb, coords, [1, -1], image.shape[:2])
        )[0]
        runs[(enc_name, dec_name)] = masks[0] > 0
    ref = runs[("encoder", "decoder")]

    def min_iou(other):
        return min((a & b).sum() / max((a | b).sum(), 1) for a, b in zip(ref, other))

    assert min_iou(runs[("encoder", "decoder.int8")]) >= 0.9
    assert min_iou(runs[("encoder.int8", "decoder")]) >= 0.75


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_raw_image_encoder_and_single_mask(tmp_path, sam_vit_t, dtype):
    """The raw-image encoder: uint8, or float32 0-255 as samexporter-style clients feed it."""
    report = export_onnx(sam_vit_t, tmp_path, raw_image_encoder=dtype, return_single_mask=True)
    assert sum(k.startswith("encoder[") for k in report.checks) == 2  # two image sizes checked
    enc, dec = session(report.files["encoder"]), session(report.files["decoder"])
    assert enc.get_inputs()[0].type == f"tensor({'float' if dtype == 'float32' else 'uint8'})"
    image = np.asarray(Image.open(IMAGES / "picture1.jpg").convert("RGB"))
    embedding = enc.run(None, {"image": image.astype(dtype)})[0]
    onnx_predictor = OnnxPredictor(tmp_path)  # takes uint8 images whatever the encoder's input type
    onnx_predictor.set_image(image)
    assert np.array_equal(onnx_predictor.get_image_embedding(), embedding)
    predictor = SamPredictor(sam_vit_t)
    predictor.set_image(image)
    ref = predictor.get_image_embedding().numpy()
    # The in-graph resize (antialiased bilinear on floats) differs from Pillow's uint8
    # resize in the Python path: 0.26% of the embedding's range measured.
    assert np.abs(embedding - ref).max() <= 1e-2 * np.abs(ref).max()
    masks, scores, _ = dec.run(None, _feed(embedding, [[300.0, 400.0], [0, 0]], [1, -1], image.shape[:2]))
    assert masks.shape == (1, 1, 770, 769) and scores.shape == (1, 1)
    # Single-mask selection as SAM's SamOnnxModel: a box alone is two tokens, fewer than
    # three, so the best-scored candidate comes back, not the single-mask token.
    box = np.array([100, 150, 500, 600])
    candidates, cand_scores, _ = predictor.predict(box=box, multimask_output=True)
    got = onnx_predictor.predict(box=box, multimask_output=False)[0]
    assert got.shape == (1, 770, 769) and mask_iou(got[0], candidates[np.argmax(cand_scores)]) >= 0.99
    with pytest.raises(PromptError, match="mask_id 2: this export's decoder returns one mask"):
        onnx_predictor.segment(image, input_point=[[300, 400]], mask_id=2)  # not silently the one
    # A 1x2307 strip: the in-graph resize and crop keep 1 pixel across (rounding gives 0)
    strip = np.tile(image[:1], (1, 3, 1))
    onnx_predictor.set_image(strip)
    predictor.set_image(strip)
    ref_strip = predictor.predict(box=np.array([0, 0, 2307, 1]), multimask_output=True)
    got = onnx_predictor.predict(box=np.array([0, 0, 2307, 1]), multimask_output=False)[0]
    assert got.shape == (1, 1, 2307) and mask_iou(got[0], ref_strip[0][np.argmax(ref_strip[1])]) >= 0.99
    if dtype == "float32":
        _samexporter_single_mask(report.files, predictor)


def _samexporter_single_mask(files, predictor) -> None:
    """samexporter's runtime on a float32 raw-image encoder (its `--use-preprocess` input:
    it resizes with PIL and feeds HxWx3 float32) and a single-mask decoder. That decoder
    picks as SAM's SamOnnxModel does: the best-scored of the three candidates for fewer
    than three tokens (one point + padding), the single-mask token otherwise."""
    sam_onnx = pytest.importorskip("samexporter.sam_onnx")
    cv2 = pytest.importorskip("cv2")
    client = sam_onnx.SegmentAnythingONNX(str(files["encoder"]), str(files["decoder"]))
    assert client.encoder_input_rank == 3
    bgr = cv2.imread(str(IMAGES / "truck.jpg"))
    embedding = client.encode(bgr)
    predictor.set_image(np.ascontiguousarray(bgr[..., ::-1]))
    ref = predictor.get_image_embedding().numpy()
    assert np.abs(embedding["image_embedding"] - ref).max() <= 1e-4 * np.abs(ref).max()
    for marks, kwargs in _samexporter_cases(bgr):
        theirs = client.predict_masks(embedding, marks)[0] > 0
        assert theirs.shape == (1, *bgr.shape[:2])
        if len(kwargs["point_coords"]) == 1 and "box" not in kwargs:
            masks, scores, _ = predictor.predict(**kwargs, multimask_output=True)
            expected = masks[np.argmax(scores)]
        else:
            expected = predictor.predict(**kwargs, multimask_output=False)[0][0]
        assert mask_iou(theirs[0], expected) >= 0.999


def test_vit_encoder_exports(tmp_path):
    """SAM's ViT (the teachers, `export onnx --model-type vit_b/l/h`) exports: windowed
    blocks on a grid that needs window padding, and a global one. Its export failed in the
    exporter's decomposition of the attention output's reshape; a small ViT shows it."""
    from mobilesam.export.onnx import _export
    from mobilesam.modeling.image_encoder import ImageEncoderViT

    encoder = ImageEncoderViT(
        img_size=96, embed_dim=32, depth=2, num_heads=2, window_size=4, global_attn_indexes=(1,)
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    x = torch.randn(1, 3, 96, 96, generator=g)
    _export(encoder.eval(), (x,), tmp_path / "vit.onnx", 18, input_names=["image"])
    ours = session(tmp_path / "vit.onnx").run(None, {"image": x.numpy()})[0]
    _close(ours, encoder(x).detach().numpy())


def test_bad_inputs(tmp_path, exported, sam_vit_t):
    (tmp_path / "x.onnx").write_text("not a model")
    with pytest.raises(MobileSAMError, match="not a loadable ONNX model"):
        session(tmp_path / "x.onnx")
    with pytest.raises(MobileSAMError, match="not found"):
        session(tmp_path / "missing.onnx")
    with pytest.raises(MobileSAMError, match="--quantize int8"):
        session(tmp_path / "encoder.int8.onnx")
    with pytest.raises(MobileSAMError, match="opset 13 is not supported"):
        export_onnx(sam_vit_t, tmp_path / "o", opset=13)
    with pytest.raises(MobileSAMError, match=r"shape \[1, 256, 16, 16\], but .* expects \[1, 256, 64, 64\]"):
        check_pair(_encoder_of_a_256_px_model(tmp_path / "enc256.onnx"), exported / "decoder.onnx")
    with pytest.raises(MobileSAMError, match=r"enc256\.onnx outputs .*/decoder\.onnx expects"):  # by path
        check_pair(session(tmp_path / "enc256.onnx"), session(exported / "decoder.onnx"))
    with pytest.raises(MobileSAMError, match="decoder inputs"):
        check_pair(exported / "encoder.onnx", exported / "encoder.onnx")
    # the digest that keeps exports apart covers the input size, not only the weights
    small = build_sam("vit_t", img_size=256)
    small.load_state_dict(synthetic_state_dict("vit_t", img_size=256))
    meta = json.loads((exported / "metadata.json").read_text())
    assert weights_digest(small) != weights_digest(sam_vit_t) == meta["weights_sha256"]


def _encoder_of_a_256_px_model(path):
    """An encoder.onnx with the interface a 256-px model exports (a 16x16 embedding), made
    with onnx.helper in milliseconds where exporting one took 13 s of the test run."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    embedding = numpy_helper.from_array(np.zeros((1, 256, 16, 16), np.float32))
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["image_embeddings"], value=embedding)],
        "encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 256, 256])],
        [helper.make_tensor_value_info("image_embeddings", TensorProto.FLOAT, [1, 256, 16, 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, str(path))
    return path


def test_files_of_two_exports_are_not_mixed(tmp_path, exported):
    """A decoder.onnx copied in from another export of the same shapes: refused by name."""
    import shutil

    import onnx

    mixed = tmp_path / "mixed"
    shutil.copytree(exported, mixed)
    model = onnx.load(str(mixed / "decoder.onnx"))
    model.metadata_props[0].value = "0" * 64  # what another checkpoint's export records
    onnx.save(model, str(mixed / "decoder.onnx"))
    with pytest.raises(MobileSAMError, match=r"different exports.*decoder\.onnx: 000000000000"):
        OnnxPredictor(mixed)
    OnnxPredictor(exported)  # one export: fine


def test_onnx_predictor_matches_sam_predictor(exported, truck_setup):
    """SamPredictor's numpy API on the exported files: same masks, scores and logits."""
    image, predictor, _ = truck_setup
    onnx_predictor = OnnxPredictor(exported, threads=2)
    onnx_predictor.set_image(image)
    assert onnx_predictor.original_size == predictor.original_size
    assert onnx_predictor.input_size == predictor.input_size
    prompts = [
        {"point_coords": np.array([[500, 375]]), "point_labels": np.array([1])},
        {
            "point_coords": np.array([[500, 375], [1125, 625]]),
            "point_labels": np.array([1, 0]),
            "multimask_output": False,
        },
        {"box": np.array([425, 600, 700, 875]), "multimask_output": False},
        {
            "box": np.array([425, 600, 700, 875]),
            "point_coords": np.array([[575, 750]]),
            "point_labels": np.array([1]),
        },
    ]
    for kwargs in prompts:
        ref_masks, ref_scores, ref_low = predictor.predict(**kwargs)
        masks, scores, low = onnx_predictor.predict(**kwargs)
        assert masks.shape == ref_masks.shape and masks.dtype == bool
        _close(low, ref_low)
        assert np.abs(scores - ref_scores).max() <= 1e-3
        for a, b in zip(masks, ref_masks):
            assert np.logical_and(a, b).sum() >= 0.999 * np.logical_or(a, b).sum()
    # a mask prompt from the previous answer, as interactive tools do
    _, scores, low = onnx_predictor.predict(point_coords=np.array([[500, 375]]), point_labels=np.array([1]))
    kwargs = {
        "point_coords": np.array([[500, 375]]),
        "point_labels": np.array([1]),
        "multimask_output": False,
    }
    ref = predictor.predict(mask_input=low[np.argmax(scores)][None], **kwargs)[2]
    _close(onnx_predictor.predict(mask_input=low[np.argmax(scores)][None], **kwargs)[2], ref)


def _samexporter_cases(bgr: np.ndarray):
    """(samexporter prompt marks, the same tokens for SamPredictor.predict): one point,
    a point pair, and a box. samexporter appends its padding point to every prompt, boxes
    included, so a box is compared with SamPredictor given the box and that padding point."""
    h, w = bgr.shape[:2]
    fg, bg, box = [0.3 * w, 0.4 * h], [0.6 * w, 0.5 * h], [0.1 * w, 0.2 * h, 0.8 * w, 0.7 * h]
    pad = {"point_coords": np.array([[0.0, 0.0]]), "point_labels": np.array([-1])}
    return [
        (
            [{"type": "point", "data": fg, "label": 1}],
            {"point_coords": np.array([fg]), "point_labels": np.array([1])},
        ),
        (
            [{"type": "point", "data": fg, "label": 1}, {"type": "point", "data": bg, "label": 0}],
            {"point_coords": np.array([fg, bg]), "point_labels": np.array([1, 0])},
        ),
        ([{"type": "rectangle", "data": box}], {"box": np.array(box), **pad}),
    ]


def test_samexporter_runtime_on_our_export(exported, sam_vit_t):
    """samexporter's SAM runtime (0.5.0 as published; the runtime AnyLabeling-style tools
    use), unmodified, on `mobilesam export onnx` files: its masks are SamPredictor's.
    Landscape and portrait images, its own PIL resize and OpenCV mask upsampling."""
    sam_onnx = pytest.importorskip("samexporter.sam_onnx")
    cv2 = pytest.importorskip("cv2")
    client = sam_onnx.SegmentAnythingONNX(str(exported / "encoder.onnx"), str(exported / "decoder.onnx"))
    truck = cv2.imread(str(IMAGES / "truck.jpg"))
    predictor = SamPredictor(sam_vit_t)
    for bgr in (truck, cv2.rotate(truck, cv2.ROTATE_90_CLOCKWISE)):
        embedding = client.encode(bgr)
        predictor.set_image(np.ascontiguousarray(bgr[..., ::-1]))
        ref = predictor.get_image_embedding().numpy()
        assert np.abs(embedding["image_embedding"] - ref).max() <= 1e-4 * np.abs(ref).max()
        for marks, kwargs in _samexporter_cases(bgr):
            theirs = client.predict_masks(embedding, marks)[0] > 0  # SAM's 4 masks, token 0 first
            assert theirs.shape == (4, *bgr.shape[:2])
            single = predictor.predict(**kwargs, multimask_output=False)[0]
            multi = predictor.predict(**kwargs, multimask_output=True)[0]
            # OpenCV's bilinear upsampling against torch's: a few pixels in millions (<= 8 measured)
            for a, b in zip(theirs, np.concatenate([single, multi])):
                assert mask_iou(a, b) >= 0.999


def test_onnx_predictor_errors(exported, tmp_path):
    p = OnnxPredictor(exported)
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="uint8"):
        p.set_image(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(MobileSAMError, match="not found"):
        OnnxPredictor(tmp_path)


TORCH_FREE_SCRIPT = """
import sys
import numpy as np
from PIL import Image
from mobilesam import OnnxPredictor
predictor = OnnxPredictor(sys.argv[1])
predictor.set_image(np.asarray(Image.open(sys.argv[2]).convert("RGB")))
masks, scores, _ = predictor.predict(box=np.array([425, 600, 700, 875]), multimask_output=False)
np.save(sys.argv[3], masks)
try:
    import torch  # noqa: F401
    print("torch is installed")
except ImportError:
    print("no torch")
"""


def test_prompted_segmentation_without_torch(exported, truck_setup, tmp_path):
    """A fresh virtual environment with `.[runtime]`: numpy, Pillow, onnxruntime, no torch."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"
    py = venv / "bin" / "python"
    uv = shutil.which(
        "uv", path=str(Path(sys.executable).parent)
    )  # .ci/run installs it: 2 s against pip's 13
    if uv:
        subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True, timeout=120)
        subprocess.run(
            [uv, "pip", "install", "-q", "--python", str(py), f"{root}[runtime]"], check=True, timeout=900
        )
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"{root}[runtime]"], check=True, timeout=900)
    (tmp_path / "run.py").write_text(TORCH_FREE_SCRIPT)
    out = subprocess.run(
        [
            str(py),
            str(tmp_path / "run.py"),
            str(exported),
            str(IMAGES / "truck.jpg"),
            str(tmp_path / "m.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "no torch"
    cli = subprocess.run(
        [str(venv / "bin" / "mobilesam"), "segment", str(IMAGES / "truck.jpg"), "--box", "1,2,3,4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 2 and "needs PyTorch" in cli.stderr and "Traceback" not in cli.stderr
    cli = subprocess.run(
        [
            str(venv / "bin" / "mobilesam"),
            "segment",
            str(IMAGES / "truck.jpg"),
            "--backend",
            "onnx",
            "--onnx",
            str(exported),
            "--box",
            "[[425, 600, 700, 875], [1240, 675, 1400, 750]]",
            "--json",
            str(tmp_path / "r.json"),
            "-o",
            str(tmp_path / "r.png"),
            "--cutout",
            str(tmp_path / "cut.png"),
            "--soft",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    assert len(json.loads((tmp_path / "r.json").read_text())["annotations"]) == 2
    alpha = np.asarray(Image.open(tmp_path / "cut.png"))[..., 3]
    assert ((alpha > 0) & (alpha < 255)).any()  # the model's soft edge, without torch
    predictor = truck_setup[1]
    ref = predictor.predict(box=np.array([425, 600, 700, 875]), multimask_output=False)[0]
    masks = np.load(tmp_path / "m.npy")
    assert np.logical_and(masks, ref).sum() >= 0.999 * np.logical_or(masks, ref).sum()


def test_onnx_backend_segment_matches_torch(exported, ckpt_vit_t):
    """OnnxPredictor.segment: MobileSAM.segment's parameters and results on the ONNX files."""
    from mobilesam import MobileSAM

    torch_sam, onnx_sam = MobileSAM(ckpt_vit_t, device="cpu"), OnnxPredictor(exported)
    # what folder and box jobs record: the export's model, size and weights checksum
    meta = json.loads((exported / "metadata.json").read_text())
    assert (
        onnx_sam.model_record()
        == onnx_sam.segmenter.model_record()
        == {
            "backend": "onnx",
            "model_type": "vit_t",
            "img_size": 1024,
            "precision": "float32",
            "weights_sha256": meta["weights_sha256"],
        }
    )
    assert OnnxPredictor(exported, int8=True).segmenter.model_record()["precision"] == "int8"
    truck = IMAGES / "truck.jpg"
    calls = [
        {"input_box": "[[425, 600, 700, 875], [1240, 675, 1400, 750]]"},
        {"input_point": [[500, 375]]},
        {"input_point": [[500, 375], [1125, 625]], "input_point_label": [1, 0], "mask_id": "2"},
        {"input_box": [425, 600, 700, 875], "input_point": [[575, 750]], "input_size_percent": 50},
    ]
    first = torch_sam.segment(truck, input_point=[[500, 375]])
    calls.append({"input_point": [[500, 375], [1125, 625]], "input_point_label": [1, 0], "mask_input": first})
    calls.append({"input_box": "[[425, 600, 700, 875], [1240, 675, 1400, 750]]", "mask_input": first})
    for kwargs in calls:
        ours, ref = onnx_sam.segment(truck, **kwargs), torch_sam.segment(truck, **kwargs)
        assert ours.masks.shape == ref.masks.shape and list(ours.mask_ids) == list(ref.mask_ids), kwargs
        # The fixture README's rules (measured: IoU >= 0.99999, logits within 3.2e-4).
        assert np.abs(ours.scores - ref.scores).max() <= 1e-3
        tol = 1e-3 * max(1.0, float(np.abs(ref.low_res_logits).max()))
        assert np.abs(ours.low_res_logits - ref.low_res_logits).max() <= tol
        for a, b in zip(ours.masks, ref.masks):
            assert np.logical_and(a, b).sum() >= 0.999 * np.logical_or(a, b).sum(), kwargs
        assert ours.logits_input_size == ref.logits_input_size
        soft, hard = ours.soft_mask(0), ref.soft_mask(0)  # the soft edge, torch-free
        assert np.array_equal(soft >= 128, ours.masks[0])
        assert (np.abs(soft.astype(int) - hard) <= 1).mean() >= 0.999, kwargs
    # One implementation of the high-level API: the same rules and the same fallbacks.
    for sam in (onnx_sam, torch_sam):
        with pytest.raises(PromptError, match="mask_id needs a point or box"):
            sam.segment(truck, mask_id=2)
        with pytest.raises(PromptError, match="segment-everything options, given with prompts"):
            sam.segment(truck, input_point=[[500, 375]], points_per_side=4)
    ours, ref = onnx_sam.segment(truck, points_per_side=4), torch_sam.segment(truck, points_per_side=4)
    assert len(ours) == len(ref) and np.abs(ours.scores - ref.scores).max() <= 1e-3


def test_automatic_generator_on_onnx_matches_official(exported, parity_cases):
    """Segment everything with the ONNX files (decoder_batch.onnx): the parity fixture's
    automatic cases, held to the same rules as the torch generator."""
    from test_amg import check_automatic_cases

    check_automatic_cases(OnnxPredictor(exported), parity_cases)


def test_batch_decoder_matches_single_decoder(exported, truck_setup):
    """decoder_batch.onnx gives what decoder.onnx gives, prompt set by prompt set."""
    image, _, _ = truck_setup
    onnx = OnnxPredictor(exported)
    onnx.set_image(image)
    coords = np.array([[[300.0, 400.0], [0.0, 0.0]], [[100.0, 200.0], [500.0, 600.0]]], np.float32)
    labels = np.array([[1.0, -1.0], [2.0, 3.0]], np.float32)
    iou, low = onnx.decode_batch(coords, labels)
    assert iou.shape == (2, 4) and low.shape == (2, 4, 256, 256)
    for i in range(2):
        ref = onnx.decoder.run(None, _feed(onnx.features, coords[i], labels[i], (1200, 1800)))
        _close(iou[i], ref[1][0])
        _close(low[i], ref[2][0])


def test_cli_everything_on_onnx_and_an_old_export(exported, tmp_path, capsys):
    image = str(IMAGES / "picture1.jpg")
    args = ["everything", image, "--backend", "onnx", "--onnx", str(exported), "--points-per-side", "8"]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    anns = json.loads((tmp_path / "a.json").read_text())["annotations"]
    reference = OnnxPredictor(exported).segment_everything(image, points_per_side=8)
    assert len(anns) == len(reference.masks) > 0
    # An export from before decoder_batch.onnx: prompted segmentation works, everything says why not.
    old = tmp_path / "old"
    old.mkdir()
    for name in ("encoder.onnx", "decoder.onnx", "metadata.json"):
        (old / name).write_bytes((exported / name).read_bytes())
    assert main(["everything", image, "--backend", "onnx", "--onnx", str(old)]) == 2
    assert "decoder_batch.onnx" in capsys.readouterr().err
    # A broken metadata.json, or one of another export, is said as such (not a JSON or
    # onnxruntime error at the first image)
    meta = json.loads((exported / "metadata.json").read_text())
    for text, match in (
        ("{", r"metadata\.json is unreadable .*export again"),
        ("[]", "not a JSON object"),
        (
            json.dumps({**meta, "img_size": 512}),
            "encoder.onnx takes 1024x1024 images, metadata.json says img_size 512",
        ),
    ):
        (old / "metadata.json").write_text(text)
        with pytest.raises(MobileSAMError, match=match):
            OnnxPredictor(old)
