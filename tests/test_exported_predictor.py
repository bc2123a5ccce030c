"""The code the onnxruntime and ExecuTorch predictors share (`ExportedPredictor`), on a
model of another input size than 1024, with the exported files replaced by their torch
twins: no export needed, so any size is cheap to check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import IMAGES, synthetic_state_dict
from PIL import Image

from mobilesam import PromptError, SamPredictor, build_sam
from mobilesam.exported_predictor import ExportedPredictor
from mobilesam.utils.onnx import SamOnnxModel


class TorchTwin(ExportedPredictor):
    """ExportedPredictor whose encoder.onnx / decoder.onnx are the modules they export."""

    def __init__(self, sam) -> None:
        self.sam, self.decoder = sam, SamOnnxModel(sam, return_single_mask=False)
        self._configure({"img_size": sam.image_encoder.img_size}, "twin", int8=False)

    @torch.no_grad()
    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self.sam.image_encoder(torch.as_tensor(x)).numpy()

    @torch.no_grad()
    def _run_decoder(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        return tuple(t.numpy() for t in self.decoder(**{k: torch.as_tensor(v) for k, v in feed.items()}))


def test_a_256_px_model_answers_as_sam_predictor():
    """Its low-res masks are 64x64, not 256x256: the mask prompt the decoder takes too."""
    sam = build_sam("vit_t", img_size=256)
    sam.load_state_dict(synthetic_state_dict("vit_t", img_size=256))
    image = np.asarray(Image.open(IMAGES / "truck.jpg").convert("RGB"))
    ref, twin = SamPredictor(sam), TorchTwin(sam)
    ref.set_image(image)
    twin.set_image(image)
    assert np.abs(twin.get_image_embedding() - ref.get_image_embedding().numpy()).max() < 1e-4
    point = {"point_coords": np.array([[500, 375]]), "point_labels": np.array([1])}
    for kwargs in (point, {"box": np.array([425, 600, 700, 875]), "multimask_output": False}):
        masks, scores, low = twin.predict(**kwargs)
        ref_masks, ref_scores, ref_low = ref.predict(**kwargs)
        assert low.shape[-2:] == (64, 64) and masks.shape == ref_masks.shape
        assert np.abs(scores - ref_scores).max() < 1e-4 and np.abs(low - ref_low).max() < 1e-3
    best = low[np.argmax(scores)][None]
    masks, _, low = twin.predict(**point, mask_input=best, multimask_output=False)
    ref_masks, _, ref_low = ref.predict(**point, mask_input=best, multimask_output=False)
    assert np.abs(low - ref_low).max() < 1e-3
    assert (masks == ref_masks).mean() > 0.999
    # The mask prompt as HxW or 1x1xHxW too; another side, or a box of 3 numbers, is a
    # PromptError from both (not a reshape or conv2d error).
    for predictor in (twin, ref):
        for shape in ((64, 64), (1, 1, 64, 64)):
            again = predictor.predict(**point, mask_input=best.reshape(shape), multimask_output=False)[2]
            assert np.array_equal(
                again, predictor.predict(**point, mask_input=best, multimask_output=False)[2]
            )
        for bad in (np.zeros((1, 256, 256)), np.zeros((2, 64, 64)), np.full((1, 64, 64), np.nan)):
            with pytest.raises(PromptError, match="mask_input"):
                predictor.predict(**point, mask_input=bad)
        with pytest.raises(PromptError, match="box must hold 4 numbers"):
            predictor.predict(box=[1, 2, 3])
