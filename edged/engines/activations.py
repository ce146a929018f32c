"""Peak live activation bytes of an ONNX graph at concrete input shapes, read from the file.

Why this exists: weights are only part of what a loaded model takes. ppocr-det run on a
640x640 frame holds ~70 MB of activations in ONNX Runtime's arena against 3 MB of weights, and
the estimate must know that *before* the load (``edgectl check`` even asks it for artifacts
that are not installed). So the graph itself is read (over the same mmap'd wire format as
onnx_inspect.py, for the same reasons: the daemon does not import ``onnx`` — a development
dependency that would also read every weight into memory — nor onnxruntime), shapes are
propagated from the warm-up shapes through the operators (a small shape inference with value
propagation for the int64 shape arithmetic exporters emit: Shape -> Gather -> Concat ->
Reshape), and liveness is walked over the node order (ONNX requires a topological order):
a tensor is live from the node that makes it to its last consumer; Reshape-like operators
alias their input (ORT reuses the buffer). The peak of the live bytes is what the arena must
hold at once; estimate.py scales it by the arena's measured overhead (fragmentation of a
``kSameAsRequested`` BFC arena, kernels' scratch buffers).

An operator this reader does not know gets its first input's shape when that is the usual
elementwise case, else an unknown shape; unknown tensors count 0 and are reported
(``unknown``), so an estimate says when it is blind. Subgraph bodies (If/Loop/Scan) are not
walked: their outputs are unknown.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.engines.base import Signature, TensorSpec
from edged.engines.onnx_inspect import ELEM_TYPES
from edged.engines.protowire import Reader
from edged.engines.session import warmup_shapes

INT64, INT32, FLOAT, BOOL = 7, 6, 1, 9
_MAX_VALUE_ELEMS = 64  # values propagated only for small int tensors (shape arithmetic)
ALIGN = 64  # ORT's CPU allocator alignment: every tensor is rounded up to it

Shape = tuple[int, ...]


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    ints: dict[str, int] = field(default_factory=dict)
    lists: dict[str, list[int]] = field(default_factory=dict)
    floats: dict[str, float] = field(default_factory=dict)
    strings: dict[str, str] = field(default_factory=dict)
    tensor: Tensor | None = None  # attribute ``value`` (Constant, ConstantOfShape)


@dataclass
class Tensor:
    dtype: int
    shape: Shape | None
    value: list[Any] | None = None  # small int/float tensors only (shape arithmetic)


@dataclass
class GraphIR:
    inputs: list[tuple[str, int, tuple[int | str, ...]]]  # name, elem type, dims (str: symbolic)
    outputs: list[str]
    nodes: list[Node]
    consts: dict[str, Tensor]  # initializers (values of the small ones)


def read_graph(path: Path) -> GraphIR:
    """The top-level graph's nodes, inputs, outputs and initializer shapes."""
    with Reader(Path(path)) as r:
        graph = next((v for f, w, v in r.fields(0, r.size) if f == 7 and w == 2), None)
        ir = GraphIR([], [], [], {})
        if graph is None:
            return ir
        for fno, wt, val in r.fields(*graph):
            if wt != 2:
                continue
            if fno == 1:
                ir.nodes.append(_node(r, val))
            elif fno == 5:
                name, t = _tensor(r, val)
                ir.consts[name] = t
            elif fno == 11:
                ir.inputs.append(_value_info(r, val))
            elif fno == 12:
                ir.outputs.append(_value_info(r, val)[0])
        ir.inputs = [i for i in ir.inputs if i[0] not in ir.consts]
        return ir


def _node(r: Reader, span: tuple[int, int]) -> Node:
    n = Node("", [], [])
    for fno, wt, val in r.fields(*span):
        if fno == 1 and wt == 2:
            n.inputs.append(r.text(val))
        elif fno == 2 and wt == 2:
            n.outputs.append(r.text(val))
        elif fno == 4 and wt == 2:
            n.op = r.text(val)
        elif fno == 5 and wt == 2:
            _attribute(r, val, n)
    return n


def _attribute(r: Reader, span: tuple[int, int], n: Node) -> None:
    name, ints, floats = "", list[int](), list[float]()
    for fno, wt, val in r.fields(*span):
        if fno == 1 and wt == 2:
            name = r.text(val)
        elif fno == 2 and wt == 5:
            n.floats[name] = struct.unpack("<f", r.buf[val[0]:val[1]])[0]
        elif fno == 3 and wt == 0:
            n.ints[name] = val
        elif fno == 4 and wt == 2:
            n.strings[name] = r.text(val)
        elif fno == 5 and wt == 2:
            n.tensor = _tensor(r, val)[1]
        elif fno == 7:
            if wt == 2:
                floats.extend(struct.unpack(f"<{(val[1] - val[0]) // 4}f",
                                            r.buf[val[0]:val[1]]))
            elif wt == 5:
                floats.append(struct.unpack("<f", r.buf[val[0]:val[1]])[0])
        elif fno == 8:
            ints.extend(r.packed(val) if wt == 2 else [val])
    if ints:
        n.lists[name] = ints
    if floats:
        n.lists[name] = floats  # type: ignore[assignment]  # scales: floats
    if name in ("value_int", "value_ints", "value_float", "value_floats"):
        vals: list[Any] = ints or floats or ([n.ints[name]] if name in n.ints
                                               else [n.floats.get(name, 0.0)])
        shape: Shape = (len(vals),) if name.endswith("s") else ()
        n.tensor = Tensor(INT64 if "int" in name else FLOAT, shape, list(vals))


def _tensor(r: Reader, span: tuple[int, int]) -> tuple[str, Tensor]:
    dims: list[int] = []
    dtype, name = 0, ""
    raw: tuple[int, int] | None = None
    typed: list[float] = []
    for fno, wt, val in r.fields(*span):
        if fno == 1:
            dims.extend(r.packed(val) if wt == 2 else [val])
        elif fno == 2 and wt == 0:
            dtype = val
        elif fno == 8 and wt == 2:
            name = r.text(val)
        elif fno == 9 and wt == 2:
            raw = val
        elif fno in (5, 7) and len(typed) <= _MAX_VALUE_ELEMS:  # int32_data / int64_data
            typed.extend(r.packed(val) if wt == 2 else [val])
        elif fno == 4 and wt == 2 and val[1] - val[0] <= 4 * _MAX_VALUE_ELEMS:  # float_data
            typed.extend(struct.unpack(f"<{(val[1] - val[0]) // 4}f", r.buf[val[0]:val[1]]))
    count = math.prod(dims)
    value: list[float] | None = None
    if count <= _MAX_VALUE_ELEMS:
        if raw is not None:
            fmt = {INT64: "q", INT32: "i", FLOAT: "f", BOOL: "?"}.get(dtype)
            if fmt and (raw[1] - raw[0]) == count * struct.calcsize(fmt):
                value = list(struct.unpack(f"<{count}{fmt}", r.buf[raw[0]:raw[1]]))
        elif len(typed) == count:
            value = typed
    return name, Tensor(dtype, tuple(dims), value)


def _value_info(r: Reader, span: tuple[int, int]) -> tuple[str, int, tuple[int | str, ...]]:
    name, elem, dims = "", 0, []
    for fno, wt, val in r.fields(*span):
        if fno == 1 and wt == 2:
            name = r.text(val)
        elif fno == 2 and wt == 2:
            for f2, w2, v2 in r.fields(*val):
                if f2 != 1 or w2 != 2:
                    continue
                for f3, w3, v3 in r.fields(*v2):
                    if f3 == 1 and w3 == 0:
                        elem = v3
                    elif f3 == 2 and w3 == 2:
                        for f4, w4, v4 in r.fields(*v3):
                            if f4 == 1 and w4 == 2:
                                dims.append(_dim(r, v4))
    return name, elem, tuple(dims)


def _dim(r: Reader, span: tuple[int, int]) -> int | str:
    for fno, wt, val in r.fields(*span):
        if fno == 1 and wt == 0:
            return int(val)
        if fno == 2 and wt == 2:
            return r.text(val)
    return ""


@dataclass(frozen=True)
class Activations:
    peak_bytes: int  # most bytes live at once (aligned tensors)
    total_bytes: int  # every tensor made once (a run without any reuse)
    tensors: int
    unknown: int  # tensors whose shape could not be told (counted as 0)
    arena_bytes: int = 0  # what a BFC arena serving that sequence reserves (fragmentation)


def peak_activations(ir: GraphIR, shapes: Mapping[str, Sequence[int]]) -> Activations:
    """Liveness over the node order at the given input shapes, each allocation and release
    played through a model of the arena (``BfcArena``): graph inputs are the caller's buffers
    and constants are weights (neither counts); Reshape-like outputs alias their input; a
    node's outputs are allocated before its dying inputs are released; an activation that
    ORT fuses into its Conv shares the Conv's buffer; a Conv adds its
    scratch buffer (MLAS's rule, see ``conv_scratch``) while it runs. Elementwise in-place
    reuse is not modelled: with it the walk fell 40% short of ppocr-det's measured arena,
    without it every measured case is within 15% (tests/unit/test_engine_estimate.py)."""
    known = infer(ir, shapes)
    produced: dict[str, int] = {}
    buffer_of: dict[str, str] = {}  # alias -> the tensor whose buffer it shares
    last: dict[str, int] = {}
    maker: dict[str, str] = {}
    uses: dict[str, int] = {}
    for n in ir.nodes:
        for x in n.inputs:
            uses[x] = uses.get(x, 0) + 1
        for o in n.outputs:
            maker[o] = n.op
    for i, n in enumerate(ir.nodes):
        for x in n.inputs:
            if x:
                last[buffer_of.get(x, x)] = i
        first = n.inputs[0] if n.inputs else ""
        fused = (n.op in _CONV_FUSED and maker.get(first) == "Conv" and uses.get(first) == 1
                 and first not in ir.outputs)
        if (n.op in _ALIASES or fused) and first in produced:
            buffer_of[n.outputs[0]] = buffer_of.get(first, first)
        for o in n.outputs:
            produced[o] = i
    for o in ir.outputs:
        last[buffer_of.get(o, o)] = len(ir.nodes)
    arena = BfcArena()
    peak = total = unknown = count = 0
    sizes: dict[str, int] = {}
    for i, n in enumerate(ir.nodes):
        dying = {buffer_of.get(x, x) for x in n.inputs if x}
        dying = {b for b in dying if last.get(b) == i and b in sizes}
        for o in n.outputs:
            if not o or o in buffer_of or n.op == "Constant":
                continue
            t = known.get(o)
            if t is None or t.shape is None:
                unknown += 1
                continue
            if t.value is not None and len(t.value) == math.prod(t.shape):
                continue  # folded by the runtime: a constant, not an activation
            b = _nbytes(t)
            sizes[o] = b
            arena.alloc(o, b)
            total += b
            count += 1
        scratch = conv_scratch(n, known) if n.op in ("Conv", "ConvTranspose") else 0
        if scratch:
            arena.alloc("\0scratch", _round(scratch))
            arena.free("\0scratch")
        peak = max(peak, arena.live)
        for buf in dying:
            if buf in sizes:
                sizes.pop(buf)
                arena.free(buf)
    return Activations(peak, total, count, unknown, arena.reserved)


def _round(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


MAX_DEAD_BYTES = 128 << 20  # BFCArena's max_dead_bytes_per_chunk default


class BfcArena:
    """ONNX Runtime's CPU arena as the worker configures it (BFC, ``kSameAsRequested``): a
    request is served from the smallest free chunk that holds it (split only when the chunk is
    at least twice the request, else the rest is dead while the chunk is used), else by a new
    region of exactly its size; a freed chunk merges with its
    free neighbours in the same region, never across regions. ``reserved`` is what the
    process keeps: the sum of the regions, which fragmentation pushes well past the live
    peak on graphs whose tensors change size as they go (ppocr-det: ~1.8x)."""

    def __init__(self) -> None:
        self.regions: list[list[_Chunk]] = []
        self.where: dict[str, tuple[int, int]] = {}  # owner -> (region, offset)
        self.reserved = 0
        self.live = 0

    def alloc(self, owner: str, size: int) -> None:
        size = max(_round(size), 256)
        best: tuple[int, int, int] | None = None
        for r, chunks in enumerate(self.regions):
            for k, c in enumerate(chunks):
                if c.owner is None and c.size >= size and (best is None or c.size < best[2]):
                    best = (r, k, c.size)
        if best is None:
            self.regions.append([_Chunk(0, size, owner)])
            self.where[owner] = (len(self.regions) - 1, 0)
            self.reserved += size
        else:
            r, k, csize = best
            off = self.regions[r][k].offset
            self.regions[r][k] = _Chunk(off, size, owner)
            if csize >= 2 * size or csize - size >= MAX_DEAD_BYTES:
                self.regions[r].insert(k + 1, _Chunk(off + size, csize - size, None))
            else:
                self.regions[r][k].size = size = csize  # the rest is dead while this is used
            self.where[owner] = (r, off)
        self.live += size

    def free(self, owner: str) -> None:
        r, off = self.where.pop(owner)
        chunks = self.regions[r]
        k = next(i for i, c in enumerate(chunks) if c.offset == off)
        self.live -= chunks[k].size
        chunks[k].owner = None
        if k + 1 < len(chunks) and chunks[k + 1].owner is None:
            chunks[k].size += chunks.pop(k + 1).size
        if k > 0 and chunks[k - 1].owner is None:
            chunks[k - 1].size += chunks.pop(k).size


@dataclass(slots=True)
class _Chunk:
    """One chunk of an arena region; ``owner`` None: free."""

    offset: int
    size: int
    owner: str | None

MLAS_SMALL_SCRATCH = 128 * 128  # floats: MLAS_SGEMM_STRIDEN * MLAS_SGEMM_STRIDEK per thread


def conv_scratch(n: Node, known: Mapping[str, Tensor]) -> int:
    """Bytes of MLAS's working buffer for one float Conv (MlasConvPrepare, one intra-op
    thread): none for a pointwise conv, the full im2col expansion when the filters outnumber
    the output pixels or for a grouped (depthwise) conv, else a small tile."""
    x, w, y = (known.get(name) for name in (n.inputs[0], n.inputs[1], n.outputs[0]))
    if x is None or w is None or y is None or None in (x.shape, w.shape, y.shape):
        return 0
    assert x.shape is not None and w.shape is not None and y.shape is not None
    group = max(n.ints.get("group", 1), 1)
    if n.op == "ConvTranspose":  # ORT's col buffer: (out channels / group) x kernel x input
        return 4 * w.shape[1] * math.prod(w.shape[2:]) * math.prod(x.shape[2:])
    filters, k = w.shape[0], math.prod(w.shape[1:])
    out = math.prod(y.shape[2:])
    strides = n.lists.get("strides") or [1]
    pads = n.lists.get("pads") or [0]
    if all(s == 1 for s in strides) and not any(pads) and k == w.shape[1]:
        return 0
    if filters // group > out:
        return 4 * out * k
    if group > 1:
        return 4 * max(out * k, filters // group * out, MLAS_SMALL_SCRATCH)
    # MLAS expands a batched conv per image into a full im2col buffer too, but at ORT's default
    # optimization level such convs run as NCHWc kernels that need none: counting it
    # over-estimated a generated CNN at batch 4 by 16%, without it -2%.
    return 4 * MLAS_SMALL_SCRATCH


def _nbytes(t: Tensor) -> int:
    size = ELEM_TYPES.get(t.dtype, ("", 4))[1] or 8
    n = math.ceil(math.prod(t.shape or ()) * size)
    return -(-n // ALIGN) * ALIGN


# ORT fuses these into the Conv before them (ConvActivationFusion) when the Conv's output has
# no other consumer: the activation writes the Conv's buffer, no tensor of its own.
_CONV_FUSED = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh"}
_ALIASES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
_UNARY = {"Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Clip", "Tanh", "Exp", "Log", "Sqrt",
          "Neg", "Abs", "Erf", "LeakyRelu", "Elu", "Selu", "Softplus", "Softsign", "Identity",
          "Dropout", "Softmax", "LogSoftmax", "BatchNormalization", "InstanceNormalization",
          "LayerNormalization", "LpNormalization", "Reciprocal", "Floor", "Ceil", "Round",
          "Sign", "Gelu", "Mish", "CumSum", "Sin", "Cos", "IsNaN", "IsInf", "Hardmax",
          "QuantizeLinear", "DequantizeLinear", "Shrink", "ThresholdedRelu", "Celu",
          "MeanVarianceNormalization", "LRN", "GroupNormalization", "SimplifiedLayerNormalization",
          "FastGelu", "BiasGelu", "QuickGelu", "Not"}
_BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Mod", "PRelu",
           "And", "Or", "Xor", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
           "Where", "BitShift", "BiasAdd"}
_BOOL_OUT = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor",
             "Not", "IsNaN", "IsInf"}
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
           "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}


def infer(ir: GraphIR, shapes: Mapping[str, Sequence[int]]) -> dict[str, Tensor]:
    """Every tensor's type and shape (None where unknown), small int values propagated."""
    known: dict[str, Tensor] = dict(ir.consts)
    for name, elem, dims in ir.inputs:
        given = shapes.get(name)
        shape = tuple(int(d) for d in given) if given is not None else (
            tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims))
        known[name] = Tensor(elem, None if any(d < 0 for d in shape) else shape)
    for n in ir.nodes:
        ins = [known.get(x) if x else None for x in n.inputs]
        try:
            outs = _op(n, ins)
        except (ValueError, IndexError, TypeError, ZeroDivisionError, OverflowError,
                KeyError, AttributeError):
            outs = []
        for k, o in enumerate(n.outputs):
            if o:
                known[o] = outs[k] if k < len(outs) else Tensor(0, None)
    return known


def _broadcast(*shapes: Shape) -> Shape:
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = {s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ValueError("not broadcastable")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _elementwise(op: str, vals: list[Any], shapes: list[Shape],
                 out: Shape) -> list[float] | None:
    if any(v is None for v in vals) or math.prod(out) > _MAX_VALUE_ELEMS:
        return None
    flat = []
    for idx in range(math.prod(out)):
        coords, rem = [], idx
        for d in reversed(out):
            coords.append(rem % d)
            rem //= d
        coords.reverse()
        args = []
        for v, s in zip(vals, shapes, strict=True):
            off, mul = 0, 1
            for c, d in zip(reversed(coords), reversed(s), strict=False):
                off += (c if d > 1 else 0) * mul
                mul *= d
            args.append(v[off])
        flat.append(_apply(op, args))
    return flat


def _apply(op: str, a: list[float]) -> float:
    if op == "Add":
        return a[0] + a[1]
    if op == "Sub":
        return a[0] - a[1]
    if op == "Mul":
        return a[0] * a[1]
    if op == "Div":
        return a[0] // a[1] if all(isinstance(x, int) for x in a) else a[0] / a[1]
    if op == "Equal":
        return a[0] == a[1]
    if op == "Where":
        return a[1] if a[0] else a[2]
    if op == "Max":
        return max(a)
    if op == "Min":
        return min(a)
    raise ValueError(op)


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def _ints(t: Tensor | None) -> list[int]:
    if t is None or t.value is None:
        raise ValueError("value unknown")
    return [int(v) for v in t.value]


def _op(n: Node, ins: list[Tensor | None]) -> list[Tensor]:  # noqa: C901 - a dispatch table
    op = n.op
    out: Any  # a shape under construction (list) or done (tuple)
    x = ins[0] if ins else None
    xs = x.shape if x is not None else None
    if op == "Constant":
        return [n.tensor] if n.tensor is not None else []
    if op in _BINARY:
        present = [t for t in ins if t is not None]
        if len(present) != len(ins) or any(t.shape is None for t in present):
            return [Tensor(x.dtype if x else 0, None)]
        shp = [t.shape for t in present if t.shape is not None]
        out = _broadcast(*shp)
        dtype = BOOL if op in _BOOL_OUT else (present[1].dtype if op == "Where"
                                              else present[0].dtype)
        vals = [t.value for t in present]
        value = _elementwise(op, vals, shp, out) if op in ("Add", "Sub", "Mul", "Div",
                                                           "Equal", "Where", "Max",
                                                           "Min") else None
        return [Tensor(dtype, out, value)]
    if x is None or xs is None:
        if op == "ConstantOfShape" or op == "Range":
            pass
        else:
            return []
    assert x is not None
    if op in _UNARY:
        dtype = BOOL if op in _BOOL_OUT else x.dtype
        return [Tensor(dtype, xs, x.value if op == "Identity" else None)]
    if op == "Cast":
        return [Tensor(n.ints.get("to", x.dtype), xs,
                       None if x.value is None else [
                           float(v) if n.ints.get("to") == FLOAT else int(v) for v in x.value])]
    if op == "Shape":
        assert xs is not None
        start, end = n.ints.get("start", 0), n.ints.get("end", len(xs))
        dims = list(xs)[slice(start, end)]
        return [Tensor(INT64, (len(dims),), dims)]
    if op == "Size":
        return [Tensor(INT64, (), [math.prod(xs or ())])]
    if op in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"):
        return [_conv(n, ins)]
    if op in ("MaxPool", "AveragePool", "LpPool"):
        return [_pool(n, x)] + ([Tensor(INT64, _pool(n, x).shape)] if len(n.outputs) > 1
                                else [])
    if op in ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"):
        assert xs is not None
        return [Tensor(x.dtype, xs[:2] + (1,) * (len(xs) - 2))]
    if op in ("Resize", "Upsample"):
        return [_resize(n, ins)]
    if op == "Concat":
        if any(t is None or t.shape is None for t in ins):
            return [Tensor(x.dtype, None)]
        shp = [t.shape for t in ins if t is not None and t.shape is not None]
        ax = _axis(n.ints.get("axis", 0), len(shp[0]))
        out = list(shp[0])
        out[ax] = sum(s[ax] for s in shp)
        value = None
        if len(out) == 1 and all(t is not None and t.value is not None for t in ins):
            value = [v for t in ins if t is not None and t.value is not None for v in t.value]
        return [Tensor(x.dtype, tuple(out), value)]
    if op == "Reshape":
        assert xs is not None
        target = _ints(ins[1]) if len(ins) > 1 else n.lists["shape"]
        out = [xs[i] if d == 0 and not n.ints.get("allowzero") else d
               for i, d in enumerate(target)]
        if -1 in out:
            rest = math.prod(d for d in out if d != -1)
            out[out.index(-1)] = math.prod(xs) // rest if rest else 0
        return [Tensor(x.dtype, tuple(out), x.value)]
    if op == "Flatten":
        assert xs is not None
        ax = _axis(n.ints.get("axis", 1), len(xs))
        return [Tensor(x.dtype, (math.prod(xs[:ax]), math.prod(xs[ax:])), x.value)]
    if op == "Transpose":
        assert xs is not None
        perm = n.lists.get("perm") or list(reversed(range(len(xs))))
        return [Tensor(x.dtype, tuple(xs[p] for p in perm))]
    if op in ("MatMul", "MatMulInteger", "FusedMatMul"):
        b = ins[1]
        if b is None or b.shape is None:
            return [Tensor(x.dtype, None)]
        a_s, b_s = list(xs or ()), list(b.shape)
        if len(a_s) == 1:
            a_s = [1, *a_s]
        if len(b_s) == 1:
            b_s = [*b_s, 1]
        lead = _broadcast(tuple(a_s[:-2]), tuple(b_s[:-2]))
        out = [*lead, a_s[-2], b_s[-1]]
        if len(xs or ()) == 1:
            out.pop(-2)
        if len(b.shape) == 1:
            out.pop(-1)
        return [Tensor(x.dtype, tuple(out))]
    if op == "Gemm":
        b = ins[1]
        assert xs is not None and b is not None and b.shape is not None
        m = xs[1] if n.ints.get("transA") else xs[0]
        k = b.shape[0] if n.ints.get("transB") else b.shape[1]
        return [Tensor(x.dtype, (m, k))]
    if op in ("Squeeze", "Unsqueeze"):
        assert xs is not None
        axes = n.lists.get("axes") or (_ints(ins[1]) if len(ins) > 1 and ins[1] else [])
        if op == "Squeeze":
            rank = len(xs)
            drop = {_axis(a, rank) for a in axes} if axes else {
                i for i, d in enumerate(xs) if d == 1}
            out = tuple(d for i, d in enumerate(xs) if i not in drop)
        else:
            rank = len(xs) + len(axes)
            put = {_axis(a, rank) for a in axes}
            it = iter(xs)
            out = tuple(1 if i in put else next(it) for i in range(rank))
        return [Tensor(x.dtype, out, x.value)]
    if op == "Slice":
        return [_slice(n, ins)]
    if op == "Gather":
        idx = ins[1]
        assert xs is not None and idx is not None and idx.shape is not None
        ax = _axis(n.ints.get("axis", 0), len(xs))
        out = xs[:ax] + idx.shape + xs[ax + 1:]
        value = None
        if x.value is not None and idx.value is not None and len(xs) == 1:
            value = [x.value[int(i) + (xs[0] if i < 0 else 0)] for i in idx.value]
        return [Tensor(x.dtype, out, value)]
    if op == "ConstantOfShape":
        dims = _ints(x)
        dtype = n.tensor.dtype if n.tensor is not None else FLOAT
        fill = n.tensor.value[0] if n.tensor is not None and n.tensor.value else 0
        value = [fill] * math.prod(dims) if math.prod(dims) <= _MAX_VALUE_ELEMS else None
        return [Tensor(dtype, tuple(dims), value)]
    if op == "Range":
        start, limit, delta = (_ints(t)[0] for t in ins[:3])
        seq = list(range(start, limit, delta))
        return [Tensor(x.dtype, (len(seq),), seq if len(seq) <= _MAX_VALUE_ELEMS else None)]
    if op == "Expand":
        assert xs is not None
        return [Tensor(x.dtype, _broadcast(xs, tuple(_ints(ins[1]))))]
    if op == "Tile":
        assert xs is not None
        return [Tensor(x.dtype, tuple(d * r for d, r in zip(xs, _ints(ins[1]), strict=True)))]
    if op == "Split":
        assert xs is not None
        ax = _axis(n.ints.get("axis", 0), len(xs))
        parts = n.lists.get("split") or (_ints(ins[1]) if len(ins) > 1 and ins[1] else [])
        if not parts:
            k = n.ints.get("num_outputs", len(n.outputs))
            each = -(-xs[ax] // k)
            parts = [min(each, xs[ax] - each * i) for i in range(k)]
        return [Tensor(x.dtype, (*xs[:ax], p, *xs[ax + 1:])) for p in parts]
    if op in _REDUCE or op in ("ArgMax", "ArgMin"):
        assert xs is not None
        keep = n.ints.get("keepdims", 1)
        if op in ("ArgMax", "ArgMin"):
            axes = [n.ints.get("axis", 0)]
        else:
            axes = n.lists.get("axes") or (_ints(ins[1]) if len(ins) > 1 and ins[1] else [])
        if not axes and n.ints.get("noop_with_empty_axes"):
            return [Tensor(x.dtype, xs)]
        drop = {_axis(a, len(xs)) for a in axes} if axes else set(range(len(xs)))
        out = tuple(1 if i in drop else d for i, d in enumerate(xs)
                    if keep or i not in drop)
        return [Tensor(INT64 if op.startswith("Arg") else x.dtype, out)]
    if op == "Pad":
        assert xs is not None
        pads = n.lists.get("pads") or _ints(ins[1])
        r = len(xs)
        return [Tensor(x.dtype, tuple(d + pads[i] + pads[i + r] for i, d in enumerate(xs)))]
    if op == "TopK":
        assert xs is not None
        ax = _axis(n.ints.get("axis", -1), len(xs))
        k = _ints(ins[1])[0] if len(ins) > 1 else n.ints["k"]
        out = (*xs[:ax], k, *xs[ax + 1:])
        return [Tensor(x.dtype, out), Tensor(INT64, out)]
    if op in ("LSTM", "GRU", "RNN"):
        assert xs is not None
        h = n.ints["hidden_size"]
        dirs = 2 if n.strings.get("direction") == "bidirectional" else 1
        steps, batch = (xs[1], xs[0]) if n.ints.get("layout") else (xs[0], xs[1])
        return [Tensor(x.dtype, (steps, dirs, batch, h)), Tensor(x.dtype, (dirs, batch, h)),
                Tensor(x.dtype, (dirs, batch, h))]
    if op in ("NonZero", "NonMaxSuppression", "If", "Loop", "Scan", "Unique", "Compress"):
        return []
    # Unknown operator: elementwise is the common case (custom activations, fused ops).
    return [Tensor(x.dtype, xs)]


def _spatial(n: Node, xs: Shape, kernel: Sequence[int]) -> Shape:
    r = len(kernel)
    strides = n.lists.get("strides") or [1] * r
    dil = n.lists.get("dilations") or [1] * r
    pads = n.lists.get("pads") or [0] * (2 * r)
    auto = n.strings.get("auto_pad", "NOTSET")
    ceil = n.ints.get("ceil_mode", 0)
    out = []
    for i in range(r):
        size, k = xs[2 + i], (kernel[i] - 1) * dil[i] + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-size // strides[i]))
        elif auto == "VALID":
            out.append((size - k) // strides[i] + 1)
        else:
            span = size + pads[i] + pads[i + r] - k
            out.append((-(-span // strides[i]) if ceil else span // strides[i]) + 1)
    return tuple(out)


def _conv(n: Node, ins: list[Tensor | None]) -> Tensor:
    x, w = ins[0], ins[1] if n.op != "QLinearConv" else ins[3]
    assert x is not None and x.shape is not None and w is not None and w.shape is not None
    xs, ws = x.shape, w.shape
    kernel = n.lists.get("kernel_shape") or list(ws[2:])
    if n.op != "ConvTranspose":
        return Tensor(x.dtype, (xs[0], ws[0], *_spatial(n, xs, kernel)))
    r = len(kernel)
    strides = n.lists.get("strides") or [1] * r
    dil = n.lists.get("dilations") or [1] * r
    pads = n.lists.get("pads") or [0] * (2 * r)
    extra = n.lists.get("output_padding") or [0] * r
    if n.lists.get("output_shape"):
        spatial = tuple(n.lists["output_shape"][-r:])
    else:
        spatial = tuple(strides[i] * (xs[2 + i] - 1) + extra[i] + (kernel[i] - 1) * dil[i] + 1
                        - pads[i] - pads[i + r] for i in range(r))
    return Tensor(x.dtype, (xs[0], ws[1] * n.ints.get("group", 1), *spatial))


def _pool(n: Node, x: Tensor) -> Tensor:
    assert x.shape is not None
    return Tensor(x.dtype, x.shape[:2] + _spatial(n, x.shape, n.lists["kernel_shape"]))


def _resize(n: Node, ins: list[Tensor | None]) -> Tensor:
    x = ins[0]
    assert x is not None and x.shape is not None
    xs = x.shape
    sizes = ins[3] if len(ins) > 3 else None
    if sizes is not None and sizes.value:
        target = [int(v) for v in sizes.value]
        axes = n.lists.get("axes") or list(range(len(xs)))
        out = list(xs)
        for a, s in zip(axes, target, strict=True):
            out[_axis(a, len(xs))] = s
        return Tensor(x.dtype, tuple(out))
    scales_t = ins[2] if n.op == "Resize" and len(ins) > 2 else (
        ins[1] if len(ins) > 1 else None)
    scales = (list(scales_t.value) if scales_t is not None and scales_t.value
              else n.lists.get("scales"))
    if not scales:
        raise ValueError("resize: neither sizes nor scales known")
    axes = n.lists.get("axes") or list(range(len(xs)))
    out = list(xs)
    for a, s in zip(axes, scales, strict=True):
        ax = _axis(a, len(xs))
        out[ax] = math.floor(xs[ax] * float(s))
    return Tensor(x.dtype, tuple(out))


def _slice(n: Node, ins: list[Tensor | None]) -> Tensor:
    x = ins[0]
    assert x is not None and x.shape is not None
    xs = x.shape
    if len(ins) > 2:
        starts, ends = _ints(ins[1]), _ints(ins[2])
        axes = _ints(ins[3]) if len(ins) > 3 and ins[3] else list(range(len(starts)))
        steps = _ints(ins[4]) if len(ins) > 4 and ins[4] else [1] * len(starts)
    else:
        starts, ends = n.lists["starts"], n.lists["ends"]
        axes = n.lists.get("axes") or list(range(len(starts)))
        steps = [1] * len(starts)
    out = list(xs)
    value = x.value
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        ax = _axis(a, len(xs))
        rng = range(*slice(s, e, st).indices(xs[ax]))
        out[ax] = len(rng)
        if value is not None and len(xs) == 1:
            value = [value[i] for i in rng]
    return Tensor(x.dtype, tuple(out), value if len(xs) == 1 else None)


class _Declared:
    """The graph's inputs as session.warmup_shapes reads a session: the estimate uses the
    very shapes the load's warm-up will run (and its defaults for dynamic dimensions)."""

    def __init__(self, ir: GraphIR) -> None:
        self.signature = Signature(tuple(
            TensorSpec(name, ELEM_TYPES.get(elem, ("UNKNOWN", 0))[0],
                       tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims))
            for name, elem, dims in ir.inputs), ())
        self.dim_names = {name: tuple(d if isinstance(d, str) and d else None for d in dims)
                          for name, _e, dims in ir.inputs}
        self.preferred_shapes: dict[str, tuple[int, ...]] = {}


def warmup_activations(path: Path, overrides: Mapping[str, Sequence[int]]
                       ) -> tuple[Activations, dict[str, tuple[int, ...]]]:
    """Peak activations at the shapes the load's warm-up will use (``overrides``, else the
    warm-up's defaults), and those shapes."""
    ir = read_graph(path)
    shapes = warmup_shapes(_Declared(ir), {k: tuple(v) for k, v in overrides.items()})
    return peak_activations(ir, shapes), shapes
