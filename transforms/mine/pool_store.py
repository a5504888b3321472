"""The candidate pool on disk: unique texts with their cluster ids and normalised-text keys (Arrow IPC, memory-
mapped), and float16 embedding shards beside them, so the pool never has to fit in memory and worker processes
open the same pool."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa

from cmtp.transforms.common.ids import stable_id
from cmtp.transforms.dedup.shingles import normalize


def text_key(text: str) -> int:
    """64-bit key of the normalised text: equal keys = the same passage up to case, width and punctuation."""
    return int(stable_id(normalize(text)), 16)


TEXT_BATCH_ROWS = 65536


def write_text_file(path: Path, rows, names: tuple[str, ...], batch_rows: int = TEXT_BATCH_ROWS) -> None:
    """String columns ``names`` of ``rows`` (tuples, streamed) into an Arrow IPC file, in record batches of
    ``batch_rows`` (the unit ``EmbedTextBlocks`` reads a block's rows from)."""
    schema = pa.schema([(name, pa.string()) for name in names])
    rows = iter(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        while chunk := list(islice(rows, batch_rows)):
            writer.write_batch(pa.record_batch([pa.array(column, pa.string()) for column in zip(*chunk, strict=True)],
                                               schema=schema))


class VectorShards:
    """Row-ordered ``emb-START.npy`` shards of one folder, memory-mapped: the pool's passages or the queries."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shards: list[Path] = []
        self._maps: list[np.ndarray] = []

    def attach_shards(self) -> list[Path]:
        """Take the shards written into the folder (by ``EmbedTextBlocks`` or :meth:`write_embeddings`)."""
        self.shards, self._maps = sorted(self.dir.glob("emb-*.npy")), []
        return self.shards

    def release(self) -> None:
        """Unmap the shards (mapped again when next read): their touched pages leave this process's memory."""
        self._maps = []

    def write_embeddings(self, encode, shard_rows: int, texts) -> None:
        """Embed in this process: ``texts`` in blocks of ``shard_rows`` with ``encode(list[str]) -> [n, d]``
        (float16 shards named as ``EmbedTextBlocks`` names them; tests and benchmarks use it)."""
        for old in self.dir.glob("emb-*.npy"):
            old.unlink()
        start = 0
        for batch in texts(shard_rows):
            np.save(self.dir / f"emb-{start:012d}.npy", encode(batch).astype(np.float16))
            start += len(batch)
        self.attach_shards()

    def shard(self, i: int) -> np.ndarray:
        """Shard ``i`` memory-mapped (opened once)."""
        if len(self._maps) != len(self.shards):
            self._maps = [np.load(path, mmap_mode="r") for path in self.shards]
        return self._maps[i]

    def shard_offsets(self) -> list[int]:
        sizes = [len(self.shard(i)) for i in range(len(self.shards))]
        return [int(x) for x in np.cumsum([0] + sizes[:-1])]

    def vectors(self, indices) -> np.ndarray:
        """float32 embeddings of the given rows (one fancy-indexed read per shard)."""
        indices = np.asarray(indices, dtype=np.int64)
        offsets = np.array(self.shard_offsets())
        which = np.searchsorted(offsets, indices, side="right") - 1
        out = np.empty((len(indices), self.shard(0).shape[1]), dtype=np.float32)
        for s in np.unique(which):
            rows = np.flatnonzero(which == s)
            out[rows] = self.shard(int(s))[indices[rows] - offsets[s]]
        return out


class PoolStore(VectorShards):
    """Pool texts (Arrow IPC, memory-mapped) with their cluster ids, their normalised-text keys, and their
    embedding shards. Everything is on disk, so worker processes open the same pool (:meth:`open`)."""

    def __init__(self, directory: Path):
        super().__init__(directory)
        self._texts = None
        self.keys = np.zeros(0, dtype=np.uint64)
        self._clusters = None
        self._key_order: np.ndarray | None = None  # argsort of keys, built on the first lookup

    @classmethod
    def open(cls, directory: Path) -> PoolStore:
        """A pool written by another process: keys, cluster ids and embedding shards from the folder."""
        store = cls(directory)
        store.keys = np.load(directory / "keys.npy")
        store.attach_shards()
        return store

    @property
    def texts_path(self) -> Path:
        return self.dir / "texts.arrow"

    # -- texts -------------------------------------------------------------------------------------------
    def write_texts(self, items) -> int:
        """Store unique texts (by normalised key, first occurrence kept, in input order); returns how many.
        ``items``: (text, cluster id) pairs, or a function that yields them afresh (read twice: once for the keys,
        once to write; a set of every key seen grew with the pool, 110 MB of Python ints at 1M passages)."""
        if not callable(items):
            items = (lambda seq: lambda: iter(seq))(items if isinstance(items, list | tuple) else list(items))
        keys = np.fromiter((text_key(text) for text, _ in items()), dtype=np.uint64)
        keep = np.zeros(len(keys), dtype=bool)
        keep[np.unique(keys, return_index=True)[1]] = True
        write_text_file(self.texts_path, (item for item, first in zip(items(), keep, strict=True) if first),
                        ("text", "cluster_id"), TEXT_BATCH_ROWS)
        self.keys = keys[keep]
        np.save(self.dir / "keys.npy", self.keys)
        self.release()
        self._key_order = None
        return len(self.keys)

    def release(self) -> None:
        """Unmap the pool's texts and vectors: mapped pages a search touched count in this process's memory until
        unmapped (the whole texts file, after a pass over random candidates). Mining calls it per query block."""
        super().release()
        self._texts, self._clusters = None, None

    @property
    def table(self) -> pa.Table:
        return pa.ipc.open_file(pa.memory_map(str(self.texts_path), "r")).read_all()

    @property
    def texts(self) -> pa.ChunkedArray:
        if self._texts is None:
            self._texts = self.table.column("text")
        return self._texts

    def __len__(self) -> int:
        return len(self.keys)

    def clusters(self, indices: np.ndarray) -> list[str | None]:
        """The cluster ids of pool rows (read from the memory-mapped file, never held as a list of the pool)."""
        if self._clusters is None:
            self._clusters = self.table.column("cluster_id")
        return self._clusters.take(pa.array(np.asarray(indices, dtype=np.int64))).to_pylist()

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

    def write_embeddings(self, encode, shard_rows: int, texts=None) -> None:
        super().write_embeddings(encode, shard_rows, texts or self.iter_text_batches)

    def lookup(self, texts: list[str]) -> np.ndarray:
        """Pool index of each text (by normalised key), -1 when absent. The key order is sorted once, not per
        call (mining looks up every example's positives and labeled negatives)."""
        if self._key_order is None or len(self._key_order) != len(self.keys):
            self._key_order = np.argsort(self.keys)
            self._sorted_keys = self.keys[self._key_order]  # once, not a copy of the pool's keys per query
        order, sorted_keys = self._key_order, self._sorted_keys
        wanted = np.array([text_key(t) for t in texts], dtype=np.uint64)
        pos = np.clip(np.searchsorted(sorted_keys, wanted), 0, max(len(sorted_keys) - 1, 0))
        found = len(sorted_keys) > 0
        hit = found & (sorted_keys[pos] == wanted) if found else np.zeros(len(wanted), bool)
        return np.where(hit, order[pos] if found else -1, -1)
