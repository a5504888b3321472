"""Embedding texts in batches into float16 shards on disk, so the pool never has to fit in memory, and a
memory-mapped text store beside them for fetching negatives by index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from cmtp.transforms.common.ids import stable_id
from cmtp.transforms.dedup.shingles import normalize


def text_key(text: str) -> int:
    """64-bit key of the normalised text: equal keys = the same passage up to case, width and punctuation."""
    return int(stable_id(normalize(text)), 16)


class PoolStore:
    """Pool texts (Arrow IPC, memory-mapped), their normalised-text keys, and embedding shards (.npy)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._texts = None
        self.shards: list[Path] = []
        self._maps: list[np.ndarray] = []
        self.keys = np.zeros(0, dtype=np.uint64)
        self.clusters: list[str | None] = []
        self._key_order: np.ndarray | None = None  # argsort of keys, built on the first lookup

    # -- texts -------------------------------------------------------------------------------------------
    def write_texts(self, items) -> int:
        """Store unique texts (by normalised key); returns how many. ``items``: (text, cluster id)."""
        seen: set[int] = set()
        keys, texts, clusters = [], [], []
        schema = pa.schema([("text", pa.string())])
        with pa.OSFile(str(self.dir / "texts.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for text, cluster in items:
                key = text_key(text)
                if key in seen:
                    continue
                seen.add(key)
                keys.append(key)
                texts.append(text)
                clusters.append(cluster)
                if len(texts) >= 65536:
                    writer.write_batch(pa.record_batch([pa.array(texts)], schema=schema))
                    texts = []
            if texts:
                writer.write_batch(pa.record_batch([pa.array(texts)], schema=schema))
        self.keys = np.array(keys, dtype=np.uint64)
        self.clusters = clusters
        self._texts = None
        self._key_order = None
        return len(keys)

    @property
    def texts(self) -> pa.ChunkedArray:
        if self._texts is None:
            source = pa.memory_map(str(self.dir / "texts.arrow"), "r")
            self._texts = pa.ipc.open_file(source).read_all().column("text")
        return self._texts

    def __len__(self) -> int:
        return len(self.keys)

    def text(self, index: int) -> str:
        return self.texts[int(index)].as_py()

    def iter_text_batches(self, size: int):
        batch = []
        for chunk in self.texts.chunks:
            for value in chunk.to_pylist():
                batch.append(value)
                if len(batch) == size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    # -- embeddings ----------------------------------------------------------------------------------------
    def write_embeddings(self, encode, shard_rows: int) -> None:
        """Embed every text with ``encode(list[str]) -> float32 [n, d]`` into float16 shards."""
        self.shards, self._maps = [], []
        buffer, index = [], 0
        for batch in self.iter_text_batches(min(shard_rows, 4096)):
            buffer.append(encode(batch).astype(np.float16))
            if sum(len(b) for b in buffer) >= shard_rows:
                self._flush(buffer, index)
                buffer, index = [], index + 1
        if buffer:
            self._flush(buffer, index)

    def _flush(self, buffer, index):
        path = self.dir / f"emb-{index:05d}.npy"
        np.save(path, np.concatenate(buffer))
        self.shards.append(path)

    def shard(self, i: int) -> np.ndarray:
        """Shard ``i`` memory-mapped (opened once)."""
        if len(self._maps) != len(self.shards):
            self._maps = [np.load(path, mmap_mode="r") for path in self.shards]
        return self._maps[i]

    def shard_offsets(self) -> list[int]:
        sizes = [len(self.shard(i)) for i in range(len(self.shards))]
        return [int(x) for x in np.cumsum([0] + sizes[:-1])]

    def vectors(self, indices) -> np.ndarray:
        """float32 embeddings of the given pool rows (one fancy-indexed read per shard)."""
        indices = np.asarray(indices, dtype=np.int64)
        offsets = np.array(self.shard_offsets())
        which = np.searchsorted(offsets, indices, side="right") - 1
        out = np.empty((len(indices), self.shard(0).shape[1]), dtype=np.float32)
        for s in np.unique(which):
            rows = np.flatnonzero(which == s)
            out[rows] = self.shard(int(s))[indices[rows] - offsets[s]]
        return out

    def lookup(self, texts: list[str]) -> np.ndarray:
        """Pool index of each text (by normalised key), -1 when absent. The key order is sorted once, not per
        call (mining looks up every example's positives and labeled negatives)."""
        if self._key_order is None or len(self._key_order) != len(self.keys):
            self._key_order = np.argsort(self.keys)
        order = self._key_order
        sorted_keys = self.keys[order]
        wanted = np.array([text_key(t) for t in texts], dtype=np.uint64)
        pos = np.clip(np.searchsorted(sorted_keys, wanted), 0, max(len(sorted_keys) - 1, 0))
        found = len(sorted_keys) > 0
        hit = found & (sorted_keys[pos] == wanted) if found else np.zeros(len(wanted), bool)
        return np.where(hit, order[pos] if found else -1, -1)
