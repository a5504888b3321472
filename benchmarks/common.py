"""Helpers shared by the benchmarks: the sample-data location and real Chinese passages from it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
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


def tsv_pairs(path: Path, limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` (title, text) pairs from a two-column TSV, rows with an empty side skipped."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        title, _, text = line.partition("\t")
        if title.strip() and text.strip():
            out.append((title.strip(), text.strip()))
        if len(out) >= limit:
            break
    return out


def lcsts_pairs(limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` real (summary, text) title-passage pairs from LCSTS in shared/data/raw."""
    return tsv_pairs(SHARED / "raw" / "lcsts" / "clge_train.tsv", limit)


def csl_pairs(limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` (title, abstract) pairs from the CSL sample in shared/data/raw."""
    return tsv_pairs(SHARED / "raw" / "csl" / "clge_csl_val.tsv", limit)


class PeakMemory:
    """This process's peak memory, sampled every 2 ms in a thread until ``stop()`` (Linux /proc).

    ``kind="rss"``: the resident set; ``kind="anon"``: anonymous memory only (RssAnon), i.e. without the
    page-cache pages of memory-mapped files, which count in RSS but the kernel can drop."""

    def __init__(self, kind: str = "rss"):
        self.kind, self.peak, self._stop = kind, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        if self.kind == "rss":
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self._page
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:")) * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.002)

    def stop(self) -> int:
        """Stops sampling; returns the peak in bytes."""
        self.peak = max(self.peak, self.now())
        self._stop.set()
        self._thread.join()
        return self.peak


def time_workers(workers: str, run) -> list[tuple[int, object, float]]:
    """(workers, result, seconds) of ``run(workers)`` for each count in the comma-separated ``workers``."""
    runs = []
    for count in [int(w) for w in workers.split(",")]:
        started = time.perf_counter()
        result = run(count)
        runs.append((count, result, time.perf_counter() - started))
    return runs


def print_against_loop(docs: int, loop_seconds: float, runs: list[tuple[int, int, float, str]]) -> None:
    """The loop's docs/s and, for each (workers, docs, seconds, note) run, its docs/s and ratio to the loop."""
    rate = docs / loop_seconds
    print(f"plain loop, 1 process : {loop_seconds:7.1f} s  {rate:9.0f} docs/s  1.00x")
    for workers, count, seconds, note in runs:
        print(f"beam, {workers} worker(s)      : {seconds:7.1f} s  {count / seconds:9.0f} docs/s  "
              f"{count / seconds / rate:.2f}x the loop{note}")


def run_job(script: str, job: dict) -> tuple[dict | None, str]:
    """Runs ``script --job JSON`` in a fresh interpreter (so peaks and caches do not leak between measurements);
    returns the dict it printed on its last ``RESULT `` line (None when it failed) and its output's tail."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, script, "--job", json.dumps(job)], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return None, (proc.stderr or proc.stdout)[-2000:]
    return json.loads(lines[-1][len("RESULT "):]), ""
