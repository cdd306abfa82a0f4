"""A small ONNX graph builder over `onnx.helper`: nodes with generated output names, initializers
from numpy arrays, de-duplicated constants. No torch, no onnxscript."""

from __future__ import annotations

from typing import Sequence

import numpy as np

OPSET = 18
# IR version 10 (onnx 1.16) is read by every onnxruntime the project supports.
IR_VERSION = 10


class GraphBuilder:
    def __init__(self, name: str):
        self.name = name
        self.nodes: list = []
        self.initializers: list = []
        self._names: set[str] = set()
        self._consts: dict[tuple, str] = {}
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def weight(self, name: str, array: np.ndarray) -> str:
        """A float32 initializer under a readable name (the checkpoint's tensor name where there is one)."""
        from onnx import numpy_helper

        if name in self._names:
            raise ValueError(f"initializer {name} defined twice")
        self._names.add(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def const(self, values, dtype=np.int64) -> str:
        """A constant initializer (scalars for a python number, 1-D for a list), shared by value."""
        from onnx import numpy_helper

        array = np.array(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = self._fresh("const")
            self.initializers.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def op(self, op_type: str, *inputs: str, name: str | None = None, **attrs) -> str:
        from onnx import helper

        output = name or self._fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=f"n{len(self.nodes)}_{op_type}", **attrs))
        return output

    def model(self, inputs: Sequence, outputs: Sequence, doc: str = ""):
        """inputs/outputs: onnx ValueInfoProtos (helper.make_tensor_value_info)."""
        from onnx import helper

        graph = helper.make_graph(self.nodes, self.name, list(inputs), list(outputs), self.initializers, doc_string=doc)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qasr")
        model.ir_version = IR_VERSION
        return model


def float_input(name: str, dims: Sequence[int | str]):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))
