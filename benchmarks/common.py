"""Helpers shared by the benchmarks: the sample-data location and real Chinese passages from it."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
logging.getLogger().setLevel(logging.ERROR)


def chinese_passages(limit: int, min_chars: int = 80, max_chars: int = 600) -> list[str]:
    """Distinct real passages: CSL abstracts, iNews bodies and LCSTS texts from shared/data/raw."""
    raw = SHARED / "raw"
    texts: list[str] = []
    for line in (raw / "csl" / "clge_csl_val.tsv").read_text(encoding="utf-8").splitlines():
        texts.append(line.split("\t")[-1])
    for line in (raw / "news" / "inews_train.jsonl").read_text(encoding="utf-8").splitlines():
        texts.append(json.loads(line)["content"])
    for line in (raw / "lcsts" / "clge_train.tsv").read_text(encoding="utf-8").splitlines():
        texts.append(line.split("\t")[-1])
    seen, out = set(), []
    for t in texts:
        t = " ".join(t.split())[:max_chars]
        if len(t) >= min_chars and t not in seen:
            seen.add(t)
            out.append(t)
        if len(out) >= limit:
            break
    return out
