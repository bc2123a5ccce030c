"""`ExecuTorchPredictor`: SamPredictor's numpy API on the programs `mobilesam export
executorch` writes, run by ExecuTorch's runtime on XNNPACK, as a phone runs them.

Reads a folder with encoder.pte (or encoder.int8.pte), decoder.pte and metadata.json; every file's SHA-256 must be the one metadata.json records, so programs of
two exports are never mixed. The decoders end at the low-resolution logits; the
upsampling to the image is segment-anything's (`modeling.sam.upscale_masks`), in PyTorch,
which ExecuTorch needs anyway. Needs the `executorch` extra.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import torch  # ExecuTorch's runtime takes and returns torch tensors (and needs torch installed)

from .errors import MobileSAMError, PromptError, missing_extra
from .exported_predictor import ExportedPredictor, read_metadata
from .weights import sha256_of

PROGRAM_ID = b"ET12"  # the flatbuffer file identifier of an ExecuTorch program (bytes 4-8)
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")


def _runtime():
    try:
        from executorch.runtime import Runtime
    except ImportError:
        raise missing_extra("executorch", "executorch") from None
    return Runtime.get()


def load_method(path: str | PathLike, name: str = "forward"):
    """An ExecuTorch program's method, with clear errors for a missing extra, a missing
    file, and a file that is not a loadable program."""
    runtime = _runtime()
    path = Path(path)
    if not path.is_file():
        raise MobileSAMError(f"ExecuTorch program not found: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] != PROGRAM_ID:
        raise MobileSAMError(f"{path} is not an ExecuTorch program (.pte)")
    try:
        return runtime.load_program(path).load_method(name)
    except (RuntimeError, ValueError) as exc:
        raise MobileSAMError(f"{path} is not a loadable ExecuTorch program: {exc}") from exc


def set_threads(threads: int) -> None:
    """ExecuTorch's thread pool (one per process) to `threads` threads."""
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(int(threads))


class ExecuTorchPredictor(ExportedPredictor):
    """`SamPredictor`'s numpy API and the ExecuTorch backend of `backend.Predictor`.

    pte_dir: the folder `mobilesam export executorch` wrote; int8: its encoder.int8.pte
    (with the float32 decoders); threads: ExecuTorch's thread pool size (process-wide).
    """

    def __init__(self, pte_dir: str | PathLike, threads: int | None = None, int8: bool = False) -> None:
        _runtime()  # a missing extra is the first thing to say
        folder = Path(pte_dir)
        if not (folder / "metadata.json").is_file():
            raise MobileSAMError(
                f"{folder} has no metadata.json: give the folder `mobilesam export executorch` wrote"
            )
        meta = read_metadata(folder, "mobilesam export executorch")
        if meta.get("format") != "executorch":
            raise MobileSAMError(
                f"{folder} is not an ExecuTorch export (metadata.json format: {meta.get('format')})"
            )
        try:
            encoder = meta["encoder"].get("int8") if int8 else meta["encoder"]["file"]
            names, max_points = (encoder, meta["decoder"]["file"]), int(meta["max_points"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MobileSAMError(
                f"{folder}/metadata.json lacks the programs' description ({exc!r}): export again"
            ) from None
        if not encoder:
            raise MobileSAMError(f"{folder} has no int8 encoder: export with `--quantize int8`")
        _check_files(folder, names, meta.get("files_sha256", {}))
        if threads:
            set_threads(threads)
        self.encoder, self.decoder = (load_method(folder / n) for n in names)
        self.max_points = max_points
        self._configure(meta, "executorch", int8)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self.encoder.execute([torch.from_numpy(x)])[0].numpy()

    def _run_decoder(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from .modeling.sam import upscale_masks

        iou, low_res = self._low_res(feed)
        out = tuple(int(v) for v in feed["orig_im_size"])
        input_size = self.transform.get_preprocess_shape(*out, self.img_size)
        masks = upscale_masks(torch.from_numpy(low_res), input_size, out, self.img_size)
        return masks.numpy(), iou, low_res

    def _run_batch_decoder(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One decoder.pte run per prompt set, without a mask input."""
        coords, labels = feed["point_coords"], feed["point_labels"]
        none = {
            "mask_input": np.zeros((1, 1, self.img_size // 4, self.img_size // 4), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
        }
        runs = [
            self._low_res(
                {
                    "image_embeddings": feed["image_embeddings"],
                    "point_coords": c[None],
                    "point_labels": lab[None],
                    **none,
                }
            )
            for c, lab in zip(coords, labels)
        ]
        if not runs:  # no prompt sets
            h, w = feed["image_embeddings"].shape[2:]
            return np.zeros((0, 4), np.float32), np.zeros((0, 4, 4 * h, 4 * w), np.float32)
        return np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])

    def _low_res(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """decoder.pte on one prompt set -> iou_predictions 1x4, low_res_masks 1x4x256x256."""
        n = feed["point_coords"].shape[1]
        if n > self.max_points:
            raise PromptError(
                f"{n} points (box corners included) in one prompt; these programs take at most {self.max_points}"
            )
        inputs = [torch.from_numpy(np.ascontiguousarray(feed[k], np.float32)) for k in DECODER_INPUTS]
        iou, low_res = self.decoder.execute(inputs)
        return iou.numpy(), low_res.numpy()


def _check_files(folder: Path, names: tuple[str, ...], expected: dict[str, str]) -> None:
    """Each program must be the file this export wrote (SHA-256 in metadata.json)."""
    for name in names:
        path = folder / name
        if not path.is_file():
            raise MobileSAMError(f"ExecuTorch program not found: {path}")
        want = expected.get(name)
        if want is None:
            raise MobileSAMError(f"metadata.json in {folder} records no checksum for {name}: export again")
        if sha256_of(path) != want:
            raise MobileSAMError(
                f"{path} is not the file this export wrote (SHA-256 differs from metadata.json): "
                "programs of different exports are mixed, or the file changed; export again into one folder"
            )
