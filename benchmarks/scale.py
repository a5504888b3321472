"""Memory and speed of every Beam stage at two corpus sizes: does the local runner carry a whole dump on one machine?

Documents are made of real Chinese sentences (CSL abstracts, iNews bodies, LCSTS texts and the vocab-coverage
sentences of ../shared/data/raw): 4-12 sentences each, a title cut from another sentence, and 10% near copies (a
few characters changed), written as generic JSON lines in files of 50,000 documents. Each stage then runs as the
command a user types (``cmtp extract``, ``dedup``, ``score`` with a tiny model this script builds, ``mine``), and
the summed RSS of its process tree (the command and its Beam worker processes) is sampled every 0.5 s. Printed per
size and stage: peak RSS, items/s, seconds; then each stage's peak at the largest size against the smallest. Each
stage's samples are kept beside its log (``<work>/work-<size>/<stage>.memory.tsv``) to find where its peak falls.

    python benchmarks/scale.py                            # 250,000 and 1,000,000 documents
    python benchmarks/scale.py --sizes 20000,80000        # a quick look
    python benchmarks/scale.py --sizes 1000000 --build    # also one `cmtp build` of the four stages
    python benchmarks/scale.py --stages extract,dedup     # some stages only (each reads the one before)

Needs several GB of free disk per million documents under --work (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, SHARED

STAGES = ("extract", "dedup", "score", "mine")
DOCS_PER_FILE = 50_000
SAMPLE_SECONDS = 0.5


def sentences() -> list[str]:
    """Distinct real sentences (8-80 characters) from the shared sample's texts."""
    raw = SHARED / "raw"
    texts = [line.split("\t")[1] for name in ("clge_csl_val.tsv", "ts_dev.tsv", "kg_dev.tsv")
             for line in (raw / "csl" / name).read_text(encoding="utf-8").splitlines() if "\t" in line]
    texts += [json.loads(line)["content"] for line in (raw / "news" / "inews_train.jsonl").open(encoding="utf-8")]
    texts += [line.split("\t")[-1] for line in (raw / "lcsts" / "clge_train.tsv").open(encoding="utf-8")]
    for name in ("dataset_sentence_long.json", "dataset_sentence_short.json"):
        for group in json.loads((raw / "misc" / name).read_text(encoding="utf-8")).values():
            texts += group["texts"]
    out = {s.strip() + "。" for t in texts for s in re.split(r"[。！？!?\n]", t) if 8 <= len(s.strip()) <= 80}
    return sorted(out)


def generate(folder: Path, documents: int, seed: int = 0) -> None:
    """``documents`` JSON lines {title, passage} in files of DOCS_PER_FILE; every tenth a near copy of an earlier
    one (a character in fifty replaced)."""
    rng = random.Random(seed)
    pool = sentences()
    folder.mkdir(parents=True, exist_ok=True)
    recent: list[str] = []
    fh = None
    for i in range(documents):
        if i % DOCS_PER_FILE == 0:
            fh and fh.close()
            fh = (folder / f"part-{i // DOCS_PER_FILE:04d}.jsonl").open("w", encoding="utf-8")
        if i % 10 == 9 and recent:
            chars = list(rng.choice(recent))
            for _ in range(max(1, len(chars) // 50)):
                chars[rng.randrange(len(chars))] = "的"
            passage = "".join(chars)
        else:
            passage = "".join(rng.sample(pool, rng.randint(4, 12)))
            recent = (recent + [passage])[-1000:]
        title = rng.choice(pool)[: rng.randint(6, 30)].rstrip("。")
        fh.write(json.dumps({"title": title, "passage": passage}, ensure_ascii=False) + "\n")
    fh and fh.close()


def tiny_model(folder: Path) -> Path:
    """A BERT encoder (hidden 32, 2 layers) over the sentences' characters, as the tests build one."""
    sys.path.insert(0, str(ROOT))
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(folder, sentences()[:20000], dropout=0.0)


def tree_rss(pid: int) -> tuple[int, int]:
    """Summed RSS and summed anonymous RSS (bytes) of a process and all its descendants (Linux /proc). RSS also
    counts the pages of memory-mapped files that were read (Arrow IPC, vector shards): the kernel drops those under
    pressure; anonymous memory (RssAnon) it cannot."""
    page, total, anon, todo = os.sysconf("SC_PAGE_SIZE"), 0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * page
            with open(f"/proc/{p}/status") as fh:
                anon += next((int(line.split()[1]) for line in fh if line.startswith("RssAnon:")), 0) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total, anon


def run(command: list[str], log: Path) -> tuple[float, int, int]:
    """Run ``command`` (its output to ``log``); (seconds, peak summed RSS of its process tree, peak summed
    anonymous RSS). Every sample also goes to ``log`` with ``.memory.tsv`` for its suffix (seconds, RSS MiB,
    anonymous MiB): where in a stage its peak falls."""
    started = time.perf_counter()
    with log.open("w") as out, log.with_suffix(".memory.tsv").open("w") as timeline:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        peak, peak_anon, done = 0, 0, threading.Event()
        timeline.write("seconds\trss_mib\tanon_mib\n")

        def sample():
            nonlocal peak, peak_anon
            while not done.wait(SAMPLE_SECONDS):
                rss, anon = tree_rss(proc.pid)
                peak, peak_anon = max(peak, rss), max(peak_anon, anon)
                timeline.write(f"{time.perf_counter() - started:.1f}\t{rss / 2**20:.0f}\t{anon / 2**20:.0f}\n")
                timeline.flush()  # readable while the stage runs

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        code = proc.wait()
        done.set()
        thread.join()
    if code:
        raise SystemExit(f"{' '.join(command)} failed ({code}); see {log}:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - started, peak, peak_anon


def stage_commands(cmtp: str, data: Path, work: Path, model: Path) -> dict[str, list[str]]:
    return {
        "extract": [cmtp, "extract", f"gen:generic={data}/*.jsonl", "--out", str(work / "extract")],
        "dedup": [cmtp, "dedup", str(work / "extract"), "--out", str(work / "dedup")],
        "score": [cmtp, "score", str(work / "dedup"), "--out", str(work / "score"), "--model", str(model),
                  "--target-keep-rate", "0.8"],
        "mine": [cmtp, "mine", str(work / "score"), "--out", str(work / "mine"), "--model", str(model),
                 "--negatives", "7", "--range", "3-60"],
    }


def build_file(data: Path, work: Path, model: Path) -> Path:
    path = work / "build.yaml"
    path.write_text(json.dumps({"work": str(work / "build"), "stages": {
        "extract": {"sources": [f"gen:generic={data}/*.jsonl"]},
        "dedup": {"input": "extract"},
        "score": {"input": "dedup", "model": str(model), "target_keep_rate": 0.8},
        "mine": {"input": "score", "model": str(model), "negatives": 7, "range": "3-60"}}}, indent=1))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250000,1000000", help="comma-separated document counts")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--build", action="store_true", help="also run the four stages as one `cmtp build`")
    parser.add_argument("--work", default=None, help="folder for the data and outputs (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    stages = [s for s in STAGES if s in args.stages.split(",")]
    cmtp = str(Path(sys.executable).with_name("cmtp"))
    root = Path(args.work or tempfile.mkdtemp(prefix="cmtp-scale-"))
    model = tiny_model(root / "model")
    results: dict[int, dict[str, tuple[float, int, int, int]]] = {}
    try:
        for size in sizes:
            data, work = root / f"data-{size}", root / f"work-{size}"
            started = time.perf_counter()
            generate(data, size)
            print(f"{size:,} documents generated in {time.perf_counter() - started:.0f} s "
                  f"({sum(f.stat().st_size for f in data.iterdir()) / 2**20:,.0f} MiB)", flush=True)
            work.mkdir(parents=True, exist_ok=True)
            results[size] = {}
            commands = stage_commands(cmtp, data, work, model)
            for stage in stages:
                seconds, peak, anon = run(commands[stage], work / f"{stage}.log")
                manifest = json.loads((work / stage / "manifest.json").read_text())
                results[size][stage] = (seconds, peak, manifest["count_in"], anon)
                print(f"  {stage:8s} {manifest['count_in']:>10,} in  {peak / 2**20:8,.0f} MiB peak "
                      f"({anon / 2**20:,.0f} anonymous)  "
                      f"{manifest['count_in'] / seconds:8,.0f} items/s  {seconds:7.1f} s", flush=True)
            if args.build:
                seconds, peak, anon = run([cmtp, "build", str(build_file(data, work, model))],
                                          work / "build.log")
                print(f"  cmtp build (extract -> dedup -> score -> mine): {seconds:.0f} s, "
                      f"{peak / 2**20:,.0f} MiB peak ({anon / 2**20:,.0f} anonymous)", flush=True)
            if not args.keep:
                shutil.rmtree(data, ignore_errors=True)
        if len(sizes) > 1:
            small, large = sizes[0], sizes[-1]
            print(f"\npeak RSS at {large:,} against {small:,} documents ({large / small:.0f}x the documents):")
            for stage in stages:
                (_, a, _, a_anon), (_, b, _, b_anon) = results[small][stage], results[large][stage]
                print(f"  {stage:8s} {b / a:5.2f}x  ({a / 2**20:,.0f} -> {b / 2**20:,.0f} MiB); anonymous "
                      f"{b_anon / a_anon:5.2f}x ({a_anon / 2**20:,.0f} -> {b_anon / 2**20:,.0f} MiB)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
