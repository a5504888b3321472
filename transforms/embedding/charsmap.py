"""The SentencePiece ``nmt_nfkc`` normaliser for the converted tokenizer, compiled by sentencepiece itself.

HF ``tokenizers`` reproduces SentencePiece normalisation with a ``Precompiled`` normaliser that needs the
compiled character map (a double-array trie). Only sentencepiece's trainer compiles one, so we train a
throw-away 20-piece model with ``normalization_rule_name='nmt_nfkc'`` and lift the map out of the serialised
model. The model is read with a few lines of protobuf wire-format parsing rather than sentencepiece's
generated ``sentencepiece_model_pb2``, because that module needs protobuf >= 7 and Apache Beam pins < 7.
"""

from __future__ import annotations

import io
from functools import lru_cache

# ModelProto.normalizer_spec is field 3; NormalizerSpec.precompiled_charsmap is field 2 (sentencepiece_model.proto).
_NORMALIZER_SPEC_FIELD = 3
_PRECOMPILED_CHARSMAP_FIELD = 2


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _length_delimited_field(buf: bytes, wanted: int) -> bytes:
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, i = _varint(buf, i)
        elif wire_type == 1:
            i += 8
        elif wire_type == 5:
            i += 4
        elif wire_type == 2:
            length, i = _varint(buf, i)
            if number == wanted:
                return buf[i : i + length]
            i += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
    raise KeyError(f"field {wanted} not present")


@lru_cache(maxsize=1)
def nmt_nfkc_charsmap() -> bytes:
    """Return sentencepiece's compiled ``nmt_nfkc`` character map (about 240 kB)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["cmtp charsmap bootstrap text"] * 8),
        model_writer=model,
        vocab_size=20,
        hard_vocab_limit=False,
        normalization_rule_name="nmt_nfkc",
        minloglevel=2,
    )
    spec = _length_delimited_field(model.getvalue(), _NORMALIZER_SPEC_FIELD)
    return _length_delimited_field(spec, _PRECOMPILED_CHARSMAP_FIELD)
