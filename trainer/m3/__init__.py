"""BGE-M3 (arXiv 2402.03216): one encoder, three retrieval heads (dense, sparse lexical weights, multi-vector), trained
with self-knowledge distillation. ``heads.py`` holds the two linear heads and their files, ``model.py`` the encoder
that returns all three outputs as one tensor, ``scores.py`` the three scores (shared by training and evaluation),
``loss.py`` the training loss, ``retrieval.py`` the evaluation of a retrieval task by each head and their hybrid."""

from .heads import HEAD_NAMES, M3Heads, has_heads, parse_heads, parse_weights

__all__ = ["HEAD_NAMES", "M3Heads", "has_heads", "parse_heads", "parse_weights"]
