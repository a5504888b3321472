"""Streaming score statistics: exact counts at chosen thresholds, fine histograms, quantiles, per source.

Scored Parquet is read in record batches of the ``score`` and ``source`` columns only (pyarrow dataset,
local or any fsspec URL), so memory stays flat whatever the row count: per source we keep one fixed
histogram and one counter per threshold. Counts at the requested thresholds are exact (compared as the
float32 values stored); quantiles and suggested thresholds come from the histogram (bin width 1e-4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.common.paths import parquet_files

BINS = 20_000  # over [-1, 1]: width 1e-4
LOW, HIGH = -1.0, 1.0
ALL = "(all)"
SCORED_SUBDIRS = ("kept", "rejected")  # a score stage's output directory; dead_letters/ is not scored


def open_scored(paths: list[str]) -> ds.Dataset:
    """A dataset over scored Parquet: files, globs, or directories (a score stage output: kept/ + rejected/)."""
    import fsspec

    filesystem = fsspec.get_fs_token_paths(paths[0])[0]
    files = [filesystem._strip_protocol(f) for path in paths for f in parquet_files(path, SCORED_SUBDIRS, every=True)]
    schema = _check_files(files, filesystem)
    try:
        return ds.dataset(files, format="parquet", filesystem=filesystem, schema=schema)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise CmtpError(f"cannot read scored Parquet: {exc}") from exc


def _check_files(files: list[str], filesystem) -> pa.Schema:
    """Every file's footer is read (a dataset checks only the first one) and its ``score`` / ``source`` columns
    typed, so a truncated shard or a foreign file is one error naming it, not a traceback mid-scan."""
    first = None
    for path in files:
        try:
            with filesystem.open(path, "rb") as fh:
                schema = pq.read_schema(fh)
        except Exception as exc:  # ArrowInvalid, OSError, ...: the file is not (complete) Parquet
            raise CmtpError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
        if "score" not in schema.names:
            raise CmtpError(f"{path}: no 'score' column; pass the output of cmtp score")
        if not pa.types.is_floating(schema.field("score").type):
            raise CmtpError(f"{path}: column 'score' is {schema.field('score').type}, not a float")
        if "source" in schema.names and not pa.types.is_string(schema.field("source").type):
            raise CmtpError(f"{path}: column 'source' is {schema.field('source').type}, not a string")
        if first is None:
            first = (path, schema)
        elif schema.remove_metadata() != first[1].remove_metadata():
            raise CmtpError(f"{path}: its schema differs from {first[0]}'s; scored files must share one schema")
    return first[1]


@dataclass
class SourceStats:
    thresholds: np.ndarray
    count: int = 0
    at_or_above: np.ndarray = None
    hist: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    total: float = 0.0
    minimum: float = np.inf
    maximum: float = -np.inf

    def __post_init__(self):
        if self.at_or_above is None:
            self.at_or_above = np.zeros(len(self.thresholds), dtype=np.int64)

    def add(self, scores: np.ndarray) -> None:
        if not len(scores):  # e.g. an empty shard
            return
        self.count += len(scores)
        self.at_or_above += (scores[None, :] >= self.thresholds[:, None]).sum(axis=1)
        idx = np.clip(((scores.astype(np.float64) - LOW) / (HIGH - LOW) * BINS).astype(np.int64), 0, BINS - 1)
        self.hist += np.bincount(idx, minlength=BINS)
        self.total += float(scores.sum(dtype=np.float64))
        self.minimum = min(self.minimum, float(scores.min()))
        self.maximum = max(self.maximum, float(scores.max()))

    def quantile(self, q: float) -> float:
        """Upper edge of the bin holding the q-quantile (resolution 1e-4)."""
        if not self.count:
            return float("nan")
        cum = np.cumsum(self.hist)
        b = int(np.searchsorted(cum, q * self.count, side="left"))
        return min(LOW + (b + 1) * (HIGH - LOW) / BINS, self.maximum)

    def threshold_for_keep_rate(self, rate: float) -> float:
        """Largest bin edge t with share(score >= t) >= rate."""
        above = np.cumsum(self.hist[::-1])[::-1] / max(self.count, 1)  # above[b] = share in bins >= b
        ok = np.flatnonzero(above >= rate)
        return LOW + int(ok.max()) * (HIGH - LOW) / BINS if len(ok) else LOW

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


def stream(dataset: ds.Dataset, columns: list[str], batch_rows: int = 1 << 18, filter=None):
    """Record batches with bounded memory: pyarrow's default pre-buffering keeps the coalesced reads of a whole
    file alive while it is scanned (RSS grew with the file: +500 MiB over 100M rows); without it, and with a
    small read-ahead, memory stays flat whatever the row count."""
    return dataset.to_batches(
        columns=columns, filter=filter, batch_size=batch_rows, batch_readahead=2, fragment_readahead=1,
        fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False, use_buffered_stream=True),
    )


GRID_ROWS = 30  # at most this many rows in a grid chosen from the data
NICE_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


def grid_from_quantiles(stats: SourceStats, low: float = 0.01, high: float = 0.99) -> str:
    """A ``START:STOP:STEP`` grid over the scores' own 1st-99th percentile, on a round step giving at most
    ``GRID_ROWS`` rows: e5 scores (0.80-0.97) get 0.80:0.97:0.01, Text2Vec's (0.2-0.9) 0.20:0.90:0.05."""
    lo, hi = stats.quantile(low), stats.quantile(high)
    for step in NICE_STEPS:
        start, stop = np.floor(lo / step) * step, np.ceil(hi / step) * step
        if (stop - start) / step <= GRID_ROWS:
            break
    return f"{max(start, -1.0):.4g}:{min(stop, 1.0):.4g}:{step:g}"


def label(threshold: float) -> str:
    """A threshold as the shortest decimal of its float32 (0.8998, 0.9): two different cuts never print alike."""
    return np.format_float_positional(np.float32(threshold), unique=True, trim="-")


MAX_THRESHOLDS = 20_000  # a step of 1e-4 over [-1, 1]: finer cuts than the scores' resolution tell nothing more


def threshold_grid(spec: str) -> np.ndarray:
    """``"0.30:0.60:0.01"`` (start:stop:step, stop included) or ``"0.4,0.43,0.5"``, as float32."""
    try:
        if ":" in spec:
            start, stop, step = (float(x) for x in spec.split(":"))
            if not (np.isfinite([start, stop, step]).all() and step > 0 and (stop - start) / step <= MAX_THRESHOLDS):
                raise CmtpError(f"--thresholds {spec!r}: finite numbers, STEP positive, at most "
                                f"{MAX_THRESHOLDS:,} thresholds")
            values = np.round(np.arange(start, stop + step / 2, step), 6)
        else:
            values = np.array([float(x) for x in spec.split(",")])
    except ValueError as exc:
        raise CmtpError(f"bad --thresholds {spec!r}: use START:STOP:STEP or a comma list") from exc
    if not len(values):
        raise CmtpError(f"--thresholds {spec!r} gives no thresholds")
    return values.astype(np.float32)


def collect(dataset: ds.Dataset, thresholds: np.ndarray, batch_rows: int = 1 << 18) -> dict[str, SourceStats]:
    """One pass over ``score`` and ``source``; returns per-source stats plus ``ALL``."""
    stats: dict[str, SourceStats] = {ALL: SourceStats(thresholds)}
    columns = ["score", "source"] if "source" in dataset.schema.names else ["score"]
    for batch in stream(dataset, columns, batch_rows):
        scores = batch.column("score").to_numpy(zero_copy_only=False).astype(np.float32)
        valid = ~np.isnan(scores)
        stats[ALL].add(scores[valid])
        if "source" in columns:
            sources = batch.column("source")
            for source in pc.unique(sources).to_pylist():
                mask = pc.equal(sources, source).to_numpy(zero_copy_only=False) & valid
                stats.setdefault(source, SourceStats(thresholds)).add(scores[mask])
    if not stats[ALL].count:
        raise CmtpError("the scored files hold no rows")
    return stats


def sample_near_threshold(dataset: ds.Dataset, threshold: float, n: int, seed: int, window: float = 0.02):
    """Up to ``n`` pairs just above (``[t, t + window)``) and just below (``[t - window, t)``) the threshold,
    reservoir-sampled in one filtered pass (only rows in the window are materialised)."""
    t = np.float32(threshold)
    rng = np.random.default_rng(seed)
    columns = [c for c in ["pair_id", "source", "title", "passage", "score"] if c in dataset.schema.names]
    sides = {"above": [], "below": []}
    seen = {"above": 0, "below": 0}
    expr = (ds.field("score") >= float(t - window)) & (ds.field("score") < float(t + window))
    for batch in stream(dataset, columns, filter=expr):
        for row in batch.to_pylist():
            side = "above" if np.float32(row["score"]) >= t else "below"
            seen[side] += 1
            reservoir = sides[side]
            if len(reservoir) < n:
                reservoir.append(row)
            else:
                j = int(rng.integers(seen[side]))
                if j < n:
                    reservoir[j] = row
    for side in sides.values():
        side.sort(key=lambda r: r["score"])
    return sides
