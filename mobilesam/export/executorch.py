"""Export MobileSAM (or SAM) as ExecuTorch programs for phones, check them, quantise to int8.

    export_executorch(sam, "out/")  ->  out/encoder.pte, out/decoder.pte, out/metadata.json
                                        (+ out/encoder.int8.pte with quantize="int8")

ExecuTorch is PyTorch's on-device runtime; every program is lowered to XNNPACK, its CPU
backend on Android and iOS. Conventions as the ONNX files (mobilesam/export/onnx.py),
except that the decoders end at the low-resolution logits (`LowResDecoder`):

- encoder.pte: `image` 1x3xSxS float32 (resized, normalised, padded) -> 1x256x(S/16)x(S/16).
- decoder.pte: `image_embeddings`, `point_coords` 1xNx2, `point_labels` 1xN, `mask_input`
  1x1x256x256, `has_mask_input` 1 (N from 1 to MAX_POINTS) -> `iou_predictions` 1x4,
  `low_res_masks` 1x4x256x256, all four mask tokens (single-mask first).

There is no batch decoder: one decoder.pte run per prompt set costs about 45 ms here and
a batch of 16 sets 37 ms per set (measured), not worth a third program to lower and ship.

int8 (the encoder): PyTorch's PT2E flow with the XNNPACK quantizer, static per-channel
int8 weights and per-tensor int8 activations, calibrated on a few images. Only linear
layers and dense convolutions are quantised (`_quantizable` says which and why):
quantised additions fail to compile in XNNPACK here, and the rest cost accuracy for
little speed (measured, docs/executorch.md). Every program is run in ExecuTorch's
runtime against PyTorch after writing. Needs the `executorch` extra.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import source_sha256
from ..errors import MobileSAMError, missing_extra
from ..executorch_predictor import DECODER_INPUTS, load_method
from ..image_io import ImageSource, load_image
from ..modeling.sam import Sam
from ..transforms import ResizeLongestSide
from ..utils.files import atomic_write_bytes, atomic_write_text, check_output_dir
from ..weights import sha256_of
from .modules import EncoderOnnx, LowResDecoder, folded_copy, mobile_copy
from .onnx import check_close, decoder_inputs, encoder_description, weights_digest

MAX_POINTS = 64  # points (box corners and padding included) per decoder.pte run
DECODER_OUTPUTS = ("iou_predictions", "low_res_masks")
INT8_MAX_REL_ERROR = 0.3  # an int8 encoder further than this from float32 (relative L2) is broken


def _require_executorch():
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise missing_extra("executorch", "executorch") from None
    return to_edge_transform_and_lower, XnnpackPartitioner


def _lower(ep: torch.export.ExportedProgram):
    """The program in ExecuTorch's edge dialect, lowered to XNNPACK where it takes it."""
    to_edge, partitioner = _require_executorch()
    return to_edge(ep, transform_passes=[_for_xnnpack], partitioner=[partitioner()])


def _for_xnnpack(graph_module: torch.fx.GraphModule):
    """Two rewrites of the edge graph before XNNPACK takes its pieces, neither changing a
    number. A reshape whose target has one symbolic size (the decoder's prompt-token
    count) infers it (-1) instead: XNNPACK's reshape refuses symbolic sizes and infers
    one. An expand to the shape its input already has is dropped: a copy outside the
    delegate. Each cut the decoder: 48 XNNPACK partitions without them, 5 with (the
    rest: the prompt encoding's comparisons and two slices; docs/performance.md)."""
    from executorch.exir.dialects._ops import ops as exir_ops
    from torch.fx.passes.infra.pass_base import PassResult

    view, expand = exir_ops.edge.aten.view_copy.default, exir_ops.edge.aten.expand_copy.default
    changed = False
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target == view:
            shape = list(node.args[1])
            symbolic = [i for i, size in enumerate(shape) if not isinstance(size, int)]
            if len(symbolic) == 1 and -1 not in shape and 0 not in shape:  # -1 of 0 elements is ambiguous
                shape[symbolic[0]] = -1
                node.args = (node.args[0], shape)
                changed = True
        elif node.target == expand:
            before, after = node.args[0].meta.get("val"), node.meta.get("val")
            if before is not None and after is not None and before.shape == after.shape:
                node.replace_all_uses_with(node.args[0])
                graph_module.graph.erase_node(node)
                changed = True
    graph_module.graph.eliminate_dead_code()
    graph_module.recompile()
    return PassResult(graph_module, changed)


def _partitions(edge) -> int:
    """How many pieces of the program XNNPACK runs (the rest runs ExecuTorch's portable kernels)."""
    nodes = edge.exported_program().graph.nodes
    return sum(n.op == "call_function" and "executorch_call_delegate" in str(n.target) for n in nodes)


def export_executorch(
    sam: Sam,
    out_dir: str | PathLike,
    quantize: str | None = None,
    calibration: Sequence[ImageSource] | None = None,
    checkpoint: str | PathLike | None = None,
    model_type: str = "vit_t",
) -> dict:
    """Write the programs and metadata.json into `out_dir`; returns the metadata (files,
    checks). calibration: images for the int8 encoder's activation ranges (paths, arrays
    ...; default: `default_calibration()`, generated, for which real photos are better)."""
    _require_executorch()  # the missing extra said before any work
    if quantize not in (None, "int8"):
        raise MobileSAMError(f"quantize must be 'int8' or nothing, got {quantize!r}")
    if quantize and calibration is not None and len(calibration) == 0:
        raise MobileSAMError("int8 needs at least one calibration image")
    out = check_output_dir(out_dir)
    digest = weights_digest(sam)
    reference = folded_copy(sam.cpu())  # the plain PyTorch path the programs are checked against
    mobile = mobile_copy(sam.cpu())
    g = torch.Generator().manual_seed(0)
    dim = torch.export.Dim
    points = dim("num_points", min=1, max=MAX_POINTS)
    programs = {
        "encoder.pte": (
            EncoderOnnx(mobile),
            EncoderOnnx(reference),
            (torch.randn(1, 3, sam.img_size, sam.img_size, generator=g),),
            None,
        ),
        "decoder.pte": (
            LowResDecoder(mobile),
            LowResDecoder(reference),
            tuple(decoder_inputs(sam, 5, (1, 1), seed=0).values())[:5],
            (None, {1: points}, {1: points}, None, None),
        ),
    }
    checks: dict[str, float] = {}
    files: dict[str, str] = {}
    partitions: dict[str, int] = {}
    for name, (module, ref, example, dynamic) in programs.items():
        with torch.no_grad():
            ep = torch.export.export(module.eval(), example, dynamic_shapes=dynamic)
        edge = _lower(ep)
        partitions[name] = _partitions(edge)
        _write(edge, out / name)
        method = load_method(out / name)
        for i, inputs in enumerate(_check_inputs(sam, name, g)):
            with torch.no_grad():
                want = ref.eval()(*inputs)
            got = method.execute(list(inputs))
            for j, (a, b) in enumerate(zip(got, want if isinstance(want, tuple) else (want,))):
                checks[f"{name}[{i}].{j}"] = check_close("ExecuTorch", f"{name} output {j}", a, b)
        files[name] = sha256_of(out / name)

    if quantize == "int8":
        name = "encoder.int8.pte"
        module, ref, example, _ = programs["encoder.pte"]
        images = calibration if calibration is not None else default_calibration()
        inputs = [(_preprocess(sam, load_image(x)),) for x in images]
        edge = _lower(_quantized(module.eval(), inputs, example))
        partitions[name] = _partitions(edge)
        _write(edge, out / name)
        x = inputs[0][0]  # checked on the first calibration image
        with torch.no_grad():
            want = ref(x)
        got = load_method(out / name).execute([x])[0]
        rel = float((got - want).norm() / want.norm())
        if not rel <= INT8_MAX_REL_ERROR:
            raise MobileSAMError(f"the int8 encoder is {rel:.2f} (relative) from float32: calibration failed")
        checks[f"{name} relative error"] = rel
        files[name] = sha256_of(out / name)

    import executorch

    meta = {
        "format": "executorch",
        "model_type": model_type,
        "source_checkpoint": str(checkpoint) if checkpoint else None,
        "source_sha256": source_sha256(checkpoint) if checkpoint else None,
        "img_size": sam.img_size,
        "pixel_mean": sam.pixel_mean.flatten().tolist(),
        "pixel_std": sam.pixel_std.flatten().tolist(),
        "backend": "XNNPACK",
        "xnnpack_partitions": partitions,
        "encoder": {
            "file": "encoder.pte",
            "int8": "encoder.int8.pte" if quantize else None,
            **encoder_description(sam),
        },
        "decoder": {
            "file": "decoder.pte",
            "inputs": list(DECODER_INPUTS),
            "outputs": list(DECODER_OUTPUTS),
            "point_coords": f"1xNx2 float32, (x, y) in the resized {sam.img_size}-pixel frame, 1 <= N <= {MAX_POINTS}",
            "point_labels": "1xN float32: 1 foreground, 0 background, -1 padding, 2/3 box corners",
            "outputs_note": "all four mask tokens (single-mask first), low resolution: upsample to "
            f"{sam.img_size}x{sam.img_size}, crop to the resized image, upsample to the original size",
        },
        "max_points": MAX_POINTS,
        "weights_sha256": digest,
        "files_sha256": files,
        "checks": checks,
        "torch": torch.__version__,
        "executorch": getattr(executorch, "__version__", "unknown"),
    }
    atomic_write_text(out / "metadata.json", json.dumps(meta, indent=2))
    return meta


def _write(edge, path: Path) -> None:
    program = edge.to_executorch()
    atomic_write_bytes(path, program.buffer)


def _check_inputs(sam: Sam, name: str, g: torch.Generator) -> list[tuple[torch.Tensor, ...]]:
    """Inputs other than the export's examples (other point counts)."""
    if name == "encoder.pte":
        return [(torch.randn(1, 3, sam.img_size, sam.img_size, generator=g),)]
    return [tuple(decoder_inputs(sam, n, (1, 1), seed).values())[:5] for n, seed in ((2, 1), (7, 2))]


def _preprocess(sam: Sam, image: np.ndarray) -> torch.Tensor:
    resized = ResizeLongestSide(sam.img_size).apply_image(image)
    return sam.preprocess(torch.from_numpy(resized).permute(2, 0, 1)[None].float())


def _quantized(module: torch.nn.Module, calibration: list[tuple], example: tuple):
    """`module` exported with int8 convolutions and linear layers, calibrated on `calibration`."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with torch.no_grad():
        model = torch.export.export(module, example).module()
        chosen = _quantizable(model.graph)
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        # Weights and biases are not call_function nodes: they pass, with their operation.
        quantizer.set_filter_function(lambda node: node.op != "call_function" or node in chosen)
        model = prepare_pt2e(model, quantizer)
        for inputs in calibration:
            model(*inputs)
        return torch.export.export(convert_pt2e(model), example)


def _quantizable(graph: torch.fx.Graph) -> set:
    """The convolutions and linear layers to quantise. Left in float32, as measured on the
    fixture's weights (docs/executorch.md): depthwise convolutions (int8 there cost mask
    IoU and gained no speed), the patch embedding (the image itself), and any layer whose
    output reaches a padding through reshapes only (TinyViT's window padding after a
    stage's patch merging: XNNPACK fails to compile that int8 padding)."""
    aten = torch.ops.aten
    shape_ops = {aten.view.default, aten.reshape.default, aten.permute.default, aten.transpose.int}
    shape_ops |= {aten.flatten.using_ints, aten.contiguous.default}
    pads = {aten.pad.default, aten.constant_pad_nd.default}

    def reaches_pad(node: torch.fx.Node) -> bool:
        return any(u.target in pads or (u.target in shape_ops and reaches_pad(u)) for u in node.users)

    def depthwise(node: torch.fx.Node) -> bool:
        return node.target == aten.conv2d.default and node.args[1].meta["val"].shape[1] == 1

    def in_patch_embed(node: torch.fx.Node) -> bool:
        return any(path.endswith("patch_embed") for path, _ in node.meta.get("nn_module_stack", {}).values())

    gemms = {aten.conv2d.default, aten.linear.default}
    chosen = (n for n in graph.nodes if n.target in gemms)
    return {n for n in chosen if not (depthwise(n) or in_patch_embed(n) or reaches_pad(n))}


def default_calibration(n: int = 4, size: int = 768, seed: int = 0) -> list[np.ndarray]:
    """Generated stand-ins for photos: smooth colour fields with shapes and edges. Real
    photos of the user's domain calibrate better (`--calibration`)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(field).resize((size * 4 // 3, size), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = rng.integers(0, size, 2)
            w, h = rng.integers(20, size // 2, 2)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((int(x0), int(y0), int(x0 + w), int(y0 + h)), fill=colour)
        noise = rng.normal(0, 6, (size, size * 4 // 3, 3))
        images.append(np.clip(np.asarray(img, np.float64) + noise, 0, 255).astype(np.uint8))
    return images
