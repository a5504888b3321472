"""Reliability (issue #20): one writer per work folder, the whole build file checked before the first stage runs,
numeric options checked against their declared ranges, each mistake one ``error:`` line with nothing left behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_cli import cli_error

RAW = Path(__file__).parent / "data" / "raw"
ROOT = Path(__file__).resolve().parents[1]


def _holder(folder: Path, own: bool) -> subprocess.Popen:
    """Another process holding the lock on ``folder`` until killed."""
    code = ("import sys, time; from cmtp.pipelines.locking import hold\n"
            f"with hold({str(folder)!r}, own={own}):\n    print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _build_file(tmp_path: Path, mine_options: str = "negatives: 3") -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"""
work: {tmp_path / 'work'}
stages:
  extract: {{sources: ["lcsts={RAW / 'lcsts' / '*.tsv'}"], workers: 1}}
  dedup: {{input: extract}}
  mine: {{input: dedup, {mine_options}}}
""", encoding="utf-8")
    return path


def test_a_second_build_on_a_locked_work_folder_is_refused_naming_the_holder(tmp_path):
    build_file = _build_file(tmp_path)
    holder = _holder(tmp_path / "work", own=True)
    try:
        line = cli_error("build", build_file)
        assert "in use by another cmtp run" in line and f"pid {holder.pid}" in line
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "work" / "extract").exists()  # the refused build ran nothing


def test_a_lock_file_that_cannot_be_made_is_not_reported_as_another_run():
    """filelock reports a lock file it cannot create as a timeout; that is not 'in use by another cmtp run'.
    (/proc takes no new files, for root too, whose os.access checks pass everywhere.)"""
    from cmtp.pipelines.locking import hold
    from cmtp.schemas import CmtpError

    with pytest.raises(CmtpError, match="cannot lock /proc/cmtp-out: cannot create /proc/.cmtp-out.cmtp.lock"):
        with hold("/proc/cmtp-out"):
            pass


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    from cmtp.pipelines.locking import hold

    holder = _holder(tmp_path / "out", own=False)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    notes = []
    with hold(tmp_path / "out", log=notes.append):
        pass
    assert notes and f"pid {holder.pid}" in notes[0] and "no longer running" in notes[0]


def test_two_stage_commands_on_one_output_one_refuses(tmp_path):
    out = tmp_path / "extract"
    holder = _holder(out, own=False)
    try:
        line = cli_error("extract", f"lcsts={RAW / 'lcsts' / '*.tsv'}", "--out", out)
        assert "in use by another cmtp run" in line
    finally:
        holder.kill()
        holder.wait()


def test_a_stage_command_inside_a_running_builds_work_folder_is_refused(tmp_path):
    """dedup --out work/dedup --overwrite while a build ran in work took only its own lock, beside the folder."""
    (tmp_path / "work" / "extract").mkdir(parents=True)
    holder = _holder(tmp_path / "work", own=True)
    try:
        line = cli_error("extract", f"lcsts={RAW / 'lcsts' / '*.tsv'}", "--out", tmp_path / "work" / "extract",
                         "--overwrite")
        assert "in use by another cmtp run" in line and f"pid {holder.pid}" in line
    finally:
        holder.kill()
        holder.wait()
    left = {p.name for p in (tmp_path / "work").iterdir()} - {".cmtp.lock", ".cmtp.lock.json"}  # the killed holder's
    assert left == {"extract"} and not list((tmp_path / "work" / "extract").iterdir())


@pytest.mark.parametrize("mine_options, fragment", [
    ("negatvies: 3", "negatvies (did you mean negatives?)"),
    ("negatives: many", "option negatives must be an integer, got 'many'"),
])
def test_the_whole_build_file_is_checked_before_the_first_stage(tmp_path, mine_options, fragment):
    line = cli_error("build", _build_file(tmp_path, mine_options))
    assert line.startswith("error: stage mine:") and fragment in line
    assert not (tmp_path / "work" / "extract").exists()  # found before extract ran


@pytest.mark.parametrize("stage, fragment", [
    ("train: {data: 5}", "stage train: option data must be a list (or one string), got 5"),
    ("train: {data: [{name: x}]}", "stage train: data {'name': 'x'}: a mapping has paths"),
    ("train: {data: [{paths: ['@dedup/pairs'], wieght: 2}]}", "may have name and weight, not wieght"),
    ("train: {data: [{paths: ['@dedup/pairs'], weight: abc}]}", "its weight must be a number"),
    ("train: {data: [{paths: ['@dedup/pairs'], weight: 0}]}", "dataset data0: its weight must be a positive number"),
    ("train: {data: ['@dedup/pairs'], eval: 3}", "stage train: option eval must be a list (or one string), got 3"),
    ("eval: {model: [1], suite: dev}", "stage eval: option model must be a string, got [1]"),
    ("eval: {model: builtin:me5-small, suite: dev, max_per_task: -1}", "stage eval: option max_per_task must be in"),
    ("mine: {input: dedup, labeled: LABELED}", "stage mine: input LABELED matches no file"),  # one path, not letters
])
def test_a_yaml_value_of_the_wrong_shape_is_one_error_before_the_first_stage(tmp_path, stage, fragment):
    """Values a YAML file gives in the wrong shape (a number for a list, a mapping without paths, a list for a
    name) were TypeError / KeyError / numpy tracebacks, or a string read letter by letter."""
    path = tmp_path / "pipeline.yaml"
    labeled = str(tmp_path / "labeled.jsonl")
    path.write_text(f"work: {tmp_path / 'work'}\nstages:\n  extract: {{sources: ['lcsts={RAW / 'lcsts' / '*.tsv'}']}}\n"
                    f"  dedup: {{input: extract}}\n  {stage.replace('LABELED', labeled)}\n", encoding="utf-8")
    line = cli_error("build", path)
    assert fragment.replace("LABELED", labeled) in line, line
    assert not (tmp_path / "work" / "extract").exists()  # found before extract ran


def test_a_stage_that_is_not_a_mapping_is_one_error(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"work: {tmp_path / 'work'}\nstages:\n  extract: [a, b]\n", encoding="utf-8")
    assert "stage 'extract' must be a mapping of options, not list" in cli_error("build", path)


@pytest.mark.parametrize("args, fragment", [
    (["score", "IN", "--out", "OUT", "--batch-size", "0"], "option batch_size must be in [1, inf)"),
    (["score", "IN", "--out", "OUT", "--threshold", "5"], "option threshold must be in [-1, 1]"),
    (["train", "--data", "IN", "--out", "OUT", "--learning-rate", "-0.001"],
     "option learning_rate must be in (0, inf)"),
    (["train", "--data", "IN", "--out", "OUT", "--temperature", "0"], "option temperature must be in (0, inf)"),
    (["audit", "IN", "--threshold", "2"], "threshold must be in [-1, 1] (scores are cosines), got 2"),
    (["extract", "lcsts=IN", "--out", "OUT", "--min-cjk-ratio", "2"], "option min_cjk_ratio must be in [0, 1]"),
    (["dedup", "IN", "--out", "OUT", "--threshold", "0"], "option threshold must be in (0, 1]"),
    (["dedup", "IN", "--out", "OUT", "--num-shards", "0"], "option num_shards must be in [1, inf)"),
    (["dedup", "IN", "--out", "OUT", "--workers", "0"], "option workers must be an integer in [1, inf)"),
    (["dedup", "IN", "--out", "OUT", "--num-perm", "0"], "option num_perm must be in [2, inf)"),
    (["mine", "IN", "--out", "OUT", "--negatives", "-1"], "option negatives must be in [0, inf)"),
    (["mine", "IN", "--out", "OUT", "--target-recall", "1.5"], "option target_recall must be in (0, 1]"),
    (["audit", "IN", "--thresholds", "1.2:1.5:0.1"], "threshold must be in [-1, 1] (scores are cosines), got 1.2"),
])
def test_an_option_out_of_range_is_one_error_before_any_work(tmp_path, args, fragment):
    (tmp_path / "in").mkdir()
    args = [a.replace("IN", str(tmp_path / "in")) if "IN" in a else str(tmp_path / "out") if a == "OUT" else a
            for a in args]
    started = time.perf_counter()
    assert fragment in cli_error(*args)
    assert time.perf_counter() - started < 60  # refused before a model is loaded or a pipeline starts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written beside the input


def test_a_deleted_shard_reruns_its_stage_and_workers_change_nothing(tmp_path):
    from cmtp.pipelines.build import load_build_file, plan_build
    from tests.test_build import build

    path = tmp_path / "pipeline.yaml"
    text = f"""
work: {tmp_path / 'work'}
stages:
  extract: {{sources: ["lcsts={RAW / 'lcsts' / '*.tsv'}"], workers: 1}}
  dedup: {{input: extract, workers: 1}}
"""
    path.write_text(text, encoding="utf-8")
    build(path)
    path.write_text(text.replace("workers: 1}", "workers: 2}"), encoding="utf-8")  # output-invariant
    assert [p.action for p in plan_build(load_build_file(str(path)))] == ["reuse", "reuse"]
    shard = sorted((tmp_path / "work" / "dedup" / "pairs").glob("*.parquet"))[0]
    shard.unlink()
    plans = plan_build(load_build_file(str(path)))
    assert [p.action for p in plans] == ["reuse", "run"]
    assert plans[1].reason == f"output file pairs/{shard.name} is missing"
    build(path)
    assert shard.exists() and [p.action for p in plan_build(load_build_file(str(path)))] == ["reuse", "reuse"]
    # a foreign shard in a finished stage's folder: the next stage read rows no manifest listed (out 27, in 67)
    import shutil

    shutil.copy(shard, shard.with_name("part-00009-of-00010.parquet"))
    plans = plan_build(load_build_file(str(path)))
    assert [p.action for p in plans] == ["reuse", "run"]
    assert plans[1].reason == "output file pairs/part-00009-of-00010.parquet was not written by the stage"


@pytest.mark.parametrize("content, fragment", [(b"", "not a readable Parquet file"),
                                               (b"PAR1\x00\x00garbage", "not a readable Parquet file")])
def test_a_broken_parquet_input_is_one_error_naming_it(tmp_path, content, fragment):
    (tmp_path / "in").mkdir()
    bad = tmp_path / "in" / "part-0.parquet"
    bad.write_bytes(content)
    for args in (["score", tmp_path / "in", "--out", tmp_path / "s", "--model", "builtin:me5-small"],
                 ["dedup", tmp_path / "in", "--out", tmp_path / "d"],
                 ["mine", tmp_path / "in", "--out", tmp_path / "m"],
                 ["train", "--data", tmp_path / "in", "--out", tmp_path / "t", "--max-steps", "1"]):
        line = cli_error(*args)
        assert str(bad) in line and fragment in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_wrong_schema_names_the_expected_schema_and_the_missing_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ["a"], "title": ["t"], "passage": ["p"]}), tmp_path / "in" / "x.parquet")
    line = cli_error("dedup", tmp_path / "in", "--out", tmp_path / "d")
    assert ("expected schema pair: the file lacks column(s) pair_id, source, source_file, record_key, meta (it has "
            "id, title, passage)") in line


def test_the_root_cause_of_a_beam_failure_is_named():
    from cmtp.pipelines.beam_runner import failure

    worker = ("Traceback (most recent call last):\n  File \"apache_beam/runners/common.py\", line 1498, in process\n"
              "RuntimeError: Traceback (most recent call last):\n  File \"transforms/common/parquet_shards.py\", "
              "line 43, in write_table\nOSError: [Errno 28] No space left on device: '/data/work/.extract.tmp/pairs'"
              "\n\nDuring handling of the above exception, another exception occurred:\nRuntimeError: bundle failed")
    line = str(failure("extract pipeline", RuntimeError(worker)))
    assert line == ("extract pipeline failed (OSError: [Errno 28] No space left on device: "
                    "'/data/work/.extract.tmp/pairs')")


class _FullDisk:
    """A file whose writes fail as a full disk does, after the first 4 KB."""

    def __init__(self, path, mode):
        self.fh = open(path, mode)  # noqa: SIM115

    def write(self, data):
        self.fh.write(data[:4096])
        raise OSError(28, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


@pytest.mark.parametrize("option", ["--report", "--plot"])
def test_a_report_on_a_full_disk_leaves_no_file_and_names_its_path(tmp_path, monkeypatch, capsys, option):
    """audit --report / --plot and eval --output left a truncated 4 KB (or 0-byte) file on a full disk, and the
    error named no path."""
    from cmtp.pipelines import cli, outputs

    _scored(tmp_path / "in")
    target = tmp_path / f"a.{'html' if option == '--report' else 'png'}"
    monkeypatch.setattr(outputs, "open", _FullDisk, raising=False)
    monkeypatch.setattr(sys, "argv", ["cmtp", "audit", str(tmp_path / "in"), option, str(target)])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 1 and lines == [f"error: No space left on device: {target}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no truncated file, no temporary one


@pytest.mark.parametrize("exc, expected", [
    (OSError(28, "No space left on device", "/data/out/model.tmp/model.safetensors"),
     "error: No space left on device: /data/out/model.tmp/model.safetensors"),
    (OSError(30, "Read-only file system", "/ro/report.html"), "error: Read-only file system: /ro/report.html"),
    (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on "
                  "device\" })"), "error: No space left on device (RuntimeError)"),
])
def test_a_full_or_read_only_disk_is_one_error_line(monkeypatch, capsys, exc, expected):
    """A disk-full write (the patched writer raises as the OS and safetensors do) ends in one line with the
    cause, whichever command hit it."""
    import cmtp.pipelines.app as app_module
    from cmtp.pipelines import cli

    def full_disk(**_):
        raise exc

    monkeypatch.setattr(app_module, "app", full_disk)
    with pytest.raises(SystemExit) as stop:
        cli.main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 1 and lines == [expected]


def test_a_store_without_its_file_system_is_one_error_line(tmp_path):
    """``--out gs://...`` where Beam has no file system for gs:// (the gcp extra not installed) is one line naming
    the extra, not Beam's ValueError; likewise a report written through fsspec; a stage that writes only local
    folders says so."""
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.get_filesystem("gs://bucket/x")
        pytest.skip("the gcp extra is installed here")
    except ValueError:
        pass
    assert "pip install 'cmtp[gcp]'" in cli_error("dedup", tmp_path, "--out", "gs://bucket/dedup")
    assert "local folder, not gs://bucket/mine" in cli_error("mine", tmp_path, "--out", "gs://bucket/mine")
    assert "no file system for gs://" in cli_error("eval", "builtin:me5-small", "--suite", "dev", "--output",
                                                   "gs://bucket/e.json")


def test_an_output_that_is_a_file_or_the_input_is_refused_before_work(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    assert "is a file; a stage writes a folder" in cli_error("extract", f"lcsts={RAW / 'lcsts' / '*.tsv'}", "--out",
                                                             taken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no .taken.tmp left behind
    assert "is the stage's input" in cli_error("dedup", RAW / "lcsts", "--out", RAW / "lcsts", "--overwrite")


def test_an_unwritable_report_path_is_refused_before_work(tmp_path, monkeypatch):
    from cmtp.pipelines.outputs import check_writable
    from cmtp.schemas import CmtpError

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as on a read-only file system
    with pytest.raises(CmtpError, match="is not writable"):
        check_writable(str(tmp_path / "sub" / "audit.html"), "--report")
    monkeypatch.undo()
    with pytest.raises(CmtpError, match="is a folder"):
        check_writable(str(tmp_path), "--report")


def test_a_model_path_that_does_not_exist_is_not_taken_for_a_hub_id(monkeypatch):
    from cmtp.transforms.embedding import resolve_model
    from cmtp.transforms.embedding.registry import ModelNotFoundError

    monkeypatch.chdir(ROOT)  # "tests/nonexistent" looks like ORG/NAME, but tests/ is a folder here
    with pytest.raises(ModelNotFoundError, match="no such model folder: tests/nonexistent"):
        resolve_model("tests/nonexistent")


def assert_every_listed_output_opens(out: Path) -> None:
    """Every output the manifest lists exists; no zero-row shard beside non-empty ones; an output empty as a
    whole is one zero-row file carrying the schema (issue #20, item 7)."""
    import pyarrow.parquet as pq

    from cmtp.schemas.manifest import Manifest

    manifest = Manifest.read(str(out))
    for name, entry in manifest.outputs.items():
        files = sorted(Path(entry["path"]).glob("part-*.parquet"))
        assert files, f"{name}: listed in the manifest but no file at {entry['path']}"
        rows = [pq.ParquetFile(f).metadata.num_rows for f in files]
        assert sum(rows) == entry["rows"] and len(files) == entry["files"], name
        if sum(rows) == 0:
            assert [f.name for f in files] == ["part-00000-of-00001.parquet"], name
        else:
            assert 0 not in rows, f"{name}: a zero-row shard beside non-empty ones"


def test_many_shards_over_few_rows_write_no_zero_row_files(tmp_path):
    from cmtp.pipelines.extract import run_extract
    from cmtp.transforms.common.parquet_shards import ShardOptions
    from cmtp.transforms.extract.config import ExtractConfig
    from cmtp.transforms.extract.dofns import SourceSpec

    run_extract([SourceSpec("lcsts", "lcsts", str(RAW / "lcsts" / "*.tsv"))], str(tmp_path / "out"), ExtractConfig(),
                shards=ShardOptions(num_shards=40), workers=1)
    assert_every_listed_output_opens(tmp_path / "out")
    assert len(list((tmp_path / "out" / "pairs").glob("*.parquet"))) < 40  # 30 rows cannot fill 40 shards


@pytest.mark.parametrize("mine_options, missing", [
    ("labeled: [LABELED]", "labeled.jsonl"),
    ("pool: LABELED", "labeled.jsonl"),
])
def test_an_external_input_that_matches_nothing_is_one_error_before_the_first_stage(tmp_path, mine_options,
                                                                                     missing):
    options = mine_options.replace("LABELED", str(tmp_path / "labeled.jsonl"))
    line = cli_error("build", _build_file(tmp_path, options))
    assert line == f"error: stage mine: input {tmp_path / missing} matches no file"
    assert not (tmp_path / "work").exists()


def test_an_extract_source_that_matches_nothing_is_one_error(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"work: {tmp_path / 'work'}\nstages:\n  extract: {{sources: ['lcsts={tmp_path}/no/*.tsv']}}\n",
                    encoding="utf-8")
    assert cli_error("build", path) == f"error: stage extract: input {tmp_path}/no/*.tsv matches no file"


@pytest.mark.parametrize("same_options", [True, False])
def test_two_builds_started_together_one_refuses_and_the_outputs_match_their_fingerprints(tmp_path, same_options):
    import shutil

    from cmtp.pipelines.build import load_build_file, plan_build

    exe = shutil.which("cmtp") or str(Path(sys.executable).parent / "cmtp")
    files = []
    for i, min_chars in enumerate([20, 20 if same_options else 40]):
        path = tmp_path / f"pipeline{i}.yaml"
        path.write_text(f"""
work: {tmp_path / 'work'}
stages:
  extract: {{sources: ["lcsts={RAW / 'lcsts' / '*.tsv'}"], workers: 1, passage_min_chars: {min_chars}}}
  dedup: {{input: extract, workers: 1}}
""", encoding="utf-8")
        files.append(path)
    procs = [subprocess.Popen([exe, "build", str(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for f in files]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    refused = [i for i, (code, err) in enumerate(results) if code == 1 and "in use by another cmtp run" in err]
    finished = [i for i, (code, _) in enumerate(results) if code == 0]
    assert len(refused) == 1 and len(finished) == 1, results
    # the winner's committed outputs are complete and carry its fingerprints: its plan reuses every stage
    plans = plan_build(load_build_file(str(files[finished[0]])))
    assert [p.action for p in plans] == ["reuse", "reuse"], [p.reason for p in plans]
    assert_every_listed_output_opens(tmp_path / "work" / "dedup")
    if not same_options:  # the loser's options differ, so its plan re-runs from extract
        assert plan_build(load_build_file(str(files[refused[0]])))[0].action == "run"


def test_an_error_names_the_users_output_not_the_folder_it_is_written_in(tmp_path):
    from dataclasses import replace

    from cmtp.pipelines.stages import STAGES, run_stage
    from cmtp.schemas.errors import CmtpError

    def failing(inputs, out, config, beam_args, **extras):
        raise CmtpError(f"No space left on device: {out}/pairs/part-00000-of-00001.parquet")

    (tmp_path / "in").mkdir()
    with pytest.raises(CmtpError) as err:
        run_stage(replace(STAGES["dedup"], run=failing), [str(tmp_path / "in")], str(tmp_path / "out"), {})
    assert str(err.value) == f"No space left on device: {tmp_path / 'out'}/pairs/part-00000-of-00001.parquet"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_model_save_that_fails_leaves_no_half_written_folder(tiny_model_path, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from cmtp.trainer.checkpoints import save_model as _save_model
    from cmtp.trainer.config import TrainConfig

    st = SentenceTransformer(str(tiny_model_path), device="cpu")

    def full_disk(path, **kwargs):
        (Path(path) / "model.safetensors").parent.mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "save", full_disk)
    config = TrainConfig(model=str(tiny_model_path), data=[{"name": "s", "paths": ["x"]}], output_dir=str(tmp_path))
    with pytest.raises(OSError, match="No space left"):
        _save_model(st, tmp_path / "model", config, ("", ""), __import__("collections").Counter())
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_archive_and_an_empty_file_are_named_for_what_they_are(tmp_path):
    import gzip

    import pyarrow.parquet as pq

    from cmtp.pipelines.extract import run_extract
    from cmtp.transforms.extract.dofns import SourceSpec

    body = (RAW / "news" / "inews_head30.jsonl").read_bytes()
    (tmp_path / "news").mkdir()
    packed = gzip.compress(body)
    (tmp_path / "news" / "whole.jsonl.gz").write_bytes(packed)
    (tmp_path / "news" / "cut_early.jsonl.gz").write_bytes(packed[:2000])  # damaged inside the first 64 KiB
    (tmp_path / "news" / "cut_late.jsonl.gz").write_bytes(packed[:int(len(packed) * 0.9)])
    (tmp_path / "news" / "empty.txt").write_bytes(b"")
    manifest = run_extract([SourceSpec("news", "news", str(tmp_path / "news" / "*"))], str(tmp_path / "out"),
                           workers=1)
    dead = pq.read_table(tmp_path / "out" / "dead_letters").to_pylist()
    truncated = sorted(d["source_file"].rsplit("/", 1)[-1] for d in dead if d["reason"] == "truncated_archive")
    assert truncated == ["cut_early.jsonl.gz", "cut_late.jsonl.gz"]
    assert not [d for d in dead if d["reason"] in ("undecodable", "no_title", "read_error")], dead
    # the late cut keeps the records before the damage (read as exact duplicates of whole.jsonl.gz's)
    lines = body.count(b"\n")
    assert manifest.count_in > lines + 2 and "truncated_archive" in manifest.dropped


# -- the mistake matrix: each mistake of issue #20 through the command line ------------------------------------
def _scored(folder: Path, n: int = 20) -> None:
    import pyarrow.parquet as pq

    from cmtp.schemas import SCORED_PAIR, rows_to_table

    rows = [{"pair_id": f"p{i}", "source": "s", "source_file": "f", "record_key": str(i), "title": f"标题{i}",
             "passage": "正文" * 10, "meta": "{}", "score": 0.5 + i / 100, "cluster_id": None, "cluster_size": None,
             "scorer": "m", "scorer_hash": "h", "threshold": 0.4, "kept": True} for i in range(n)]
    (folder / "kept").mkdir(parents=True)
    pq.write_table(rows_to_table(rows, SCORED_PAIR), folder / "kept" / "part-00000-of-00001.parquet")


def _parquet(folder: Path, content: bytes | None = None, wrong_schema: bool = False) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    if wrong_schema:
        pq.write_table(pa.table({"id": ["a"], "title": ["t"], "passage": ["p"]}), folder / "x.parquet")
    else:
        _scored(folder / "_good")  # a valid file whose tail is cut off, or an empty one
        good = (folder / "_good" / "kept" / "part-00000-of-00001.parquet").read_bytes()
        __import__("shutil").rmtree(folder / "_good")
        (folder / "x.parquet").write_bytes(good[: len(good) // 2] if content is None else content)


def _manifest(folder: Path, stage: str) -> None:
    from cmtp.schemas import Manifest

    Manifest(stage=stage).write(str(folder))


def _readonly(tmp: Path) -> Path:
    (tmp / "ro").mkdir()  # the test makes it a read-only file system
    return tmp / "ro"


def _build(tmp: Path, stages: str) -> Path:
    (tmp / "pipeline.yaml").write_text(f"work: {tmp / 'work'}\nstages:\n{stages}", encoding="utf-8")
    return tmp / "pipeline.yaml"


LCSTS = f"lcsts={RAW / 'lcsts' / '*.tsv'}"
ABLATABLE = (f"  extract: {{sources: ['{LCSTS}']}}\n  dedup: {{input: extract}}\n  score: {{input: dedup}}\n"
             "  mine: {input: score}\n  stage3: {kind: train, data: ['@mine/examples']}\n")
MISTAKES = {
    # (set-up of tmp returning the arguments, a fragment of the error line)
    "zero-byte parquet to score": (lambda t: _parquet(t / "in", b"") or
                                   ["score", t / "in", "--out", t / "out", "--model", "builtin:me5-small"],
                                   "not a readable Parquet file"),
    "zero-byte parquet to mine": (lambda t: _parquet(t / "in", b"") or ["mine", t / "in", "--out", t / "out"],
                                  "not a readable Parquet file"),
    "zero-byte parquet to train": (lambda t: _parquet(t / "in", b"") or
                                   ["train", "--data", t / "in", "--out", t / "out", "--max-steps", "1"],
                                   "not a readable Parquet file"),
    "truncated parquet to mine": (lambda t: _parquet(t / "in") or ["mine", t / "in", "--out", t / "out"],
                                  "not a readable Parquet file"),
    "wrong-schema parquet to mine": (lambda t: _parquet(t / "in", wrong_schema=True) or
                                     ["mine", t / "in", "--out", t / "out"], "lacks column"),
    "a stage that is a list": (lambda t: ["build", _build(t, "  extract: [a, b]\n")], "must be a mapping"),
    "threshold: high": (lambda t: ["build", _build(t, f"  extract: {{sources: ['{LCSTS}']}}\n  dedup: "
                                                      "{input: extract}\n  score: {input: dedup, threshold: high}\n")],
                        "option threshold must be a number, got 'high'"),
    "a typo in the last stage": (lambda t: ["build", _build(t, f"  extract: {{sources: ['{LCSTS}']}}\n  mine: "
                                                               "{input: extract, negatvies: 3}\n")],
                                 "did you mean negatives?"),
    "a source that matches nothing": (lambda t: ["build", _build(t, "  extract: {sources: ['news=/nowhere/*.gz']}\n")],
                                      "matches no file"),
    "train --learning-rate -0.001": (lambda t: ["train", "--data", RAW, "--out", t / "out", "--learning-rate",
                                                 "-0.001"],
                          "option learning_rate must be in (0, inf)"),
    "extract --out FILE": (lambda t: (t / "out").write_text("x") and ["extract", LCSTS, "--out", t / "out"],
                           "is a file"),
    "dedup D --out D": (lambda t: _parquet(t / "in") or ["dedup", t / "in", "--out", t / "in", "--overwrite"],
                        "is the stage's input"),
    "score --batch-size 0": (lambda t: _scored(t / "in") or ["score", t / "in", "--out", t / "out", "--batch-size",
                                                             "0"], "option batch_size must be in [1, inf)"),
    "score --threshold 5": (lambda t: _scored(t / "in") or ["score", t / "in", "--out", t / "out", "--threshold", "5"],
                            "option threshold must be in [-1, 1]"),
    "audit --threshold 2": (lambda t: _scored(t / "in") or ["audit", t / "in", "--threshold", "2"],
                            "threshold must be in [-1, 1] (scores are cosines), got 2"),
    "audit --thresholds 1.2:1.5": (lambda t: _scored(t / "in") or ["audit", t / "in", "--thresholds", "1.2:1.5:0.1"],
                                   "threshold must be in [-1, 1] (scores are cosines), got 1.2"),
    "build --work on a read-only disk": (lambda t: ["build", _build(t, f"  extract: {{sources: ['{LCSTS}']}}\n"),
                                                    "--work", _readonly(t) / "work"], "Read-only file system"),
    "audit --report on a read-only disk": (lambda t: _scored(t / "in") or ["audit", t / "in", "--report",
                                                                           _readonly(t) / "a.html"], "is not writable"),
    "eval --output on a read-only disk": (lambda t: ["eval", "builtin:me5-small", "--suite", "dev", "--output",
                                                     _readonly(t) / "e.json"], "is not writable"),
    # a device this machine lacks is refused before any work (it was a worker's traceback)
    "score --device cuda:99": (lambda t: _scored(t / "in") or ["score", t / "in", "--out", t / "out", "--model",
                                                               "builtin:me5-small", "--device", "cuda:99"],
                               "--device cuda:99: this machine has"),
    "mine --device tpu": (lambda t: _scored(t / "in") or ["mine", t / "in", "--out", t / "out", "--device", "tpu"],
                          "--device tpu: not a device name"),
    "mine --engine onnx --device cuda": (lambda t: _scored(t / "in") or ["mine", t / "in", "--out", t / "out",
                                                                         "--engine", "onnx", "--device", "cuda"],
                                         "--engine onnx runs on the CPU"),
    "train --device cuda:99": (lambda t: _scored(t / "in") or ["train", "--data", t / "in", "--out", t / "out",
                                                               "--device", "cuda:99"], "this machine has"),
    "eval --device cuda:99": (lambda t: ["eval", "builtin:me5-small", "--suite", "dev", "--device", "cuda:99"],
                              "this machine has"),
    "train --heads without dense": (lambda t: _scored(t / "in") or ["train", "--data", t / "in", "--out", t / "out",
                                                                    "--heads", "sparse,multivector"],
                                    "heads: dense is always trained"),
    "train --heads with a head that does not exist": (lambda t: _scored(t / "in") or [
        "train", "--data", t / "in", "--out", t / "out", "--heads", "dense,splade"], "heads: splade unknown"),
    "eval --mcls with BGE-M3 heads": (lambda t: ["eval", "builtin:me5-small", "--suite", "dev", "--heads",
                                                 "dense,sparse", "--mcls", "128"], "--mcls gives dense vectors"),
    "eval --mcls below zero": (lambda t: ["eval", "builtin:me5-small", "--suite", "dev", "--mcls", "-5"], "mcls"),
    "eval --heads on a model without them": (lambda t: ["eval", "builtin:me5-small", "--suite", "dev", "--heads",
                                                        "dense,sparse"], "has no BGE-M3 heads"),
    "score --out inside its input": (lambda t: _scored(t / "in") or ["score", t / "in", "--out", t / "in" / "s",
                                                                     "--model", "builtin:me5-small"],
                                     "is inside the stage's input"),
    "build file with a stage written twice": (lambda t: ["build", _build(t, f"  extract: {{sources: ['{LCSTS}']}}\n"
                                                                         f"  extract: {{sources: ['{LCSTS}']}}\n")],
                                              "'extract' is written twice in one mapping (line 4, column 3)"),
    "--config file that is not YAML": (lambda t: _scored(t / "in") or (t / "c.yaml").write_text("a: [1\n") and
                                       ["score", t / "in", "--out", t / "out", "--config", t / "c.yaml"],
                                       "c.yaml: not valid YAML: "),
    "mine --pool that is not Parquet": (lambda t: _scored(t / "in") or (t / "pool.txt").write_text("x\n") and
                                        ["mine", t / "in", "--out", t / "out", "--pool", t / "pool.txt"],
                                        "pool.txt: not a readable Parquet file"),
    "mine --pool with a bad JSON line": (lambda t: _scored(t / "in") or (t / "p.jsonl").write_text("{bad\n") and
                                         ["mine", t / "in", "--out", t / "out", "--pool", t / "p.jsonl"],
                                         "p.jsonl:1: not a JSON object"),
    "mine --labeled Parquet that is not Parquet": (lambda t: (t / "l.parquet").write_bytes(b"PAR1") and
                                                   ["mine", "--labeled", t / "l.parquet", "--out", t / "out"],
                                                   "l.parquet: not a readable Parquet file"),
    # --overwrite replaces this stage's output, never another's (train --overwrite removed a mine folder it read)
    "train --out a score folder --overwrite": (lambda t: _scored(t / "in") or _manifest(t / "in", "score") or
                                               ["train", "--data", t / "in", "--out", t / "in", "--overwrite"],
                                               "holds the output of score, not of train"),
    "eval a training run's folder, not its model": (lambda t: (t / "run" / "model").mkdir(parents=True) or
                                                    ["eval", t / "run", "--suite", "dev"],
                                                    "a training run keeps its model in"),
    "score --model a folder that is not a model": (lambda t: _scored(t / "in") or
                                                   ["score", t / "in", "--out", t / "out", "--model", t / "in"],
                                                   "is not a model folder"),
    "a Beam flag whose value Beam refuses": (lambda t: _parquet(t / "in") or ["dedup", t / "in", "--out", t / "out",
                                                                             "--", "--direct_num_workers", "abc"],
                                             "Beam flags: argument --direct_num_workers: invalid int value: 'abc'"),
    "extract --blocklist that does not exist": (lambda t: ["extract", LCSTS, "--out", t / "out", "--blocklist",
                                                           t / "no.txt"], "no files match"),
    "extract source with an empty glob": (lambda t: ["extract", "lcsts=", "--out", t / "o"], "must be ADAPTER=GLOB"),
    "mine --labeled with no usable row": (lambda t: (t / "bad.jsonl").write_text("x\n") and [
        "mine", "--labeled", t / "bad.jsonl", "--out", t / "m"], "none of the 1 labeled row(s) is usable"),
    "eval --output on a store without its file system": (lambda t: ["eval", "builtin:me5-small", "--suite", "dev",
                                                                    "--output", "nosuchfs://b/e.json"],
                                                         "no file system for nosuchfs:// is installed"),
    "dedup on a score output (no pairs/)": (lambda t: _scored(t / "in") or _manifest(t / "in", "score") or [
        "dedup", t / "in", "--out", t / "out"], "is a stage's output without pairs/"),
    "mine on a score output that kept nothing": (lambda t: _scored(t / "in", 0) or ["mine", t / "in", "--out",
                                                                                    t / "out"], "holds no kept pairs"),
    "audit --proxy-input that matches nothing": (lambda t: _scored(t / "in") or [
        "audit", t / "in", "--proxy", "--proxy-input", f"other={t / 'none'}"], "no Parquet files under"),
    "audit --thresholds a:b:c (no emoji)": (lambda t: _scored(t / "in") or ["audit", t / "in", "--thresholds",
                                                                            "a:b:c"], "bad --thresholds 'a:b:c'"),
    # a source glob that covers the output read the run's own lock files and earlier outputs
    "extract source glob covering its output": (lambda t: _news(t / "in") or [
        "extract", f"news={t / 'in'}/*", "--out", t / "in" / "out"], "covers the output"),
    "build sources covering the work folder": (lambda t: _news(t / "b") or [
        "build", _build(t, f"  extract: {{sources: ['news={t}/**']}}\n"), "--dry-run"],
        "covers the build's work folder"),
    "build file with an unknown top-level key": (lambda t: (t / "p.yaml").write_text(
        f"wrok: {t / 'w'}\nstages:\n  extract: {{sources: ['{LCSTS}']}}\n") and ["build", t / "p.yaml"],
        "unknown top-level key(s) wrok (did you mean work?)"),
    "build --dry-run with an extract stage without sources": (lambda t: [
        "build", _build(t, "  extract: {workers: 1}\n"), "--dry-run"], "give at least one source"),
    # an ablation's variants are checked before any work, at --dry-run too (it printed the plan and exit 0)
    "build --ablate of a missing stage --dry-run": (lambda t: ["build", _build(t, ABLATABLE), "--ablate",
                                                               "nosuch.x=1", "--dry-run"], "no stage 'nosuch'"),
    "build --ablate of a stage after the data --dry-run": (lambda t: [
        "build", _build(t, ABLATABLE), "--ablate", "stage3.max_steps=1,2", "--dry-run"], "stage3 runs after mine"),
    "build --ablate of an input from a later stage --dry-run": (lambda t: [
        "build", _build(t, ABLATABLE), "--ablate", "score.input=mine", "--dry-run"], "is not a stage before score"),
    "extract source glob matching a FIFO (it hung)": (lambda t: _news(t / "in") or os.mkfifo(t / "in" / "p.jsonl") or [
        "extract", f"news={t / 'in'}/*.jsonl", "--out", t / "out"], "which is not a regular file"),
    "extract --blocklist that is binary": (lambda t: (t / "b.txt").write_bytes(b"\xff\xfe\x00\x01bad") and [
        "extract", LCSTS, "--out", t / "out", "--blocklist", t / "b.txt"], "b.txt is not UTF-8 text"),
    "extract --out a dangling symlink": (lambda t: (t / "link").symlink_to(t / "nowhere") or [
        "extract", LCSTS, "--out", t / "link"], "is a symbolic link to"),
    # an input whose files no longer match its manifest was read without a word (26 of 27 shards, exit 0)
    "dedup an extract output with a deleted shard": (lambda t: _extracted(t / "in", delete=True) or [
        "dedup", t / "in", "--out", t / "out"], "pairs/ holds 2 file(s) with"),
    "train on an extract's pretrain/ with a foreign shard": (lambda t: _extracted(t / "in", add=True) or [
        "train", "--stage", "retromae", "--data", t / "in" / "pretrain", "--out", t / "out"],
        "pretrain/ holds 4 file(s)"),
}


def _extracted(folder: Path, delete: bool = False, add: bool = False) -> None:
    """An extract output of three shards per folder, one shard deleted or one copied in beside the others."""
    import shutil

    from cmtp.pipelines.extract import run_extract
    from cmtp.transforms.common.parquet_shards import ShardOptions
    from cmtp.transforms.extract.dofns import SourceSpec

    with __import__("contextlib").redirect_stderr(__import__("io").StringIO()):  # its progress line
        run_extract([SourceSpec("lcsts", "lcsts", str(RAW / "lcsts" / "*.tsv"))], str(folder),
                    shards=ShardOptions(num_shards=3), workers=1)
    pairs, pretrain = sorted((folder / "pairs").glob("*.parquet")), sorted((folder / "pretrain").glob("*.parquet"))
    if delete:
        pairs[0].unlink()
    if add:
        shutil.copy(pretrain[0], folder / "pretrain" / "part-00007-of-00008.parquet")


def _news(folder: Path) -> None:
    folder.mkdir(parents=True)
    record = {"title": "长江的源头", "content": "长江的正源是沱沱河，发源于唐古拉山脉主峰各拉丹冬雪山。"}
    (folder / "a.jsonl").write_text(__import__("json").dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")


@pytest.mark.parametrize("name", list(MISTAKES))
def test_every_mistake_is_one_error_line_and_leaves_nothing(name, tmp_path, monkeypatch, capsys):
    """Exit 1, exactly one ``error:`` line, no traceback, and the output's parent as it was. ``ro/`` is a
    read-only file system (patched: the tests run as root, for whom permissions do not stop a write)."""
    import errno

    from cmtp.pipelines import cli

    setup, fragment = MISTAKES[name]
    args = [str(a) for a in setup(tmp_path)]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    readonly = str(tmp_path / "ro")
    real_mkdir, real_access = os.mkdir, os.access

    def mkdir(path, *a, **kw):
        if str(path).startswith(readonly):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *a, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "access", lambda p, m, **kw: not str(p).startswith(readonly) and real_access(p, m))
    monkeypatch.setattr(sys, "argv", ["cmtp", *args])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == 1 and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], lines
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing committed, nothing left behind


def test_a_flag_beam_does_not_know_is_named():
    """Beam drops a flag no option declares (a typo such as --temp_locaton) with a log line nobody sees; the
    stage runner prints one warning line naming it."""
    from cmtp.pipelines.beam_runner import unknown_flags

    assert unknown_flags(["--runner", "DirectRunner", "--temp_locaton", "gs://b/tmp", "--bogus"]) == [
        "--temp_locaton", "--bogus"]
    assert unknown_flags(["--runner", "DirectRunner", "--direct_num_workers", "2"]) == []


def test_an_extra_blocklist_is_part_of_extracts_fingerprint():
    """Its content is part of what extract does: an edited blocklist re-runs the stage (it was reused)."""
    from cmtp.pipelines.build import StagePlan, external_inputs

    plan = StagePlan("extract", "extract", {"sources": [LCSTS], "extra_blocklists": ["terms.txt"]}, [])
    assert external_inputs(plan) == [LCSTS.split("=", 1)[1], "terms.txt"]


def test_a_local_model_folder_is_part_of_the_fingerprint(tmp_path):
    """Weights retrained at the same path re-run the stages that use them (they were reused)."""
    from cmtp.pipelines.build import StagePlan, fingerprint

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"x" * 10)
    plan = StagePlan("eval", "eval", {"model": str(tmp_path / "m"), "suite": "dev"}, [])
    before = fingerprint(plan, {}, [])
    assert fingerprint(plan, {}, []) == before
    (tmp_path / "m" / "model.safetensors").write_bytes(b"y" * 11)
    assert fingerprint(plan, {}, []) != before


def test_use_gpu_without_a_faiss_gpu_is_one_error_before_the_embeddings(tmp_path):
    from cmtp.transforms.mine.index import gpus_available

    if gpus_available():
        pytest.skip("faiss sees a GPU here")
    _scored(tmp_path / "in")
    line = cli_error("mine", tmp_path / "in", "--out", tmp_path / "out", "--use-gpu")
    assert "--use-gpu: faiss sees no GPU here" in line and not (tmp_path / "out").exists()


def _long_extract_input(folder: Path) -> Path:
    """Enough JSON lines that extract with two workers runs well past the signal."""
    import json

    folder.mkdir(parents=True)
    lines = (RAW / "lcsts" / "clge_train_head30.tsv").read_text(encoding="utf-8").splitlines()
    with (folder / "a.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(40000):
            title, text = lines[i % len(lines)].split("\t")
            fh.write(json.dumps({"title": f"{title}{i}", "content": f"{text}第{i}条"}, ensure_ascii=False) + "\n")
    return folder / "a.jsonl"


@pytest.mark.parametrize("stage", ["extract", "score"])
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, tiny_model_path, stage):
    """Ctrl-C during extract printed the Beam workers' tracebacks ("Worker subprocess exited with return code -2")
    beside error: aborted; during score the process ended with a C++ terminate, exit 134. The signal goes to the
    whole process group, as a terminal sends it."""
    source = _long_extract_input(tmp_path / "in")
    if stage == "extract":
        args = ["extract", f"news={source}", "--out", tmp_path / "out", "--workers", "2"]
    else:
        from cmtp.pipelines.extract import run_extract
        from cmtp.transforms.extract.dofns import SourceSpec

        run_extract([SourceSpec("news", "news", str(source))], str(tmp_path / "pairs"))
        args = ["score", tmp_path / "pairs", "--out", tmp_path / "out", "--model", tiny_model_path, "--threshold",
                "0.5"]
    proc = subprocess.Popen([sys.executable, "-m", "cmtp.pipelines", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(6)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(f"{stage}:")]  # its bar
    assert proc.returncode == 130 and lines == ["error: aborted"], (proc.returncode, err[-3000:])
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
