"""``cmtp audit`` on a small fixed table whose numbers are checked by hand."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cmtp.pipelines.app import app
from cmtp.schemas import SCORED_PAIR, rows_to_table

runner = CliRunner()
#            source  score
TABLE = [("a", 0.10), ("a", 0.30), ("a", 0.43), ("b", 0.43), ("b", 0.50), ("b", 0.90), ("b", 0.45), ("a", 0.60)]


def write_run(directory, scores, threshold=0.43, titles=None):
    rows = []
    for i, (source, score) in enumerate(scores):
        score = float(np.float32(score))
        rows.append({"pair_id": f"p{i}", "source": source, "source_file": "f", "record_key": str(i),
                     "title": (titles or {}).get(i, f"标题{i}"), "passage": f"正文{i}", "meta": "{}",
                     "cluster_id": None, "cluster_size": None, "score": score, "scorer": "m", "scorer_hash": "h",
                     "threshold": float(np.float32(threshold)),
                     "kept": bool(np.float32(score) >= np.float32(threshold))})
    kept = [r for r in rows if r["kept"]]
    rejected = [r for r in rows if not r["kept"]]
    for name, part in [("kept", kept), ("rejected", rejected)]:
        (directory / name).mkdir(parents=True)
        pq.write_table(rows_to_table(part, SCORED_PAIR), directory / name / "part-00000-of-00001.parquet")
    return directory


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "score", TABLE)


def _json(args):
    result = runner.invoke(app, ["audit", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_counts_and_rates_by_hand(run_dir):
    data = _json([str(run_dir), "--thresholds", "0.3,0.43,0.5"])
    assert data["threshold"] == pytest.approx(0.43)  # read from the files
    by_t = {round(k["threshold"], 2): (k["kept"], k["rate"]) for k in data["sources"]["(all)"]["keep"]}
    assert by_t[0.3] == (7, 7 / 8)  # all but 0.10
    assert by_t[0.43] == (6, 6 / 8)  # 0.43 exactly counts as kept (twice)
    assert by_t[0.5] == (3, 3 / 8)  # 0.50, 0.60, 0.90
    a = {round(k["threshold"], 2): k["kept"] for k in data["sources"]["a"]["keep"]}
    b = {round(k["threshold"], 2): k["kept"] for k in data["sources"]["b"]["keep"]}
    assert (a[0.3], a[0.43], a[0.5]) == (3, 2, 1) and (b[0.3], b[0.43], b[0.5]) == (4, 4, 2)
    s = data["sources"]["(all)"]
    assert s["count"] == 8 and s["min"] == pytest.approx(0.10) and s["max"] == pytest.approx(0.90)
    assert s["mean"] == pytest.approx(np.mean([x for _, x in TABLE]), abs=1e-6)
    assert s["quantiles"]["0.5"] == pytest.approx(0.43, abs=2e-4)  # 4th of 8 sorted values


def test_target_keep_rate_suggests_a_threshold(run_dir):
    data = _json([str(run_dir), "--target-keep-rate", "0.5"])
    t = data["suggested_threshold"]
    scores = np.array([x for _, x in TABLE], dtype=np.float32)
    assert (scores >= t).mean() >= 0.5 and (scores >= t + 2e-4).mean() < 0.5


def test_csv_and_table_output(run_dir):
    result = runner.invoke(app, ["audit", str(run_dir), "--thresholds", "0.43", "--format", "csv"])
    lines = result.output.strip().splitlines()
    assert lines[0] == "source,threshold,kept,rate" and "(all),0.4300,6,0.750000" in lines
    result = runner.invoke(app, ["audit", str(run_dir), "--thresholds", "0.30:0.50:0.10"])
    assert result.exit_code == 0 and "keep rate by threshold" in result.output and "0.43 (current)" in result.output


def test_the_default_grid_spans_the_scores_quantiles_and_no_two_rows_look_alike(tmp_path):
    import re

    from cmtp.pipelines.audit.stats import grid_from_quantiles, label

    rng = np.random.default_rng(0)
    scores = np.clip(rng.normal(0.88, 0.03, 2000), 0.78, 0.97).astype(np.float32)  # e5-like
    write_run(tmp_path / "run", [("s", float(x)) for x in scores], threshold=0.8998)
    result = runner.invoke(app, ["audit", str(tmp_path / "run")], terminal_width=200)
    assert result.exit_code == 0, result.output
    labels = re.findall(r"^│ *([0-9.]+(?: \(current\))?) *│", result.output, re.M)
    assert "0.8998 (current)" in labels and "0.9" in labels  # the cut beside the grid's 0.9, told apart
    rows = [x for x in labels if "current" not in x]
    assert 10 <= len(rows) <= 31 and float(rows[0]) >= 0.78 and float(rows[-1]) <= 0.97  # not 31 rows of 100%
    assert len(set(labels)) == len(labels)
    assert label(0.8997999999999999) == "0.8998"
    s = type("S", (), {"quantile": lambda self, q: {0.01: 0.2134, 0.99: 0.8871}[q]})()
    assert grid_from_quantiles(s) == "0.2:0.9:0.05"


def test_report_and_plot(run_dir, tmp_path):
    result = runner.invoke(app, ["audit", str(run_dir), "--report", str(tmp_path / "r.html"), "--plot",
                                 str(tmp_path / "h.png"), "--samples", "2", "--window", "0.1"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 2 and "Just above" in page and "Just below" in page
    assert "标题2" in page or "标题3" in page  # the 0.43 pairs sit just above the cut
    assert "http" not in page.split("<svg", 1)[0].replace("http://www.w3.org", "")  # no external assets
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_two_runs(run_dir, tmp_path):
    other = [(s, 1.0 - x) for s, x in TABLE]  # reversed ranking
    write_run(tmp_path / "other", other, threshold=0.5)
    data = _json([str(run_dir), "--compare", str(tmp_path / "other")])
    c = data["compare"]
    assert c["common"] == 8 and c["spearman"] == pytest.approx(-1.0, abs=0.02)
    mine = np.array([x for _, x in TABLE], np.float32) >= np.float32(0.43)
    theirs = np.array([1 - x for _, x in TABLE], np.float32) >= np.float32(0.5)
    assert c["agreement"] == pytest.approx(np.mean(mine == theirs))
    assert len(c["disagreements"]) == 8 and c["disagreements"][0]["title"].startswith("标题")


def test_errors(tmp_path):
    result = runner.invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code != 0 and "no Parquet files under" in str(result.exception)
    run = write_run(tmp_path / "r", TABLE)
    result = runner.invoke(app, ["audit", str(run), "--thresholds", "x:y"])
    assert "bad --thresholds" in str(result.exception)
    for grid in ["0.5:0.6:0", "0.5:0.6:-0.1", "0:1:1e-9", "0.3:inf:0.1"]:  # a division by zero; a billion rows
        result = runner.invoke(app, ["audit", str(run), "--thresholds", grid])
        assert "finite numbers, STEP positive, at most 20,000 thresholds" in str(result.exception), grid


def _cli_error(*args):
    from tests.test_cli import cli_error

    return cli_error("audit", *args)


def test_bad_scored_files_are_one_error_line_naming_the_file(tmp_path):
    import pyarrow as pa

    strings = tmp_path / "strings"
    strings.mkdir()
    pq.write_table(pa.table({"score": ["0.5", "0.7"], "source": ["a", "b"]}), strings / "s.parquet")
    assert "s.parquet: column 'score' is string" in _cli_error(strings)

    run = write_run(tmp_path / "truncated", TABLE)
    good = run / "kept" / "part-00000-of-00001.parquet"
    (run / "kept" / "part-00001-of-00002.parquet").write_bytes(good.read_bytes()[:-40])
    assert "part-00001-of-00002.parquet: not a readable Parquet file" in _cli_error(run)

    run = write_run(tmp_path / "foreign", TABLE)
    pq.write_table(pa.table({"score": [0.5], "source": [3]}), run / "kept" / "part-00002.parquet")
    assert "part-00002.parquet: column 'source' is int64" in _cli_error(run)
    pq.write_table(pa.table({"score": [0.5], "source": ["a"]}), run / "kept" / "part-00002.parquet")
    assert "part-00002.parquet: its schema differs" in _cli_error(run)


def test_target_keep_rate_prints_the_command_that_applies_it(run_dir):
    data = _json([str(run_dir), "--target-keep-rate", "0.5"])
    t = data["suggested_threshold"]
    assert data["apply_with"] == f"cmtp score --rethreshold {t:.4f} {run_dir} --out {run_dir}-t{t:.4f}"
    result = runner.invoke(app, ["audit", str(run_dir), "--target-keep-rate", "0.5"], terminal_width=300)
    assert data["apply_with"] in result.output
