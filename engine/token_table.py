"""The decoder's token embedding rows, read from its GGUF file, exactly as llama.cpp's get_rows gives them.

A llama.cpp batch holds token ids or embeddings, never both. To put the prompt's text positions into the
same decode as the audio embeddings (one pass over the weights instead of two or three), the text
positions go in as their embedding rows. llama.cpp dequantizes a row with one float32 multiply per
value (q8_0: int8 * f16 scale; f16/bf16/f32 are exact conversions), which numpy reproduces bit for bit;
for other types (k-quants) `open_token_table` returns None and the caller feeds token ids.

The file is memory-mapped: only the rows looked up are read (a few KB each), not the ~165 MB table.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_GGUF_MAGIC = b"GGUF"
_F32, _F16, _Q8_0, _BF16 = 0, 1, 8, 30  # ggml_type ids
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Reader:
    def __init__(self, data: memoryview):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> bytes:
        n = self.take("<Q")
        self.pos += n
        return bytes(self.data[self.pos - n : self.pos])

    def skip_value(self, vtype: int):
        """Skip a value; returns it for scalars (general.alignment is one)."""
        if vtype == _STRING:
            n = self.take("<Q")
            self.pos += n
        elif vtype == _ARRAY:
            item, n = self.take("<I"), self.take("<Q")
            if item == _STRING:
                for _ in range(n):
                    size = self.take("<Q")
                    self.pos += size
            elif item in _SCALAR:
                self.pos += n * struct.calcsize(_SCALAR[item])
            else:
                for _ in range(n):
                    self.skip_value(item)
        else:
            return self.take(_SCALAR[vtype])
        return None


class TokenTable:
    def __init__(self, raw: np.ndarray, ggml_type: int, n_embd: int):
        self._raw, self._type, self.n_embd = raw, ggml_type, n_embd

    def rows(self, ids) -> np.ndarray:
        """float32 [len(ids), n_embd]: what llama.cpp's input layer makes of these token ids."""
        raw = self._raw[np.asarray(ids, dtype=np.int64).reshape(-1)]
        if not len(raw):
            return np.empty((0, self.n_embd), dtype=np.float32)
        if self._type == _F32:
            return raw.view("<f4").astype(np.float32)
        if self._type == _F16:
            return raw.view("<f2").astype(np.float32)
        if self._type == _BF16:
            return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        blocks = raw.reshape(len(raw), -1, 34)  # q8_0: f16 scale + 32 int8 per block
        scale = blocks[:, :, :2].copy().view("<f2").astype(np.float32)
        quants = blocks[:, :, 2:].view(np.int8).astype(np.float32)
        return (quants * scale).reshape(len(raw), self.n_embd)


def open_token_table(gguf_path: str | Path, name: str = "token_embd.weight") -> TokenTable | None:
    """The table of `gguf_path`, or None when its type has no exact numpy twin here (or it is missing, or
    the file is not a GGUF this reader follows: the caller then feeds token ids)."""
    try:
        return _open(gguf_path, name)
    except (OSError, ValueError, KeyError, IndexError, OverflowError, struct.error):
        return None


def _open(gguf_path: str | Path, name: str) -> TokenTable | None:
    mm = np.memmap(gguf_path, dtype=np.uint8, mode="r")
    r = _Reader(memoryview(mm))
    if bytes(r.data[:4]) != _GGUF_MAGIC:
        return None
    r.pos = 4
    version, n_tensors, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
    if version < 2:
        return None
    alignment = 32
    for _ in range(n_kv):
        key, vtype = r.string(), r.take("<I")
        value = r.skip_value(vtype)
        if key == b"general.alignment":
            alignment = int(value)
    found = None
    for _ in range(n_tensors):
        tname, n_dims = r.string(), r.take("<I")
        dims = [r.take("<Q") for _ in range(n_dims)]
        ggml_type, offset = r.take("<I"), r.take("<Q")
        if tname == name.encode():
            found = (dims, ggml_type, offset)
    if found is None or found[1] not in (_F32, _F16, _Q8_0, _BF16) or len(found[0]) != 2:
        return None
    (n_embd, n_vocab), ggml_type, offset = found
    start = -(-r.pos // alignment) * alignment + offset
    row_bytes = {_F32: 4 * n_embd, _F16: 2 * n_embd, _BF16: 2 * n_embd, _Q8_0: n_embd // 32 * 34}[ggml_type]
    raw = mm[start : start + row_bytes * n_vocab].reshape(n_vocab, row_bytes)
    return TokenTable(raw, ggml_type, int(n_embd))
