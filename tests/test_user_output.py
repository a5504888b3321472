"""What a user sees (issue #21): library logs hidden unless asked, a progress line with a rate on long steps."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

CMTP = shutil.which("cmtp") or str(Path(sys.executable).parent / "cmtp")
QA = ("title,passage\n如何学习机器学习,机器学习是人工智能的一个分支，学习它需要数学基础和大量的实践练习才能掌握。\n"
      "长江有多长,长江全长约六千三百公里，是亚洲第一长河，也是世界第三长河，流经十一个省区市。\n")


def _run(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([CMTP, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_a_two_row_extract_prints_at_most_twelve_lines_unless_verbose(tmp_path):
    (tmp_path / "qa.csv").write_text(QA, encoding="utf-8")
    quiet = _run("extract", f"myset:generic={tmp_path / 'qa.csv'}", "--out", tmp_path / "a", "--workers", "2")
    lines = (quiet.stdout + quiet.stderr).splitlines()
    assert quiet.returncode == 0 and len(lines) <= 12, lines  # the summary, its table, one line per phase
    assert not [line for line in lines if "INFO" in line or "WARNING" in line], lines
    loud = _run("-v", "extract", f"myset:generic={tmp_path / 'qa.csv'}", "--out", tmp_path / "b", "--workers", "2")
    assert loud.returncode == 0 and "harness starting" in loud.stderr  # the workers' logs, when asked


def in_terminal(args, timeout: float = 300) -> tuple[int, str, float | None]:
    """Run ``cmtp ARGS`` on a pseudo-terminal (120 columns): its exit code, everything it wrote, and the seconds
    until the first progress line with a rate appeared (None if none did)."""
    import fcntl
    import pty
    import re
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    started = time.perf_counter()
    proc = subprocess.Popen([CMTP, *map(str, args)], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    data, first_rate = b"", None
    rate = re.compile(rb"\d+/\d+ \[[^\]]*(?:\d+\.\d+|\?) ?\w*/s\]|\d+/\d+ \[[^\]]*s/ ?\w+\]")
    while time.perf_counter() - started < timeout:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            data += chunk
            if first_rate is None and rate.search(data):
                first_rate = time.perf_counter() - started
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    return proc.returncode, data.decode("utf-8", "replace"), first_rate


def _pairs(folder: Path, count: int) -> None:
    import pyarrow.parquet as pq

    from cmtp.schemas import PAIR, rows_to_table

    lines = (Path(__file__).parent / "data" / "raw" / "lcsts" / "clge_train_head30.tsv").read_text(
        encoding="utf-8").splitlines()
    rows = []
    for i in range(count):
        title, passage = lines[i % len(lines)].split("\t")[:2]
        rows.append({"pair_id": f"p{i:05d}", "source": "lcsts", "source_file": "f", "record_key": str(i),
                     "title": f"{title}{i}", "passage": passage, "meta": "{}"})
    folder.mkdir(parents=True)
    pq.write_table(rows_to_table(rows, PAIR), folder / "part-00000-of-00001.parquet")


def test_score_shows_a_progress_line_with_a_rate_in_a_terminal(tmp_path, tiny_model_path):
    _pairs(tmp_path / "in", 3000)
    code, text, first_rate = in_terminal(["score", tmp_path / "in", "--out", tmp_path / "out", "--model",
                                          tiny_model_path, "--workers", "2", "--batch-size", "16"])
    assert code == 0, text[-2000:]
    assert first_rate is not None and "score: score:" in text and "text/s" in text, text[-2000:]
    # each phase's bar reaches its total: every worker's count reached the driver
    assert "6000/6000" in text and "score: write:" in text and "3000/3000" in text


def test_score_prints_one_line_with_its_rate_when_not_a_terminal(tmp_path, tiny_model_path):
    _pairs(tmp_path / "in", 50)
    proc = _run("score", tmp_path / "in", "--out", tmp_path / "out", "--model", tiny_model_path)
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("score: score: 100 texts in ")], proc.stderr
    assert "\r" not in proc.stderr  # no bar


def test_eval_shows_per_task_progress_in_a_terminal(tmp_path, tiny_model_path):
    code, text, first_rate = in_terminal(["eval", tiny_model_path, "--suite", "dev", "--max-per-task", "20"])
    assert code == 0, text[-2000:]
    assert first_rate is not None and "eval " in text and "text/s" in text, text[-2000:]


def test_a_step_with_nothing_to_count_keeps_redrawing_and_ends_in_one_line(monkeypatch, capsys):
    """``step``: its bar is redrawn while the work runs (the elapsed time moves on a terminal), and off a terminal
    it ends in one line with its time."""
    import time

    from cmtp.transforms.common import progress

    redrawn = []
    monkeypatch.setattr(progress.Bar, "refresh", lambda self: redrawn.append(self.desc))
    with progress.step("mine: build and tune the search index"):
        time.sleep(3 * progress.REFRESH_SECONDS)
    count = len(redrawn)
    time.sleep(2 * progress.REFRESH_SECONDS)
    assert count >= 1 and len(redrawn) == count  # redrawn while working, not after
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mine: build and tune the search index: 1 step in "), lines
