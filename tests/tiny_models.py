"""Tiny sentence-transformers models built by the tests themselves (random weights, seconds to make)."""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_model(directory: Path, corpus: list[str], hidden: int = 32, layers: int = 2,
                     prompts: dict | None = None, seed: int = 0, dropout: float = 0.1) -> Path:
    """A BERT encoder (hidden 32, 2 layers) with a character WordPiece vocabulary from ``corpus``, mean
    pooling and Normalize, saved as a sentence-transformers directory."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    chars = sorted({ch for text in corpus for ch in text.lower() if not ch.isspace()})
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars + [c + "##" for c in "abc"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.BertPreTokenizer(),
                                                 pre_tokenizers.Split("", "isolated")])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=hidden * 2, max_position_embeddings=130,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    hf_dir = directory / "hf"
    BertModel(config).save_pretrained(hf_dir)
    fast.save_pretrained(hf_dir)
    st = SentenceTransformer(modules=[Transformer(str(hf_dir), max_seq_length=128), Pooling(hidden, "mean"),
                                      Normalize()], prompts=prompts or {}, device="cpu")
    out = directory / "model"
    st.save(str(out), create_model_card=False)
    return out
