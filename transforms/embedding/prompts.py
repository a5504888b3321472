"""Prompts: which prefix a query and a passage get. The one place scoring, mining, evaluation and the trainer
take these rules from: a flag when given, else the prompts the model was saved with, else none."""

from __future__ import annotations

PASSAGE_PROMPT_NAMES = ("passage", "document", "doc", "corpus")  # names sentence-transformers models save it under
BGE_ZH_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："  # BGE's Chinese retrieval instruction ("bge")


def resolve_prompts(model, query_prompt: str | None = None, passage_prompt: str | None = None) -> tuple[str, str]:
    """(query prompt, passage prompt): the given ones when not None, else the model's own prompts, else none."""
    return choose_prompts(getattr(model, "prompts", None) or {}, query_prompt, passage_prompt)


def choose_prompts(prompts: dict[str, str], query_prompt: str | None = None,
                   passage_prompt: str | None = None) -> tuple[str, str]:
    """:func:`resolve_prompts` on a model's saved ``prompts`` mapping (``registry.saved_prompts``), for a process
    that needs the prompts but not the model."""
    query = query_prompt if query_prompt is not None else prompts.get("query", "")
    passage = passage_prompt
    if passage is None:
        passage = next((prompts[n] for n in PASSAGE_PROMPT_NAMES if n in prompts), "")
    return query, passage


def spec_prompts(spec) -> dict[str, str]:
    """{"query": ..., "passage": ...} of an ``EmbedderSpec``: its prompts, else the ones the model was saved with
    (read from its folder, so a process that only needs the prompts does not load the model)."""
    from .registry import saved_prompts

    chosen = choose_prompts(saved_prompts(spec.model, spec.allow_network), spec.query_prompt, spec.passage_prompt)
    return dict(zip(("query", "passage"), chosen, strict=True))
