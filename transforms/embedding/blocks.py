"""``EmbedTextBlocks``: embedding a column of texts stored in an Arrow file into ``.npy`` shards, one per
block of rows, on Beam workers (RunInference; GPU workers when present).

    block specs --Reshuffle--> read the block's texts --RunInference(TextBlockHandler)--> write emb-START.npy

A block is a contiguous row range ``[start, end)``: its shard is named by ``start`` (zero-padded, so the
names sort in row order), every run cuts the same blocks and encodes each block as one call, so the vectors
do not depend on the runner or the number of workers. A block whose inference raised writes
``emb-START.error`` with the reason instead: the caller decides (mining cannot search a pool with holes, so it
stops with that reason). Paths go through fsspec: a ``gs://`` work folder serves Dataflow workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference

from cmtp.transforms.common.paths import is_remote
from cmtp.transforms.common.progress import ProgressCounter

from .handler import BatchInferenceHandler, InferenceError
from .prompts import spec_prompts


@dataclass(frozen=True)
class EmbedderSpec:
    """What to load and how to embed: the model, its prompts (None: the model's own), the batch size."""

    model: str
    query_prompt: str | None = None
    passage_prompt: str | None = None
    batch_size: int = 64
    max_seq_length: int | None = 256
    device: str | None = None
    allow_network: bool = False
    threads: int | None = None  # torch threads per worker (None: torch's default, every core)
    fp16: bool = True  # half precision on cuda (never on cpu)
    engine: str = "torch"  # see embedding.engines


class TextEmbedder:
    """A loaded model with its prompts (:func:`spec_prompts`). With RunInference's model sharing a
    handler holds only a proxy to this object, in another process: attributes such as the model's ``prompts``
    read as ``None`` through it (scores once silently lost the e5 prompts that way), while method calls are
    forwarded, so everything that needs the model happens inside the methods (``embed``, ``PairScorer.score``)."""

    def __init__(self, spec: EmbedderSpec):
        from .encode import load_embedding_model

        if spec.threads:
            import torch

            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.model = load_embedding_model(spec.model, spec.device, spec.max_seq_length, spec.fp16,
                                          spec.allow_network, spec.engine)
        self.prompts = spec_prompts(spec)

    def embed(self, texts: list[str], kind: str) -> np.ndarray:
        """Normalised float32 vectors of ``texts`` as ``kind`` ("query" or "passage") with its prompt."""
        from .encode import encode

        return encode(self.model, texts, self.prompts[kind], self.spec.batch_size)


@dataclass(frozen=True)
class TextBlock:
    """Rows ``[start, end)`` of the ``text`` column of the Arrow IPC file ``texts``, embedded as ``kind``
    into ``out_dir`` as ``dtype``."""

    texts: str
    start: int
    end: int
    kind: str
    out_dir: str
    dtype: str = "float16"

    @property
    def shard_path(self) -> str:
        return f"{self.out_dir}/emb-{self.start:012d}.npy"

    @property
    def error_path(self) -> str:
        return f"{self.out_dir}/emb-{self.start:012d}.error"


def blocks_of(texts: str, rows: int, block_rows: int, kind: str, out_dir: str, dtype: str) -> list[TextBlock]:
    return [TextBlock(texts, start, min(start + block_rows, rows), kind, out_dir, dtype)
            for start in range(0, rows, block_rows)]


def read_block_texts(block: TextBlock) -> list[str]:
    """The block's texts, reading only the Arrow record batches it overlaps (memory-mapped when local)."""
    import fsspec
    import pyarrow as pa

    local = not is_remote(block.texts)
    with (pa.memory_map(block.texts.removeprefix("file://"), "r") if local else fsspec.open(block.texts, "rb")) as fh:
        reader = pa.ipc.open_file(fh)
        texts, offset = [], 0
        for i in range(reader.num_record_batches):
            if offset >= block.end:
                break
            batch = reader.get_batch(i)
            lo, hi = max(block.start - offset, 0), min(block.end - offset, batch.num_rows)
            if lo < hi:
                texts += batch.column("text").slice(lo, hi - lo).to_pylist()
            offset += batch.num_rows
    return texts


class TextBlockHandler(BatchInferenceHandler):
    """Elements are ``(block, texts)``; each result is the block's vectors."""

    metrics_namespace = "cmtp_embed"

    def __init__(self, spec: EmbedderSpec, share_model: bool = False):
        super().__init__(share_model)
        self.spec = spec

    def load_model(self) -> TextEmbedder:
        return TextEmbedder(self.spec)

    def infer(self, batch: Sequence[tuple[TextBlock, list[str]]], model: TextEmbedder) -> list[np.ndarray]:
        return [model.embed(texts, block.kind) for block, texts in batch]

    def get_num_bytes(self, batch) -> int:
        return sum(len(t) for _, texts in batch for t in texts) * 3


class _WriteBlockFn(beam.DoFn):
    """A block's vectors -> its shard (or an ``.error`` file), its texts counted for the driver's progress."""

    def __init__(self, progress_dir: str | None):
        self.progress_dir = progress_dir

    def setup(self):
        self.progress = ProgressCounter(self.progress_dir)

    def process(self, prediction):
        import fsspec

        block, _texts = prediction.example
        self.progress.add(block.end - block.start)
        if isinstance(prediction.inference, InferenceError):
            with fsspec.open(block.error_path, "w", encoding="utf-8") as fh:
                fh.write(f"rows {block.start}-{block.end} of {block.texts}: {prediction.inference}")
            yield block.error_path
            return
        with fsspec.open(block.shard_path, "wb") as fh:
            np.save(fh, prediction.inference.astype(block.dtype))
        yield block.shard_path

    def finish_bundle(self):
        self.progress.flush()


class EmbedTextBlocks(beam.PTransform):
    """Block specs -> the paths written (a shard, or an ``.error`` file for a block that failed)."""

    def __init__(self, spec: EmbedderSpec, share_model: bool = False, progress_dir: str | None = None):
        super().__init__()
        self.spec, self.share_model, self.progress_dir = spec, share_model, progress_dir

    def expand(self, blocks):
        return (
            blocks
            | "Spread" >> beam.Reshuffle()
            | "ReadTexts" >> beam.Map(lambda block: [(block, read_block_texts(block))])
            | "Embed" >> RunInference(TextBlockHandler(self.spec, self.share_model))
            | "WriteShard" >> beam.ParDo(_WriteBlockFn(self.progress_dir))
        )
