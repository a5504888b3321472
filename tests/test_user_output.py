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


def test_a_two_row_extract_prints_at_most_ten_lines_unless_verbose(tmp_path):
    (tmp_path / "qa.csv").write_text(QA, encoding="utf-8")
    quiet = _run("extract", f"myset:generic={tmp_path / 'qa.csv'}", "--out", tmp_path / "a", "--workers", "2")
    lines = (quiet.stdout + quiet.stderr).splitlines()
    assert quiet.returncode == 0 and len(lines) <= 10, lines
    assert not [line for line in lines if "INFO" in line or "WARNING" in line], lines
    loud = _run("-v", "extract", f"myset:generic={tmp_path / 'qa.csv'}", "--out", tmp_path / "b", "--workers", "2")
    assert loud.returncode == 0 and "harness starting" in loud.stderr  # the workers' logs, when asked
