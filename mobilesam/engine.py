"""Inference replayed from CUDA graphs, optionally compiled: the GPU engine of `SamPredictor`.

On a GPU, MobileSAM's encoder and decoder are small enough that launching their
hundreds of kernels one by one from Python costs more than running them. `Engine`
records each computation once as a CUDA graph (per input shape) and replays it:
- the encoder at its static input (1 or B x 3 x S x S);
- the prompt encoder + mask decoder per (prompt kinds, points per set, multimask), with
  the number of prompt sets rounded up to a bucket (1, 2, 4, ..., 64; more are done 64
  at a time): the last set is repeated to fill the bucket and the extra rows dropped,
  so a handful of graphs serve every request.
`compile=True` also runs both through `torch.compile` (inductor) before capture.

The same kernels run as without the engine, so results are those of the eager model
(to float rounding where a bucket changes the batch size of a matmul). Off the GPU
nothing is captured and the calls run eagerly, bucketing included: the CPU tests
exercise everything but the capture itself.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import nn

from .modeling.sam import Sam
from .weights_state import WeightsState, unchanged

BUCKETS = (1, 2, 4, 8, 16, 32, 64)
WARMUP_RUNS = 3  # eager runs on a side stream before capture (cuDNN/cuBLAS choose kernels)


def bucket(n: int) -> int:
    """The smallest bucket that holds n prompt sets (n <= BUCKETS[-1])."""
    for size in BUCKETS:
        if n <= size:
            return size
    raise ValueError(f"{n} prompt sets: more than the largest bucket ({BUCKETS[-1]})")


def pad_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    """x with its last row repeated until it has `size` rows."""
    extra = size - len(x)
    return x if extra == 0 else torch.cat([x, x[-1:].expand(extra, *x.shape[1:])])


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: tuple[torch.Tensor, ...]


class GraphCache:
    """Runs `fn(*tensors) -> tuple of tensors`; on CUDA with `capture`, from one CUDA graph
    per (name, input shapes and dtypes), recorded at the first call and replayed after
    (inputs copied into the graph's own buffers, outputs cloned out of them)."""

    def __init__(self, capture: bool = True) -> None:
        self.capture = capture
        self._graphs: dict[Hashable, _Graph] = {}
        self._pool = None

    def __len__(self) -> int:
        """How many graphs were captured."""
        return sum(entry is not None for entry in self._graphs.values())

    @property
    def failed(self) -> list[Hashable]:
        """Names of the calls that could not be captured and run eagerly."""
        return [key[0] for key, entry in self._graphs.items() if entry is None]

    def run(self, name: Hashable, fn: Callable, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not (self.capture and inputs[0].is_cuda):
            return fn(*inputs)
        key = (name, *((tuple(x.shape), x.dtype, x.device) for x in inputs))
        if key not in self._graphs:
            try:
                self._graphs[key] = self._record(fn, inputs)
            except RuntimeError as exc:  # an operation that cannot be captured: stay eager
                warnings.warn(f"CUDA graph capture of {name} failed, running it eagerly: {exc}", stacklevel=2)
                self._graphs[key] = None
        entry = self._graphs[key]
        if entry is None:
            return fn(*inputs)
        for static, x in zip(entry.inputs, inputs):
            static.copy_(x)
        entry.graph.replay()
        return tuple(out.clone() for out in entry.outputs)

    def _record(self, fn: Callable, inputs: tuple[torch.Tensor, ...]) -> _Graph:
        static = [x.clone() for x in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                fn(*static)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()  # one memory pool for every graph
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            outputs = fn(*static)
        return _Graph(graph, static, outputs)


class Engine:
    """The encoder and the prompt decoder of `model`, through a `GraphCache`.

    graphs: capture CUDA graphs (on CUDA; eager elsewhere). compile: `torch.compile`
    both first (`compile_backend`, default inductor; minutes of compilation per new
    shape on a CPU, tens of seconds on a GPU).
    """

    def __init__(
        self, model: Sam, graphs: bool = True, compile: bool = False, compile_backend: str = "inductor"
    ) -> None:
        self.model = model
        self.graphs = GraphCache(capture=graphs)
        self._weights: dict[str, WeightsState] = {}  # per stage: the weights its graphs read
        encode, decode = self._encode_eager, self._decode_eager
        if compile:
            encode = torch.compile(encode, dynamic=False, backend=compile_backend)
            decode = torch.compile(decode, dynamic=False, backend=compile_backend)
        self._encode_fn, self._decode_fn = encode, decode

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed Bx3xSxS float images -> float32 embeddings Bx256x(S/16)x(S/16), in
        the encoder's own dtype inside (bfloat16 weights run in bfloat16)."""
        self._forget_graphs_if_weights_changed("encode", self.model.image_encoder)
        return self.graphs.run("encode", self._encode_fn, images)[0]

    def _forget_graphs_if_weights_changed(self, stage: str, *modules: nn.Module) -> None:
        """A graph reads the weights' memory as it was at capture: once `modules`' weights
        have other memory or were replaced (`.to()`, a swapped layer, see `WeightsState`),
        every graph is dropped and captured again at its next call. Weights changed in
        place need nothing: the graphs read them as they are."""
        state = self._weights.get(stage)
        if not unchanged(state, *modules):
            if state is not None:
                self.graphs = GraphCache(capture=self.graphs.capture)
            self._weights[stage] = WeightsState(*modules, versions=False)

    def decode(
        self,
        features: torch.Tensor,
        image_pe: torch.Tensor,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`SamPredictor.decode` without a mask input: B prompt sets (BxNx2 points and BxN
        labels, and/or Bx4 boxes, in the model frame) -> logits BxCx256x256, scores BxC."""
        self._forget_graphs_if_weights_changed("decode", self.model.prompt_encoder, self.model.mask_decoder)
        prompts = [x for x in (coords, labels, boxes) if x is not None]
        kinds = (coords is not None, boxes is not None, multimask)
        n = len(prompts[0])
        if n == 0:
            return self._decode_eager(kinds, features, image_pe, *prompts)
        fn = functools.partial(self._decode_fn, kinds)
        low_res, scores = [], []
        for start in range(0, n, BUCKETS[-1]):
            part = [x[start : start + BUCKETS[-1]] for x in prompts]
            m = len(part[0])
            part = [pad_rows(x, bucket(m)) for x in part]
            logits, iou = self.graphs.run(("decode", kinds), fn, features, image_pe, *part)
            low_res.append(logits[:m])
            scores.append(iou[:m])
        if len(low_res) == 1:
            return low_res[0], scores[0]
        return torch.cat(low_res), torch.cat(scores)

    def _encode_eager(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        encoder = self.model.image_encoder
        dtype = next(encoder.parameters()).dtype
        return (encoder(images.to(dtype)).float(),)

    def _decode_eager(
        self, kinds: tuple[bool, bool, bool], features: torch.Tensor, image_pe: torch.Tensor, *prompts
    ) -> tuple[torch.Tensor, torch.Tensor]:
        has_points, has_box, multimask = kinds
        points = (prompts[0], prompts[1]) if has_points else None
        boxes = prompts[-1] if has_box else None
        sparse, dense = self.model.prompt_encoder(points, boxes, None)
        return self.model.mask_decoder(features, image_pe, sparse, dense, multimask)
