"""A minimal reader of the ONNX protobuf wire format: signature and weight bytes of a model.

Why not the ``onnx`` package or a session? ``onnx`` is a development dependency only, it would
read every weight into memory (a 2 GB model costs 2 GB to inspect), and it costs the daemon's
idle budget; a session would load the weights by definition. The capacity planner needs the
estimate *before* anything is loaded, and ``edgectl check`` asks it for artifacts that are not
even installed. So we walk the protobuf fields ourselves over an ``mmap``: names, dims and data
types are read, every ``raw_data`` payload is skipped by its length prefix and never touched.
Only the fields below are interpreted; the field numbers are those of ``onnx/onnx.proto``.
The tests check this reader against the ``onnx`` package on the demo models and generated ones
(external data, fp16, int8, bool, subgraphs, Constant nodes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from edged.engines.base import Signature, TensorSpec
from edged.engines.protowire import Corrupt, Incomplete, Reader, invalid

# TensorProto.DataType -> (OIP-style datatype name, bytes per element)
ELEM_TYPES: dict[int, tuple[str, float]] = {
    1: ("FP32", 4), 2: ("UINT8", 1), 3: ("INT8", 1), 4: ("UINT16", 2), 5: ("INT16", 2),
    6: ("INT32", 4), 7: ("INT64", 8), 8: ("BYTES", 0), 9: ("BOOL", 1), 10: ("FP16", 2),
    11: ("FP64", 8), 12: ("UINT32", 4), 13: ("UINT64", 8), 14: ("COMPLEX64", 8),
    15: ("COMPLEX128", 16), 16: ("BF16", 2), 17: ("FP8E4M3FN", 1), 18: ("FP8E4M3FNUZ", 1),
    19: ("FP8E5M2", 1), 20: ("FP8E5M2FNUZ", 1), 21: ("UINT4", 0.5), 22: ("INT4", 0.5),
    23: ("FP4E2M1", 0.5),
}
_MODEL_FIELDS = {1, 2, 3, 4, 5, 6, 7, 8, 14, 20, 25, 26}  # ModelProto; anything else: not ONNX
_MAX_DEPTH = 32  # nested subgraphs (If/Loop/Scan bodies)


@dataclass
class OnnxSummary:
    signature: Signature
    weights_bytes: int = 0  # initializers + Constant-node tensors, subgraphs included
    initializers: int = 0
    constants: int = 0
    nodes: int = 0  # every node, subgraph bodies included (per-node runtime cost)
    subgraphs: int = 0
    external_bytes: int = 0
    external_files: set[str] = field(default_factory=set)
    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)
    producer: str = ""


def check_model_file(path: Path) -> None:
    """Fail unless ``path`` looks like a complete ModelProto (top-level fields only: cheap)."""
    with Reader(path) as r:
        graph = None
        for fno, _wt, val in r.fields(0, r.size):
            if fno not in _MODEL_FIELDS:
                raise invalid(path, f"field {fno} is not part of an ONNX ModelProto")
            if fno == 7:
                graph = val
        if graph is None:
            raise invalid(path, "no graph in the model")


def summarize(path: Path) -> OnnxSummary:
    """Read the signature and count the weights of an ONNX file without loading them."""
    path = Path(path)
    with Reader(path) as r:
        s = OnnxSummary(Signature((), ()))
        graph = None
        for fno, wt, val in r.fields(0, r.size):
            if fno not in _MODEL_FIELDS:
                raise invalid(path, f"field {fno} is not part of an ONNX ModelProto")
            if fno == 1 and wt == 0:
                s.ir_version = val
            elif fno == 2 and wt == 2:
                s.producer = r.text(val)
            elif fno == 7 and wt == 2:
                graph = val
            elif fno == 8 and wt == 2:
                domain, version = "", 0
                for f2, _w, v2 in r.fields(*val):
                    if f2 == 1:
                        domain = r.text(v2)
                    elif f2 == 2:
                        version = v2
                s.opsets[domain or "ai.onnx"] = version
        if graph is None:
            raise invalid(path, "no graph in the model")
        s.signature = _Graph(r, s, path.parent).read(graph, depth=0, top=True)
        return s


class _Graph:
    def __init__(self, r: Reader, s: OnnxSummary, base: Path) -> None:
        self.r, self.s, self.base = r, s, base

    def read(self, span: tuple[int, int], depth: int, top: bool) -> Signature:
        if depth > _MAX_DEPTH:
            raise Corrupt("subgraphs nested too deeply")
        r, inits = self.r, set()
        inputs: list[tuple[int, int]] = []
        outputs: list[tuple[int, int]] = []
        for fno, wt, val in r.fields(*span):
            if wt != 2:
                continue
            if fno == 1:
                self.s.nodes += 1
                self._node(val, depth)
            elif fno == 5:
                inits.add(self._tensor(val))
                self.s.initializers += 1
            elif fno == 15:  # SparseTensorProto: values(1) + indices(2)
                for f2, _w, v2 in r.fields(*val):
                    if f2 in (1, 2):
                        name = self._tensor(v2)
                        if f2 == 1:
                            inits.add(name)
                self.s.initializers += 1
            elif fno == 11 and top:
                inputs.append(val)
            elif fno == 12 and top:
                outputs.append(val)
        if not top:
            return Signature((), ())
        # Graph inputs that have an initializer are overridable constants, not model inputs.
        ins = [t for t in (self._value_info(v) for v in inputs) if t.name not in inits]
        return Signature(tuple(ins), tuple(self._value_info(v) for v in outputs))

    def _node(self, span: tuple[int, int], depth: int) -> None:
        r = self.r
        for fno, wt, val in r.fields(*span):
            if fno != 5 or wt != 2:  # attribute
                continue
            for f2, w2, v2 in r.fields(*val):
                if w2 != 2:
                    continue
                if f2 in (5, 10):  # t, tensors: Constant values and friends
                    self._tensor(v2)
                    self.s.constants += 1
                elif f2 in (22, 23):  # sparse_tensor(s)
                    for f3, _w, v3 in r.fields(*v2):
                        if f3 in (1, 2):
                            self._tensor(v3)
                elif f2 in (6, 11):  # g, graphs: If/Loop/Scan bodies
                    self.s.subgraphs += 1
                    self.read(v2, depth + 1, top=False)

    def _tensor(self, span: tuple[int, int]) -> str:
        """Count one TensorProto's bytes (as the runtime will hold them); return its name."""
        r = self.r
        dims: list[int] = []
        dtype, name, strings = 0, "", 0
        external: dict[str, str] = {}
        for fno, wt, val in r.fields(*span):
            if fno == 1:
                dims.extend(r.packed(val) if wt == 2 else [val])
            elif fno == 2 and wt == 0:
                dtype = val
            elif fno == 6 and wt == 2:
                strings += val[1] - val[0]
            elif fno == 8 and wt == 2:
                name = r.text(val)
            elif fno == 13 and wt == 2:
                key = value = ""
                for f2, _w, v2 in r.fields(*val):
                    if f2 == 1:
                        key = r.text(v2)
                    elif f2 == 2:
                        value = r.text(v2)
                external[key] = value
        if dtype not in ELEM_TYPES:
            raise Corrupt(f"tensor '{name}' has unknown data type {dtype}")
        itemsize = ELEM_TYPES[dtype][1]
        count = math.prod(max(d, 0) for d in dims)
        nbytes = strings if dtype == 8 else math.ceil(count * itemsize)
        if external:
            self._check_external(name, external, nbytes)
        self.s.weights_bytes += nbytes
        return name

    def _check_external(self, name: str, ext: dict[str, str], nbytes: int) -> None:
        location = ext.get("location", "")
        target = (self.base / location).resolve()
        if not location or Path(location).is_absolute() or ".." in Path(location).parts:
            raise Corrupt(f"initializer '{name}': external data location {location!r} must "
                          "be a relative path next to the model")
        try:
            size = target.stat().st_size
        except OSError:
            raise Incomplete(f"initializer '{name}': external data file {location!r} is "
                             "missing") from None
        offset = int(ext.get("offset", "0") or 0)
        length = int(ext.get("length", "0") or 0) or nbytes
        if offset + length > size:
            raise Incomplete(f"initializer '{name}': external data {location!r} has {size} "
                             f"bytes, needs {offset + length}")
        self.s.external_files.add(location)
        self.s.external_bytes += nbytes

    def _value_info(self, span: tuple[int, int]) -> TensorSpec:
        r = self.r
        name, datatype = "", "UNKNOWN"
        shape: tuple[int, ...] = ()
        for fno, wt, val in r.fields(*span):
            if fno == 1 and wt == 2:
                name = r.text(val)
            elif fno == 2 and wt == 2:
                datatype, shape = self._type(val)
        return TensorSpec(name, datatype, shape)

    def _type(self, span: tuple[int, int]) -> tuple[str, tuple[int, ...]]:
        r = self.r
        for fno, wt, val in r.fields(*span):
            if fno == 1 and wt == 2:  # tensor_type
                elem, dims = 0, []
                for f2, w2, v2 in r.fields(*val):
                    if f2 == 1 and w2 == 0:
                        elem = v2
                    elif f2 == 2 and w2 == 2:  # shape
                        dims = [self._dim(v3) for f3, w3, v3 in r.fields(*v2)
                                if f3 == 1 and w3 == 2]
                return ELEM_TYPES.get(elem, (f"UNKNOWN({elem})", 0))[0], tuple(dims)
            kinds = {4: "SEQUENCE", 5: "MAP", 8: "SPARSE", 9: "OPTIONAL"}
            if fno in kinds:
                return kinds[fno], ()
        return "UNKNOWN", ()

    def _dim(self, span: tuple[int, int]) -> int:
        for fno, wt, val in self.r.fields(*span):
            if fno == 1 and wt == 0:
                return int(val)
        return -1  # dim_param (symbolic) or unknown
