"""Small PyTorch programs of the kind KernelBench holds (level 1 ops, level 2 fused chains), for harvesting.

Each :class:`Program` is a plain function of tensors, the shapes it is harvested at and its dtypes. Inductor
bakes sizes and dtypes into the Triton source it generates (``dynamic=False``), so every (program, shape,
dtype) yields its own kernel texts. Shapes are chosen so no two shapes of one program have the same number
of elements (pointwise kernels flatten their iteration space, so equal sizes would give equal sources), and
they include ragged, non-power-of-two sizes. Matrix products are left out on purpose: Inductor hands them to
cuBLAS in its default mode, and only the Triton kernels around them are harvested.

Inputs are made by :meth:`Program.make_inputs`, in a value range where every program is finite (positive
values where a program takes a log or a square root, valid class indices for losses).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from kernelcast.exceptions import invalid_choice

Shape = tuple[int, ...]
InputMaker = Callable[[Shape, torch.dtype, torch.Generator, str], tuple[torch.Tensor, ...]]

DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32")


@dataclasses.dataclass(frozen=True)
class Program:
    """A small PyTorch program to compile with Inductor.

    Attributes
    ----------
    name : str
        Unique name, e.g. ``"layer_norm"``.
    fn : callable
        The program: a function of the tensors :attr:`inputs` makes.
    inputs : callable
        ``inputs(shape, dtype, generator, device)`` -> the input tensors of one shape.
    shapes : tuple of tuple of int
        The shapes it is harvested at; what a shape means is the program's own (see ``description``).
    description : str
        What it computes and what its shape means.
    dtypes : tuple of str
        Floating-point dtypes it is harvested in.
    """

    name: str
    fn: Callable[..., Any]
    inputs: InputMaker
    shapes: tuple[Shape, ...]
    description: str
    dtypes: tuple[str, ...] = DTYPES

    def make_inputs(self, shape: Sequence[int], dtype: str, *, device: str = "cpu",
                    seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Fresh inputs for ``shape`` in ``dtype`` on ``device``, reproducible from ``seed``."""
        gen = torch.Generator(device=device).manual_seed(seed)
        return self.inputs(tuple(shape), getattr(torch, dtype), gen, device)


# -- input makers -------------------------------------------------------------------------------------


def _randn(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=gen, device=device) * scale).to(dtype)


def _uniform(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str, lo: float,
             hi: float) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, device=device) * (hi - lo) + lo).to(dtype)


def _x(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    return (_randn(shape, dtype, gen, device),)


def _x_pos(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    return (_uniform(shape, dtype, gen, device, 0.05, 4.0),)


def _xy(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    return _randn(shape, dtype, gen, device), _randn(shape, dtype, gen, device)


def _xyz(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    return _randn(shape, dtype, gen, device), _randn(shape, dtype, gen, device), _randn(shape, dtype, gen, device)


def _x_row_params(n_params: int) -> InputMaker:
    """``x`` of the shape, then ``n_params`` vectors the size of its last dimension (weights near 1)."""

    def make(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
        params = [_randn((shape[-1],), dtype, gen, device, 0.1) + (1 if i == 0 else 0) for i in range(n_params)]
        return (_randn(shape, dtype, gen, device), *params)

    return make


def _xy_row_params(n_params: int) -> InputMaker:
    def make(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
        params = [_randn((shape[-1],), dtype, gen, device, 0.1) + (1 if i == 0 else 0) for i in range(n_params)]
        return (_randn(shape, dtype, gen, device), _randn(shape, dtype, gen, device), *params)

    return make


def _channel_params(n_params: int) -> InputMaker:
    """``x`` of shape (N, C, ...) and ``n_params`` per-channel vectors of length C."""

    def make(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
        params = [_randn((shape[1],), dtype, gen, device, 0.1) + (1 if i == 0 else 0) for i in range(n_params)]
        return (_randn(shape, dtype, gen, device), *params)

    return make


def _batch_norm_inputs(shape: Shape, dtype: torch.dtype, gen: torch.Generator,
                       device: str) -> tuple[torch.Tensor, ...]:
    c = shape[1]
    return (_randn(shape, dtype, gen, device), _randn((c,), dtype, gen, device, 0.1),
            _uniform((c,), dtype, gen, device, 0.5, 2.0), _randn((c,), dtype, gen, device, 0.1) + 1,
            _randn((c,), dtype, gen, device, 0.1))


def _logits_targets(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    rows, classes = shape
    target = torch.randint(0, classes, (rows,), generator=gen, device=device)
    return _randn(shape, dtype, gen, device), target


def _embedding_inputs(shape: Shape, dtype: torch.dtype, gen: torch.Generator,
                      device: str) -> tuple[torch.Tensor, ...]:
    tokens, dim = shape
    vocab = 1000 + tokens // 3
    idx = torch.randint(0, vocab, (tokens,), generator=gen, device=device)
    return _randn((vocab, dim), dtype, gen, device), idx, _randn((tokens, dim), dtype, gen, device, 0.1)


def _rope_inputs(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    _, seq, _, dim = shape
    angles = torch.rand((seq, dim // 2), generator=gen, device=device) * 6.28
    return _randn(shape, dtype, gen, device), angles.cos().to(dtype), angles.sin().to(dtype)


def _mask_inputs(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    mask = torch.rand(shape, generator=gen, device=device) > 0.3
    return _randn(shape, dtype, gen, device), _randn(shape, dtype, gen, device), mask


def _scores_bias(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    return _randn(shape, dtype, gen, device, 2.0), _randn(shape[-2:], dtype, gen, device)


def _adam_inputs(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    return (_randn(shape, dtype, gen, device), _randn(shape, dtype, gen, device, 0.01),
            _randn(shape, dtype, gen, device, 0.01), _uniform(shape, dtype, gen, device, 1e-4, 1e-2))


def _vectors(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    return _randn((shape[0],), dtype, gen, device), _randn((shape[1],), dtype, gen, device)


def _probabilities(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    return _randn(shape, dtype, gen, device), _randn(shape, dtype, gen, device)


def _binary_targets(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    return _randn(shape, dtype, gen, device), (torch.rand(shape, generator=gen, device=device) > 0.5).to(dtype)


def _signs(shape: Shape, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    sign = torch.where(torch.rand(shape, generator=gen, device=device) > 0.5, 1.0, -1.0)
    return _randn(shape, dtype, gen, device), sign.to(dtype)


# -- programs ------------------------------------------------------------------------------------------
# Shapes. Rows: (rows, columns) of a matrix; every shape has a different element count.
ROWS: tuple[Shape, ...] = ((64, 1000), (128, 4096), (256, 3000), (1000, 1000), (127, 4097), (1024, 768),
                           (4096, 1024), (2048, 5120), (32, 50257), (8192, 100))
ROWS_SMALL: tuple[Shape, ...] = ((64, 1000), (128, 4096), (256, 3000), (1000, 1000), (127, 4097), (1024, 768),
                                 (4096, 1024), (333, 2049), (32, 50257), (8192, 100))
ROWS_EVEN: tuple[Shape, ...] = ((64, 1000), (128, 4096), (256, 3000), (1000, 1000), (127, 4098), (1024, 768),
                                (4096, 1024), (2048, 5120), (32, 50258), (8192, 100))
# Images (N, C, H, W).
IMAGES: tuple[Shape, ...] = ((2, 32, 16, 16), (4, 64, 32, 32), (8, 32, 28, 28), (1, 128, 56, 56), (16, 16, 7, 7),
                             (2, 96, 35, 35), (4, 256, 13, 13), (1, 64, 112, 112), (8, 48, 9, 9), (2, 512, 8, 8))
# Sequences (batch, channels, length).
SEQUENCES: tuple[Shape, ...] = ((2, 64, 100), (4, 128, 256), (8, 32, 1000), (1, 512, 77), (16, 256, 64),
                                (2, 768, 197), (4, 96, 513), (32, 64, 130), (1, 1024, 1024), (3, 300, 300))
# Attention scores (batch, heads, queries, keys).
SCORES: tuple[Shape, ...] = ((1, 4, 128, 128), (2, 8, 256, 256), (1, 12, 197, 197), (4, 16, 64, 64),
                             (1, 16, 1024, 1024), (2, 4, 500, 500), (1, 32, 77, 77), (8, 8, 100, 128),
                             (1, 8, 2048, 512), (2, 12, 333, 333))
# Rotary embedding inputs (batch, sequence, heads, head dim).
ROPE: tuple[Shape, ...] = ((1, 128, 8, 64), (2, 256, 12, 64), (1, 1024, 16, 128), (4, 77, 8, 64),
                           (1, 2048, 32, 128), (8, 64, 4, 48), (2, 500, 8, 96), (1, 4096, 8, 32),
                           (3, 333, 6, 80), (16, 128, 2, 128))
# Logits (rows, classes).
LOGITS: tuple[Shape, ...] = ((64, 1000), (128, 4096), (256, 3000), (1000, 10), (127, 4097), (512, 32000),
                             (32, 50257), (4096, 129), (2048, 1000), (100, 120))
# Embedding lookups (tokens, dim).
TOKENS: tuple[Shape, ...] = ((128, 768), (512, 1024), (1000, 512), (77, 4096), (2048, 257), (4096, 64),
                             (333, 333), (8192, 128), (64, 2048), (1500, 100))


def gelu(x):  # noqa: ANN001, ANN201, D103 - the programs are plain functions of tensors
    return F.gelu(x)


def gelu_tanh(x):  # noqa: ANN001, ANN201, D103
    return F.gelu(x, approximate="tanh")


def silu(x):  # noqa: ANN001, ANN201, D103
    return F.silu(x)


def softplus(x):  # noqa: ANN001, ANN201, D103
    return F.softplus(x)


def hardswish(x):  # noqa: ANN001, ANN201, D103
    return F.hardswish(x)


def leaky_relu(x):  # noqa: ANN001, ANN201, D103
    return F.leaky_relu(x, 0.01)


def elu(x):  # noqa: ANN001, ANN201, D103
    return F.elu(x)


def mish(x):  # noqa: ANN001, ANN201, D103
    return F.mish(x)


def selu(x):  # noqa: ANN001, ANN201, D103
    return F.selu(x)


def tanh_sigmoid(x):  # noqa: ANN001, ANN201, D103
    return torch.tanh(x) * torch.sigmoid(x * 1.5)


def clamp_sigmoid(x):  # noqa: ANN001, ANN201, D103
    return torch.sigmoid(torch.clamp(x * 2.0, -3.0, 3.0)) * 2.0 - 1.0


def log_sqrt(x):  # noqa: ANN001, ANN201, D103
    return torch.log(x) + torch.sqrt(x) * 0.5 - torch.reciprocal(x + 1.0)


def polynomial(x):  # noqa: ANN001, ANN201, D103
    return x * x * x * 0.1 + 0.5 * x * x - x + 2.0


def bias_gelu(x, w, b):  # noqa: ANN001, ANN201, D103
    return F.gelu(x * w + b)


def residual_relu(x, y):  # noqa: ANN001, ANN201, D103
    return torch.relu(x + y * 0.5)


def swiglu(x):  # noqa: ANN001, ANN201, D103
    a, b = x.chunk(2, dim=-1)
    return F.silu(a) * b


def geglu(x, y):  # noqa: ANN001, ANN201, D103
    return F.gelu(x) * y


def transpose_scale(x):  # noqa: ANN001, ANN201, D103
    return (x.t() * 0.125).contiguous()


def transpose_add(x, y):  # noqa: ANN001, ANN201, D103
    return x.t().contiguous() + y.t() * 2.0


def where_mask(x, y, mask):  # noqa: ANN001, ANN201, D103
    return torch.where(mask, x, y * 2.0)


def quantize_dequantize(x):  # noqa: ANN001, ANN201, D103
    return torch.clamp(torch.round(x * 16.0), -127.0, 127.0) / 16.0


def outer_product(u, v):  # noqa: ANN001, ANN201, D103
    return torch.tanh(u[:, None] * v[None, :])


def rope(x, cos, sin):  # noqa: ANN001, ANN201, D103
    x1, x2 = x[..., ::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)


def adam_like_step(p, g, m, v):  # noqa: ANN001, ANN201, D103
    m2 = m * 0.9 + g * 0.1
    v2 = v * 0.999 + g * g * 0.001
    return p - 1e-3 * m2 / (torch.sqrt(v2) + 1e-8), m2, v2


def sum_last(x):  # noqa: ANN001, ANN201, D103
    return x.sum(dim=-1)


def sum_first(x):  # noqa: ANN001, ANN201, D103
    return x.sum(dim=0)


def mean_last(x):  # noqa: ANN001, ANN201, D103
    return x.mean(dim=-1, keepdim=True)


def amax_last(x):  # noqa: ANN001, ANN201, D103
    return x.amax(dim=-1)


def argmax_last(x):  # noqa: ANN001, ANN201, D103
    return x.argmax(dim=-1)


def var_last(x):  # noqa: ANN001, ANN201, D103
    return torch.var(x, dim=-1)


def norm_last(x):  # noqa: ANN001, ANN201, D103
    return torch.linalg.vector_norm(x.float(), dim=-1)


def logsumexp_last(x):  # noqa: ANN001, ANN201, D103
    return torch.logsumexp(x, dim=-1)


def cumsum_last(x):  # noqa: ANN001, ANN201, D103
    return torch.cumsum(x.float(), dim=-1)


def sum_all(x):  # noqa: ANN001, ANN201, D103
    return x.float().sum()


def value_range(x):  # noqa: ANN001, ANN201, D103
    return x.amax(dim=-1) - x.amin(dim=-1)


def softmax(x):  # noqa: ANN001, ANN201, D103
    return torch.softmax(x, dim=-1)


def log_softmax(x):  # noqa: ANN001, ANN201, D103
    return torch.log_softmax(x, dim=-1)


def softmax_first(x):  # noqa: ANN001, ANN201, D103
    return torch.softmax(x, dim=0)


def causal_softmax(x):  # noqa: ANN001, ANN201, D103
    q, k = x.shape[-2], x.shape[-1]
    # Query i sees keys up to i + max(k - q, 0): never a fully masked row.
    keep = torch.ones(q, k, dtype=torch.bool, device=x.device).tril(diagonal=max(k - q, 0))
    return torch.softmax((x * 0.125).masked_fill(~keep, float("-inf")), dim=-1)


def bias_softmax(x, bias):  # noqa: ANN001, ANN201, D103
    return torch.softmax(x + bias, dim=-1)


def layer_norm(x, w, b):  # noqa: ANN001, ANN201, D103
    return F.layer_norm(x, (x.shape[-1],), w, b)


def rms_norm(x, w):  # noqa: ANN001, ANN201, D103
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * w


def residual_layer_norm(x, r, w, b):  # noqa: ANN001, ANN201, D103
    h = x + r
    return F.layer_norm(h, (h.shape[-1],), w, b), h


def layer_norm_gelu(x, w, b):  # noqa: ANN001, ANN201, D103
    return F.gelu(F.layer_norm(x, (x.shape[-1],), w, b))


def l2_normalize(x):  # noqa: ANN001, ANN201, D103
    return F.normalize(x, dim=-1)


def group_norm(x, w, b):  # noqa: ANN001, ANN201, D103
    return F.group_norm(x, 8, w, b)


def instance_norm_relu(x):  # noqa: ANN001, ANN201, D103
    return torch.relu(F.instance_norm(x))


def batch_norm_eval(x, mean, var, w, b):  # noqa: ANN001, ANN201, D103
    return F.batch_norm(x, mean, var, w, b, training=False)


def channel_softmax(x):  # noqa: ANN001, ANN201, D103
    return torch.softmax(x, dim=1)


def global_avg_pool(x):  # noqa: ANN001, ANN201, D103
    return x.mean(dim=(-2, -1))


def cross_entropy(logits, target):  # noqa: ANN001, ANN201, D103
    return F.cross_entropy(logits, target)


def nll_of_log_softmax(logits, target):  # noqa: ANN001, ANN201, D103
    return F.nll_loss(torch.log_softmax(logits.float(), dim=-1), target, reduction="none")


def mse_loss(x, y):  # noqa: ANN001, ANN201, D103
    return F.mse_loss(x, y)


def huber_loss(x, y):  # noqa: ANN001, ANN201, D103
    return F.smooth_l1_loss(x, y, beta=0.5)


def kl_div(x, y):  # noqa: ANN001, ANN201, D103
    return F.kl_div(torch.log_softmax(x, dim=-1), torch.softmax(y, dim=-1), reduction="batchmean")


def bce_with_logits(x, target):  # noqa: ANN001, ANN201, D103
    return F.binary_cross_entropy_with_logits(x, target)


def hinge_loss(x, sign):  # noqa: ANN001, ANN201, D103
    return torch.clamp(1.0 - x * sign, min=0.0).mean(dim=-1)


def cosine_similarity(x, y):  # noqa: ANN001, ANN201, D103
    return F.cosine_similarity(x, y, dim=-1)


def embedding_scale_add(weight, idx, pos):  # noqa: ANN001, ANN201, D103
    return weight[idx] * math.sqrt(weight.shape[-1]) + pos


def center_then_softmax(x):  # noqa: ANN001, ANN201, D103
    return torch.softmax(x - x.mean(dim=0, keepdim=True), dim=-1)


def row_and_column_sums(x):  # noqa: ANN001, ANN201, D103
    return x.sum(dim=-1), (x * x).sum(dim=0)


PROGRAMS: tuple[Program, ...] = (
    # Pointwise activations, one input of (rows, columns).
    Program("gelu", gelu, _x, ROWS, "erf GELU of a matrix"),
    Program("gelu_tanh", gelu_tanh, _x, ROWS, "tanh-approximated GELU"),
    Program("silu", silu, _x, ROWS, "SiLU / swish"),
    Program("softplus", softplus, _x, ROWS, "softplus with threshold"),
    Program("hardswish", hardswish, _x, ROWS, "hard swish"),
    Program("leaky_relu", leaky_relu, _x, ROWS, "leaky ReLU, slope 0.01"),
    Program("elu", elu, _x, ROWS, "ELU"),
    Program("mish", mish, _x, ROWS, "mish: x * tanh(softplus(x))"),
    Program("selu", selu, _x, ROWS, "SELU"),
    Program("tanh_sigmoid", tanh_sigmoid, _x, ROWS, "tanh(x) * sigmoid(1.5 x)"),
    Program("clamp_sigmoid", clamp_sigmoid, _x, ROWS, "2 sigmoid(clamp(2x, -3, 3)) - 1"),
    Program("log_sqrt", log_sqrt, _x_pos, ROWS, "log(x) + sqrt(x)/2 - 1/(x+1) of positive x"),
    Program("polynomial", polynomial, _x, ROWS, "a cubic polynomial, fused"),
    Program("quantize_dequantize", quantize_dequantize, _x, ROWS, "round to 1/16 steps, clamp, rescale"),
    # Pointwise with broadcasting, strided views and several inputs or outputs.
    Program("bias_gelu", bias_gelu, _x_row_params(2), ROWS, "gelu(x * w + b), w and b per column"),
    Program("residual_relu", residual_relu, _xy, ROWS, "relu(x + y/2)"),
    Program("swiglu", swiglu, _x, ROWS_EVEN, "silu(a) * b of the two column halves of x"),
    Program("geglu", geglu, _xy, ROWS, "gelu(x) * y"),
    Program("where_mask", where_mask, _mask_inputs, ROWS, "where(mask, x, 2y) with a bool mask"),
    Program("outer_product", outer_product, _vectors, ROWS, "tanh(u v^T) of vectors of length rows and columns"),
    Program("adam_like_step", adam_like_step, _adam_inputs, ROWS_SMALL, "an Adam-style update: three outputs"),
    Program("rope", rope, _rope_inputs, ROPE, "rotary embedding of (batch, seq, heads, dim) with cos/sin tables"),
    # Layout changes (2D tiled pointwise kernels).
    Program("transpose_scale", transpose_scale, _x, ROWS, "contiguous transpose, scaled"),
    Program("transpose_add", transpose_add, _xy, ROWS, "x^T + 2 y^T, contiguous"),
    # Reductions over rows (rows, columns) or the whole tensor.
    Program("sum_last", sum_last, _x, ROWS, "row sums"),
    Program("sum_first", sum_first, _x, ROWS, "column sums (an outer reduction)"),
    Program("mean_last", mean_last, _x, ROWS, "row means, kept dimension"),
    Program("amax_last", amax_last, _x, ROWS, "row maxima"),
    Program("argmax_last", argmax_last, _x, ROWS, "row argmax (int64 output)"),
    Program("var_last", var_last, _x, ROWS, "row variance (Welford)"),
    Program("norm_last", norm_last, _x, ROWS, "row L2 norms in float32"),
    Program("logsumexp_last", logsumexp_last, _x, ROWS, "row logsumexp"),
    Program("cumsum_last", cumsum_last, _x, ROWS_SMALL, "row prefix sums in float32 (a scan)"),
    Program("sum_all", sum_all, _x, ROWS, "sum of every element in float32 (split reduction)"),
    Program("value_range", value_range, _x, ROWS, "row max minus row min"),
    Program("row_and_column_sums", row_and_column_sums, _x, ROWS, "row sums and column sums of squares"),
    # Softmax family.
    Program("softmax", softmax, _x, ROWS, "row softmax"),
    Program("log_softmax", log_softmax, _x, ROWS, "row log-softmax"),
    Program("softmax_first", softmax_first, _x, ROWS, "column softmax"),
    Program("center_then_softmax", center_then_softmax, _x, ROWS, "softmax of x minus its column means"),
    Program("causal_softmax", causal_softmax, _x, SCORES, "causally masked, scaled softmax of attention scores"),
    Program("bias_softmax", bias_softmax, _scores_bias, SCORES, "softmax of attention scores plus a (q, k) bias"),
    # Normalisations.
    Program("layer_norm", layer_norm, _x_row_params(2), ROWS, "layer norm with weight and bias"),
    Program("rms_norm", rms_norm, _x_row_params(1), ROWS, "RMS norm in float32, weight"),
    Program("residual_layer_norm", residual_layer_norm, _xy_row_params(2), ROWS,
            "h = x + r; layer_norm(h) and h (two outputs)"),
    Program("layer_norm_gelu", layer_norm_gelu, _x_row_params(2), ROWS, "gelu(layer_norm(x))"),
    Program("l2_normalize", l2_normalize, _x, ROWS, "rows scaled to unit L2 norm"),
    Program("group_norm", group_norm, _channel_params(2), IMAGES, "group norm, 8 groups, of (N, C, H, W)"),
    Program("instance_norm_relu", instance_norm_relu, _x, IMAGES, "relu(instance_norm(x)) of (N, C, H, W)"),
    Program("batch_norm_eval", batch_norm_eval, _batch_norm_inputs, SEQUENCES,
            "inference batch norm of (N, C, L) with running statistics"),
    Program("channel_softmax", channel_softmax, _x, IMAGES, "softmax over channels of (N, C, H, W)"),
    Program("global_avg_pool", global_avg_pool, _x, IMAGES, "mean over H and W of (N, C, H, W)"),
    # Losses and similarities.
    Program("cross_entropy", cross_entropy, _logits_targets, LOGITS, "mean cross-entropy of logits and targets"),
    Program("nll_of_log_softmax", nll_of_log_softmax, _logits_targets, LOGITS,
            "per-row NLL of a float32 log-softmax"),
    Program("mse_loss", mse_loss, _xy, ROWS, "mean squared error"),
    Program("huber_loss", huber_loss, _xy, ROWS, "smooth L1 loss, beta 0.5"),
    Program("kl_div", kl_div, _probabilities, ROWS, "KL divergence of two row softmaxes, batchmean"),
    Program("bce_with_logits", bce_with_logits, _binary_targets, ROWS, "binary cross-entropy with logits"),
    Program("hinge_loss", hinge_loss, _signs, ROWS, "row means of clamp(1 - x y, 0)"),
    Program("cosine_similarity", cosine_similarity, _xy, ROWS, "row cosine similarity"),
    # Gathers.
    Program("embedding_scale_add", embedding_scale_add, _embedding_inputs, TOKENS,
            "embedding lookup (int64 indices) scaled by sqrt(dim), plus positions; shape is (tokens, dim)"),
)
"""Every program, in harvest order."""

_BY_NAME = {p.name: p for p in PROGRAMS}
if len(_BY_NAME) != len(PROGRAMS):  # pragma: no cover - guards the table above
    raise ImportError("two programs share a name")


def get_program(name: str) -> Program:
    """The program named ``name``, or an error listing the program names."""
    if name not in _BY_NAME:
        raise invalid_choice("program", "harvest", name, _BY_NAME)
    return _BY_NAME[name]


def program_names() -> list[str]:
    """Names of every program, in harvest order."""
    return list(_BY_NAME)
