"""Mining's embedding step as a Beam pipeline: the pool's passages (float16) and the queries (float32, so the
scores and the negatives match exact search on the model's own output) into ``.npy`` shards under the work
folder, on the local runner's worker processes or any Beam runner's workers (GPU workers when present).

Blocks are cut the same way on every runner (``embed_shard_rows`` passages, ``search_batch`` queries), and each
block is one encode call, so the shards do not depend on the runner or the number of workers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import apache_beam as beam

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.embedding.blocks import EmbedderSpec, EmbedTextBlocks, TextBlock, blocks_of
from cmtp.transforms.mine.config import MineConfig

from ..beam_runner import is_local, make_pipeline, run_to_completion
from ..progress import watch


def embedder_spec(config: MineConfig, model_name: str, workers: int) -> EmbedderSpec:
    """The model and prompts mining embeds with; local worker processes split the cores between them."""
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    return EmbedderSpec(model_name, config.query_instruction, config.passage_prompt, config.batch_size,
                        config.max_seq_length, config.device, config.allow_network, threads,
                        engine=config.engine)


def embed_blocks(blocks: list[TextBlock], spec: EmbedderSpec, config: MineConfig,
                 beam_args: list[str] | None = None, workers: int = 1) -> float:
    """Run ``EmbedTextBlocks`` over ``blocks``; returns the seconds it took. A block whose inference failed
    stops mining with its reason (a pool with holes cannot be searched)."""
    if not blocks:
        return 0.0
    workers = workers if is_local(beam_args) else 1
    started = time.perf_counter()
    with watch("mine: embed", sum(b.end - b.start for b in blocks), "text", beam_args) as progress:
        pipeline = make_pipeline(beam_args, workers)
        _ = (pipeline
             | "Blocks" >> beam.Create(blocks, reshuffle=False)
             | "Embed" >> EmbedTextBlocks(spec, config.share_model, progress))
        run_to_completion(pipeline, "the embedding pipeline")
    folders = sorted({block.out_dir for block in blocks})
    errors = sorted(e for folder in folders for e in Path(folder).glob("emb-*.error"))
    if errors:
        raise CmtpError(f"{len(errors)} embedding block(s) failed; the first: {errors[0].read_text()}")
    written = sum(len(list(Path(folder).glob("emb-*.npy"))) for folder in folders)
    if written != len(blocks):
        raise CmtpError(f"the embedding pipeline wrote {written} of {len(blocks)} shards")
    return time.perf_counter() - started


def pool_and_query_blocks(pool_texts: Path, pool_size: int, query_texts: Path, queries: int,
                          config: MineConfig, work: Path) -> list[TextBlock]:
    return (blocks_of(str(pool_texts), pool_size, config.embed_shard_rows, "passage", str(work / "pool"), "float16")
            + blocks_of(str(query_texts), queries, config.search_batch, "query", str(work / "queries"), "float32"))
