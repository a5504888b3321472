"""Streaming training examples from Parquet shards into the trainer, with an exact, resumable position.

Neither ``datasets`` streaming nor PyTorch's loaders record where an iterable stream stands, so a resumed run
would have to replay (and re-read) everything it had already trained on; this module is written for that.

* Work units are Parquet row groups (from any fsspec path). Each epoch they are permuted with a seed, then
  dealt round-robin to the global readers (rank x dataloader worker), so readers never overlap and, taken
  together, see every row group exactly once.
* A reader takes its units ``shuffle_units`` at a time, concatenates them and shuffles the rows with a seed
  derived from (seed, epoch, reader, block): a block shuffle, i.e. a shuffle buffer whose content is known
  from the position alone.
* The position of a reader is (epoch, block, offset). Every batch carries its reader's position after it;
  a checkpoint stores the latest one of each reader, and a resumed stream reads only the current block again
  and skips ``offset`` rows in it.
* ``group_by_length``: a reader takes ``GROUP_BATCHES`` batches' rows at a time, orders them by length, cuts them
  into batches and serves those in a seeded order, so a batch pads to texts of about its own length. Its position
  is the reader's before that group and the batches served from it: a resumed stream rebuilds the same group.
* Several datasets mix by weights, drawn per batch with a generator seeded by (seed, epoch, step), so that
  with ``same_source_batches`` all ranks draw the same source for a step and each global batch holds one source.

Rows of the ``training_example`` schema are used as they are; ``pair`` / ``scored_pair`` rows (stage 2 data)
become query = title, pos = [passage]; ``pretrain_text`` rows (stage 1) query = pos = text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from cmtp.schemas.errors import CmtpError
from cmtp.schemas.validate import training_example_problems
from cmtp.transforms.common.ids import stable_id
from cmtp.transforms.common.paths import parquet_files, row_groups

COLUMNS_EXAMPLE = ["example_id", "query", "pos", "neg", "instruction", "source", "pos_scores", "neg_scores"]
COLUMNS_PAIR = ["pair_id", "title", "passage", "source"]
COLUMNS_TEXT = ["text_id", "text", "source"]


@dataclass
class DataSource:
    """One dataset of the mix: Parquet files (paths or globs, any fsspec URL) and its sampling weight."""

    name: str
    paths: list[str]
    weight: float = 1.0

    def __post_init__(self):
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float) or not self.weight > 0:
            raise CmtpError(f"dataset {self.name}: its weight must be a positive number, not {self.weight!r}")


@dataclass(frozen=True)
class Unit:
    """What one reader reads at a time: a row group, or slice ``part`` of ``parts`` equal slices of it."""

    path: str
    row_group: int
    rows: int
    part: int = 0
    parts: int = 1

    def bounds(self, total: int) -> tuple[int, int]:
        """Where this slice starts and ends among the ``total`` rows of its row group."""
        return self.part * total // self.parts, (self.part + 1) * total // self.parts


TRAINING_SUBDIRS = ("examples", "kept", "pairs")  # a stage's output folder as data: mine's, score's, dedup's


def training_files(path: str) -> list[str]:
    """The Parquet files of a data path. A stage's output folder (it holds ``manifest.json``) means its data
    subfolder: read whole, score's folder mixed its rejected pairs into training. An extract folder holds
    pairs/ (stage 2) and pretrain/ (stage 1): which one is for the user to say."""
    try:
        fs, _, roots = fsspec.get_fs_token_paths(path)
    except (ValueError, ImportError):  # an unknown protocol: parquet_files says so
        return parquet_files(path)
    base = roots[0].rstrip("/") if len(roots) == 1 else ""
    if not base or not fs.isfile(f"{base}/manifest.json"):  # a glob, a file or a plain folder
        return parquet_files(path)
    check_one_kind(path, [name for name in ("pairs", "pretrain") if fs.isdir(f"{base}/{name}")])
    return parquet_files(path, TRAINING_SUBDIRS)


def data_fingerprint(sources) -> dict[str, str]:
    """Per dataset name, a digest of its Parquet files: name, size and footer of each (the footer holds every row
    group's offsets, sizes and column statistics), so rewritten text or fewer rows show without reading the data.
    A resumed run checks it: its stream positions point into the files it trained on."""
    import hashlib
    import posixpath

    out = {}
    for source in sources:
        h = hashlib.sha256()
        for path in sorted(f for p in source.paths for f in training_files(p)):
            with fsspec.open(path, "rb") as fh:
                size = fh.seek(0, 2)
                fh.seek(max(0, size - 8))
                tail = fh.read(8)
                length = int.from_bytes(tail[:4], "little") if len(tail) == 8 else 0
                fh.seek(max(0, size - 8 - length))
                footer = fh.read(length)
            h.update(f"{posixpath.basename(path)}\x1f{size}\x1f".encode())
            h.update(hashlib.sha256(footer).digest())
        out[source.name] = h.hexdigest()[:16]
    return out


def check_one_kind(path: str, subfolders) -> None:
    """A stage folder given as training data must hold one kind of data: extract's holds both kinds."""
    if {"pairs", "pretrain"} <= set(subfolders):
        raise CmtpError(f"{path} holds pairs/ (title-passage, stage 2) and pretrain/ (texts, stage 1): name one, "
                        f"e.g. {path.rstrip('/')}/pretrain")


def list_units(paths: list[str]) -> list[Unit]:
    """The non-empty row groups of every Parquet file the paths give (``training_files``), sorted for
    determinism."""
    units = [Unit(g.path, g.row_group, g.rows) for path in paths for g in row_groups(training_files(path)) if g.rows]
    if not units:
        raise CmtpError(f"no training rows under {', '.join(paths)}")
    return units


def split_units(units: list[Unit], needed: int) -> list[Unit]:
    """At least ``needed`` units, cutting every row group into equal slices when there are fewer (a small
    fine-tuning set on many ranks: a rank without a unit would stop the others at their next collective call);
    the same units when there are enough, so runs and their resume positions are as before."""
    if len(units) >= needed:
        return units
    parts, sliced = -(-needed // len(units)), []
    for unit in units:
        for k in range(parts):
            part = Unit(unit.path, unit.row_group, 0, k, parts)
            lo, hi = part.bounds(unit.rows)
            if hi > lo:
                sliced.append(replace(part, rows=hi - lo))
    return sliced


def usable(row: dict[str, Any]) -> bool:
    """A row the trainer can use (``schemas.validate.training_example_problems`` finds nothing)."""
    return not training_example_problems(row)


def in_holdout(row: dict[str, Any], fraction: float) -> bool:
    """Whether a row belongs to the held-out evaluation share: a stable hash of its id (or query), so training
    and evaluation agree on the split without any bookkeeping."""
    if fraction <= 0:
        return False
    key = row.get("example_id") or row.get("query") or ""
    return int(stable_id("holdout", key), 16) % 1_000_000 < fraction * 1_000_000


def _read_unit(unit: Unit, holdout: float = 0.0) -> tuple[list[dict[str, Any]], int]:
    """The usable rows of one unit that are not held out, and how many were not usable (the trainer reports
    them)."""
    with fsspec.open(unit.path, "rb") as fh:
        f = pq.ParquetFile(fh)
        names = f.schema_arrow.names
        pair = {"title", "passage"} <= set(names)

        def read(columns: list[str]) -> list[dict[str, Any]]:  # the unit's rows (its slice of the row group)
            table = f.read_row_group(unit.row_group, columns=[c for c in columns if c in names])
            lo, hi = unit.bounds(table.num_rows)
            return table.slice(lo, hi - lo).to_pylist()

        if {"query", "pos"} <= set(names):
            rows = read(COLUMNS_EXAMPLE)
        elif pair or {"text_id", "text"} <= set(names):  # pretrain_text (stage 1): a text is its own pair
            key, query, passage = ("pair_id", "title", "passage") if pair else ("text_id", "text", "text")
            rows = [{"example_id": r.get(key), "query": r[query], "pos": [r[passage]], "neg": [], "instruction": None,
                     "source": r.get("source"), "pos_scores": [], "neg_scores": []}
                    for r in read(COLUMNS_PAIR if pair else COLUMNS_TEXT)]
        else:
            raise CmtpError(f"{unit.path} has neither training-example columns (query, pos), pair columns "
                            f"(title, passage) nor text columns (text_id, text)")
    good = [r for r in rows if usable(r)]
    return [r for r in good if not in_holdout(r, holdout)], len(rows) - len(good)


def holdout_rows(paths: list[str], fraction: float, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` usable held-out rows of the files behind ``paths``, in file order."""
    out: list[dict[str, Any]] = []
    for unit in list_units(paths):
        good, _ = _read_unit(unit)
        out += [r for r in good if in_holdout(r, fraction)]
        if len(out) >= limit:
            return out[:limit]
    return out


def _rng(*parts: Any) -> np.random.Generator:
    return np.random.default_rng([int(stable_id(*map(str, parts)), 16) & 0xFFFFFFFF, len(parts)])


@dataclass
class ReaderPosition:
    epoch: int = 0
    block: int = 0
    offset: int = 0


class SourceReader:
    """The rows of one dataset that one global reader owns, in block-shuffled order, from a position."""

    def __init__(self, units: list[Unit], reader: int, readers: int, seed: int, shuffle_units: int,
                 position: ReaderPosition, holdout: float = 0.0):
        self.units, self.reader, self.readers, self.holdout = units, reader, readers, holdout
        self.seed, self.shuffle_units = seed, max(1, shuffle_units)
        self.position = ReaderPosition(**vars(position))
        self._rows: list[dict] = []
        self.malformed = 0  # unusable rows passed since the last batch (each counted once: in the first epoch)
        self._load()

    def _my_units(self, epoch: int) -> list[Unit]:
        order = _rng(self.seed, "units", epoch).permutation(len(self.units))
        return [self.units[i] for i in order[self.reader :: self.readers]]

    def _load(self) -> None:
        """Fill the current block and skip to the offset, advancing past finished epochs and past blocks whose
        rows are all unusable (those rows are counted as malformed)."""
        self._block_malformed = 0
        for _ in range(3):  # three epoch ends crossed in one call: a whole epoch without a usable row
            mine = self._my_units(self.position.epoch)
            while self.position.block * self.shuffle_units < len(mine):
                start = self.position.block * self.shuffle_units
                rows, bad = [], 0
                for unit in mine[start : start + self.shuffle_units]:
                    good, dropped = _read_unit(unit, self.holdout)
                    rows += good
                    bad += dropped
                if rows:
                    order = _rng(self.seed, "rows", self.position.epoch, self.reader,
                                 self.position.block).permutation(len(rows))
                    self._rows = [rows[i] for i in order]
                    self._block_malformed = bad  # counted when its first row is taken: a resume cannot recount
                    return
                self.malformed += bad if self.position.epoch == 0 else 0
                self.position = ReaderPosition(self.position.epoch, self.position.block + 1, 0)
            self.position = ReaderPosition(self.position.epoch + 1, 0, 0)
        self._rows = []  # this reader owns no unit (more readers than row groups), or no usable row

    @property
    def epoch(self) -> int:
        """The epoch of the next row."""
        return self.position.epoch

    def saved(self) -> dict:
        """The position a checkpoint stores."""
        return vars(self.position).copy()

    def take(self, n: int, stop_at_epoch_end: bool = False) -> list[dict]:
        out: list[dict] = []
        epoch = self.position.epoch
        while len(out) < n and self._rows:
            if self.position.offset == 0 and self.position.epoch == 0:  # later epochs skip the same rows again
                self.malformed += self._block_malformed
            chunk = self._rows[self.position.offset : self.position.offset + n - len(out)]
            out += chunk
            self.position.offset += len(chunk)
            if self.position.offset >= len(self._rows):
                self.position = ReaderPosition(self.position.epoch, self.position.block + 1, 0)
                self._load()
                if stop_at_epoch_end and self.position.epoch != epoch:
                    break
        return out


GROUP_BATCHES = 16  # batches ordered by length together: more pads less but spreads a length over fewer steps


def example_length(row: dict[str, Any]) -> tuple[int, int]:
    """What a row pads a batch to, in characters (about a token each in Chinese): its longest passage (the
    passage tensor holds every positive and negative, the largest), then its query."""
    return max(map(len, row["pos"] + row["neg"]), default=0), len(row["query"])


class LengthGroups:
    """Length-grouped batches of one reader (``group_by_length``). HF's ``LengthGroupedSampler`` does this for a
    map-style dataset's indices; here the rows arrive as a stream with a resumable position, so it is written for
    it."""

    def __init__(self, reader: SourceReader, batch_size: int, seed: int, stop_at_epoch_end: bool, served: int = 0):
        self.reader, self.batch_size, self.seed, self.stop_at_epoch_end = reader, batch_size, seed, stop_at_epoch_end
        self.pending: list[list[dict]] = []
        self.start, self.served = ReaderPosition(**vars(reader.position)), 0
        if served:  # resumed inside a group: rebuild it, its malformed rows were reported with its first batch
            self._fill()
            del self.pending[:served]
            self.served = served
            reader.malformed = 0

    def _fill(self) -> None:
        self.start, self.served = ReaderPosition(**vars(self.reader.position)), 0
        rows = self.reader.take(self.batch_size * GROUP_BATCHES, self.stop_at_epoch_end)
        order = sorted(range(len(rows)), key=lambda i: (example_length(rows[i]), i), reverse=True)
        batches = [[rows[i] for i in order[k : k + self.batch_size]] for k in range(0, len(order), self.batch_size)]
        shuffle = _rng(self.seed, "groups", self.reader.reader, self.start.epoch, self.start.block, self.start.offset)
        self.pending = [batches[i] for i in shuffle.permutation(len(batches))]

    @property
    def epoch(self) -> int:
        """The epoch of the next batch."""
        return self.start.epoch if self.pending else self.reader.position.epoch

    @property
    def malformed(self) -> int:
        return self.reader.malformed

    @malformed.setter
    def malformed(self, value: int) -> None:
        self.reader.malformed = value

    def take(self, n: int, stop_at_epoch_end: bool = False) -> list[dict]:
        if not self.pending:
            self._fill()
        if not self.pending:
            return []
        self.served += 1
        return self.pending.pop(0)

    def saved(self) -> dict:
        if not self.pending:  # the group is spent: the next one starts where the reader stands
            return {**vars(self.reader.position), "served": 0}
        return {**vars(self.start), "served": self.served}


@dataclass
class StreamConfig:
    sources: list[DataSource]
    batch_size: int  # examples per rank per step
    seed: int = 0
    shuffle_units: int = 4  # row groups shuffled together
    same_source_batches: bool = False
    epochs: int | None = None  # None: endless (the trainer stops at max_steps)
    holdout: float = 0.0  # share of rows kept out of training for evaluation (by a stable hash of the id)
    group_by_length: bool = False  # batches of rows of about the same length (LengthGroups)
    state: dict = field(default_factory=dict)  # a checkpoint's positions


class ParquetStream(IterableDataset):
    """Yields ready batches ``{"examples": [...], "source": name, "position": {...}, "malformed": n}`` for one
    rank; ``malformed`` counts the unusable rows skipped since the previous batch."""

    def __init__(self, config: StreamConfig, rank: int = 0, world_size: int = 1, workers: int = 0):
        self.config, self.rank, self.world_size = config, rank, world_size
        # units are dealt to the readers (ranks x loader workers) in turn: the last rank's first reader needs one.
        # Every rank finds the same, before any collective call, so data too small even in slices stops them all
        first_reader = (world_size - 1) * max(workers, 1)
        self.units = {s.name: split_units(list_units(s.paths), first_reader + 1) for s in config.sources}
        if max(len(units) for units in self.units.values()) <= first_reader:
            rows = max(sum(u.rows for u in units) for units in self.units.values())
            raise CmtpError(f"the data has {rows} row(s) for {world_size} processes x {max(workers, 1)} loader "
                            f"worker(s): process {world_size - 1} would read nothing; run fewer processes or "
                            "--workers")
        self.weights = np.array([s.weight for s in config.sources], dtype=np.float64)  # positive (DataSource)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        reader = self.rank * workers + worker
        readers = self.world_size * workers
        key = reader_key(reader, readers)
        state = self.config.state.get(key, {})
        step = state.get("step", worker)  # this reader produces steps worker, worker + workers, ...
        last_epoch = (self.config.epochs - 1) if self.config.epochs else None
        sources = {s.name: self._reader(s, i, reader, readers, state.get("sources", {}).get(s.name, {}),
                                        last_epoch is not None)
                   for i, s in enumerate(self.config.sources)}
        names = [s.name for s in self.config.sources]
        exhausted: set[str] = set()
        while len(exhausted) < len(names):
            live = [i for i, n in enumerate(names) if n not in exhausted]
            weights = self.weights[live] / self.weights[live].sum()
            # same_source_batches: the same draw on every rank for this step, so a global batch has one source
            draw = _rng(self.config.seed, "mix", step) if self.config.same_source_batches else \
                _rng(self.config.seed, "mix", step, self.rank)
            choice = names[live[int(draw.choice(len(live), p=weights))]]
            reader_state = sources[choice]
            epoch_before = reader_state.epoch
            if last_epoch is not None and epoch_before > last_epoch:
                exhausted.add(choice)
                continue
            examples = reader_state.take(self.config.batch_size, stop_at_epoch_end=last_epoch is not None)
            if not examples:
                exhausted.add(choice)
                continue
            step += workers
            position = {"step": step, "sources": {n: r.saved() for n, r in sources.items()}}
            malformed = sum(r.malformed for r in sources.values())
            for r in sources.values():
                r.malformed = 0
            yield {"examples": examples, "source": choice, "reader": key, "position": position,
                   "malformed": malformed}


    def _reader(self, source: DataSource, index: int, reader: int, readers: int, saved: dict,
                stop_at_epoch_end: bool) -> SourceReader | LengthGroups:
        saved = dict(saved)
        served = saved.pop("served", 0)
        plain = SourceReader(self.units[source.name], reader, readers, self.config.seed + index,
                             self.config.shuffle_units, ReaderPosition(**saved), self.config.holdout)
        if not self.config.group_by_length:
            return plain
        return LengthGroups(plain, self.config.batch_size, self.config.seed + index, stop_at_epoch_end, served)


def collate_batches(items: list[dict]) -> dict:
    """DataLoader collate for batch_size=1 over ready batches: unwrap."""
    (item,) = items
    return item


def reader_key(reader: int, readers: int) -> str:
    """The name a reader's position is saved under: its index and how many readers there were."""
    return f"reader{reader}of{readers}"


def saved_reader_counts(state: dict) -> set[int]:
    """The reader counts (ranks x workers) a saved position was written with (one, unless it is corrupt)."""
    return {int(key.rpartition("of")[2]) for key in state}


def make_loader(config: StreamConfig, rank: int, world_size: int, workers: int) -> torch.utils.data.DataLoader:
    dataset = ParquetStream(config, rank, world_size, workers)
    # its own generator: starting an iterator must not draw from the global RNG (a resumed run restores that
    # RNG for dropout and would otherwise be one draw off)
    return torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=collate_batches,
                                       persistent_workers=False,
                                       generator=torch.Generator().manual_seed(config.seed))

