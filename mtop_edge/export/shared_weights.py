"""Store each weight once: the graphs' large initializers move into one shared, deduplicated file.

The first-step decoder and the decoder-with-past hold the same weights; written separately they
double the decoder's share of the files. Every initializer above ``min_bytes`` is written once per
distinct content into ``weights.bin`` (page-aligned, so onnxruntime may map it rather than copy it)
and each graph points at it through ONNX external data. The graphs load as before, in
onnxruntime and in optimum alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from mtop_edge.manifest import WEIGHTS_FILE

ALIGN = 4096
MIN_BYTES = 1024


def _initializers(graph) -> Iterator:
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _initializers(attribute.g)


def share_weights(directory: Path, files: list[str], *, min_bytes: int = MIN_BYTES) -> dict:
    """Rewrite ``files`` in ``directory`` to read their large initializers from one shared file.

    Returns what was saved: bytes before and after, and how many tensors were shared.
    """
    import onnx
    from onnx import numpy_helper

    offsets: dict[bytes, tuple[int, int]] = {}
    moved = shared = 0
    before = sum((directory / name).stat().st_size for name in files)
    with (directory / WEIGHTS_FILE).open("wb") as data:
        for name in files:
            model = onnx.load(str(directory / name))
            for tensor in _initializers(model.graph):
                raw = tensor.raw_data or numpy_helper.to_array(tensor).tobytes()
                if len(raw) < min_bytes or tensor.data_type == onnx.TensorProto.STRING:
                    continue
                key = hashlib.sha256(raw).digest() + tensor.data_type.to_bytes(2, "little")
                if key in offsets:
                    shared += 1
                else:
                    position = -data.tell() % ALIGN
                    data.write(b"\0" * position)
                    offsets[key] = (data.tell(), len(raw))
                    data.write(raw)
                offset, length = offsets[key]
                tensor.ClearField("raw_data")
                for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                    tensor.ClearField(field)
                tensor.data_location = onnx.TensorProto.EXTERNAL
                del tensor.external_data[:]
                for k, v in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = k, v
                moved += 1
            onnx.save(model, str(directory / name))
    after = sum((directory / name).stat().st_size for name in [*files, WEIGHTS_FILE])
    return {
        "file": WEIGHTS_FILE,
        "tensors": moved,
        "shared_tensors": shared,
        "bytes_before": before,
        "bytes_after": after,
    }
