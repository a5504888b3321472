"""Comparing two scored runs over the same pairs (two scorers, or two configurations of one).

Memory: ids and scores of both runs are held as NumPy arrays (about 24 bytes a row per run); texts are
fetched afterwards for the few pairs shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
from scipy.stats import spearmanr

from cmtp.schemas.errors import CmtpError

from .stats import stream


def _ids_scores(dataset: ds.Dataset) -> tuple[np.ndarray, np.ndarray, float | None]:
    ids, scores, threshold = [], [], None
    columns = ["pair_id", "score"] + (["threshold"] if "threshold" in dataset.schema.names else [])
    for batch in stream(dataset, columns):
        ids.append(np.array(batch.column("pair_id").to_pylist(), dtype="S"))
        scores.append(batch.column("score").to_numpy(zero_copy_only=False).astype(np.float32))
        if threshold is None and "threshold" in columns and batch.num_rows:
            threshold = float(batch.column("threshold")[0].as_py())
    if not ids:
        raise CmtpError("a run to compare holds no rows")
    width = max(a.dtype.itemsize for a in ids)
    return np.concatenate([a.astype(f"S{width}") for a in ids]), np.concatenate(scores), threshold


@dataclass
class Comparison:
    common: int
    only_a: int
    only_b: int
    spearman: float
    threshold_a: float
    threshold_b: float
    agreement: float  # kept_a(t_a) == kept_b(t_b)
    kept_a: float
    kept_b: float
    disagreements: list[dict]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def compare(a: ds.Dataset, b: ds.Dataset, threshold_a: float | None, threshold_b: float | None,
            top: int = 10) -> Comparison:
    ids_a, sa, ta = _ids_scores(a)
    ids_b, sb, tb = _ids_scores(b)
    ta = threshold_a if threshold_a is not None else ta
    tb = threshold_b if threshold_b is not None else tb
    if ta is None or tb is None:
        raise CmtpError("give --threshold for runs that carry no threshold column")
    common, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=False, return_indices=True)
    if not len(common):
        raise CmtpError("the two runs share no pair_id: compare runs over the same pairs")
    xa, xb = sa[ia], sb[ib]
    keep_a, keep_b = xa >= np.float32(ta), xb >= np.float32(tb)
    rank_a = np.argsort(np.argsort(xa)) / max(len(xa) - 1, 1)
    rank_b = np.argsort(np.argsort(xb)) / max(len(xb) - 1, 1)
    order = np.argsort(-np.abs(rank_a - rank_b), kind="stable")[:top]
    chosen = {common[i].decode(): (float(xa[i]), float(xb[i]), float(rank_a[i] - rank_b[i])) for i in order}
    texts = {}
    if chosen:
        columns = [c for c in ["pair_id", "source", "title", "passage"] if c in a.schema.names]
        for batch in stream(a, columns, filter=pc.field("pair_id").isin(list(chosen))):
            for row in batch.to_pylist():
                texts[row["pair_id"]] = row
    disagreements = [
        {**texts.get(pid, {"pair_id": pid}), "score_a": s_a, "score_b": s_b, "rank_shift": shift}
        for pid, (s_a, s_b, shift) in chosen.items()
    ]
    rho = float(spearmanr(xa, xb).statistic) if len(xa) > 1 else float("nan")
    return Comparison(
        common=len(common), only_a=len(ids_a) - len(common), only_b=len(ids_b) - len(common), spearman=rho,
        threshold_a=float(ta), threshold_b=float(tb), agreement=float(np.mean(keep_a == keep_b)),
        kept_a=float(keep_a.mean()), kept_b=float(keep_b.mean()), disagreements=disagreements,
    )
