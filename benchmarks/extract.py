"""Extract throughput: the Beam pipeline with 1 and 2 local workers against a plain single-process Python loop.

Both do the same work on the same files: read every record with the same adapters, clean and filter it with
the same code, drop exact duplicates, and write Parquet. Prints documents/s of each and their ratio.

    python benchmarks/extract.py                       # ../shared/data/raw, copied 4 times
    python benchmarks/extract.py --data DIR --copies 8 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
logging.getLogger().setLevel(logging.ERROR)

import pyarrow.parquet as pq  # noqa: E402
from common import print_against_loop, time_workers  # noqa: E402

from cmtp.pipelines.extract import run_extract  # noqa: E402
from cmtp.schemas import DEAD_LETTER, PAIR, PRETRAIN_TEXT, rows_to_table  # noqa: E402
from cmtp.transforms.extract.config import ExtractConfig  # noqa: E402
from cmtp.transforms.extract.dofns import CLEANING, CleanPairFn, ReadRecordsFn, SourceSpec  # noqa: E402
from cmtp.transforms.extract.exact_dedup import match_keys  # noqa: E402
from cmtp.transforms.extract.source_file import SourceFile  # noqa: E402

LAYOUT = [  # (source name, adapter, glob relative to the data dir)
    ("wudao", "wudao", "wudao/*.json"),
    ("zhihu", "zhihu", "zhihu/*.jsonl"),
    ("csl", "csl", "csl/*.tsv"),
    ("lcsts", "lcsts", "lcsts/*.tsv"),
    ("news", "news", "news/*"),
]


def stage_data(src: Path, dst: Path, copies: int) -> list[SourceSpec]:
    specs = []
    for name, adapter, pattern in LAYOUT:
        files = sorted(src.glob(pattern))
        for i in range(copies):
            for f in files:
                target = dst / name / f"copy{i}" / f.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, target)
        specs.append(SourceSpec(name, adapter, str(dst / name / "copy*" / "*")))
    return specs


def plain_loop(specs: list[SourceSpec], out: Path, config: ExtractConfig) -> int:
    """The same work without Beam: one process, sets for exact dedup, validated Parquet for every output."""
    clean = CleanPairFn(config)
    clean.setup()
    seen_pair, seen_passage, kept, dead, pretrain, docs = set(), set(), [], [], [], 0
    for spec in specs:
        reader = ReadRecordsFn(spec)
        reader.setup()
        for path in sorted(Path().glob(spec.pattern) if not spec.pattern.startswith("/") else
                           Path("/").glob(spec.pattern[1:])):
            for doc in reader.read_file(SourceFile.from_path(str(path), spec.rel_name(str(path)))):
                docs += 1
                if not isinstance(doc, dict):
                    dead.append(doc.value)
                    continue
                for pair in clean.process(doc):
                    if not isinstance(pair, dict):
                        if pair.tag != CLEANING:  # cleaning-step tallies are counts, not rows
                            (dead if pair.tag == "dead" else pretrain).append(pair.value)
                        continue
                    passage_key, pair_key, _ = match_keys(pair["title"], pair["passage"])
                    if pair_key in seen_pair or passage_key in seen_passage:
                        dead.append({**pair, "reason": "duplicate"})
                        continue
                    seen_pair.add(pair_key)
                    seen_passage.add(passage_key)
                    kept.append(pair)
                    pretrain.append({"text_id": pair["pair_id"], "source": pair["source"], "text": pair["passage"]})
    pq.write_table(rows_to_table(kept, PAIR), out / "pairs.parquet")
    pq.write_table(rows_to_table(pretrain, PRETRAIN_TEXT), out / "pretrain.parquet")
    pq.write_table(rows_to_table([d for d in dead if "stage" in d], DEAD_LETTER), out / "dead.parquet")
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "raw"))
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--workers", default="1,2", help="comma-separated local worker counts to measure")
    args = parser.parse_args()
    config = ExtractConfig(dedup_passage=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        specs = stage_data(Path(args.data), tmp / "data", args.copies)
        (tmp / "loop").mkdir()
        started = time.perf_counter()
        docs_loop = plain_loop(specs, tmp / "loop", config)
        loop_s = time.perf_counter() - started
        runs = time_workers(args.workers, lambda workers: run_extract(specs, str(tmp / f"beam{workers}"), config,
                                                                      workers=workers))
    print(f"documents: {runs[0][1].count_in} (pipeline), {docs_loop} (loop)")
    print_against_loop(docs_loop, loop_s, [(w, m.count_in, seconds, "") for w, m, seconds in runs])


if __name__ == "__main__":
    main()
