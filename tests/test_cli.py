"""The cmtp command line: version, schema display, and error paths that print one line and exit non-zero."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmtp.pipelines.app import app

runner = CliRunner()


def _cmtp(*args, env=None):
    exe = shutil.which("cmtp") or str(__import__("pathlib").Path(sys.executable).parent / "cmtp")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=120)


def cli_error(*args) -> str:
    """Run ``cmtp ARGS`` and return its one ``error:`` line, checking it exits 1 without a traceback."""
    proc = _cmtp(*map(str, args))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    return lines[0]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("cmtp ")


def test_schema_show_table_and_json():
    result = runner.invoke(app, ["schema", "show", "training_example"])
    assert result.exit_code == 0
    for name in ["query", "pos", "neg_scores", "list<item: string>"]:
        assert name in result.output
    result = runner.invoke(app, ["schema", "show", "pair", "--format", "json"])
    data = json.loads(result.output)
    assert [f["name"] for f in data["fields"]][:2] == ["pair_id", "source"]
    result = runner.invoke(app, ["schema", "show", "manifest"])
    assert "count_in" in result.output and "dropped" in result.output


def _all_commands(group, prefix=()):
    """Every leaf command of the click tree behind the typer app."""
    import typer.main

    command = typer.main.get_command(group) if prefix == () else group
    for name, sub in getattr(command, "commands", {}).items():
        if getattr(sub, "commands", None):
            yield from _all_commands(sub, (*prefix, name))
        else:
            yield [*prefix, name]


def test_every_command_has_help_with_examples():
    commands = list(_all_commands(app))
    names = {" ".join(c) for c in commands}
    assert {"extract", "dedup", "score", "audit", "mine", "train", "eval", "schema show", "models list"} <= names, names
    for args in commands:
        result = runner.invoke(app, [*args, "--help"], terminal_width=200)
        assert result.exit_code == 0, args
        assert "Example" in result.output, (args, result.output[:400])


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["schema", "show", "nope"], "unknown schema 'nope'"),
        (["models", "prepare", "builtin:nope"], "unknown built-in model 'builtin:nope'"),
        (["models", "prepare", "/no/such/model"], "unknown built-in model '/no/such/model'"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, fragment):
    proc = _cmtp(*args)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], proc.stderr


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["schema", "show", "pair", "--format", "xml"], "'xml' is not one of"),
        (["dedup", "in", "--out", "o", "--ngram", "two"], "Invalid value for '--ngram'"),
        (["mine", "in", "--out", "o", "--search-partitions", "two"], "Invalid value for '--search-partitions'"),
        (["dedup", "in", "--out", "o", "--bogus", "1"], "No such option: --bogus"),
        (["dedupp"], "No such command 'dedupp'"),
        (["audit"], "Missing argument"),
        (["audit", "in", "--top", "-1"], "Invalid value for '--top'"),
    ],
)
def test_what_click_refuses_is_one_error_line_with_exit_2(args, fragment):
    """A value typer cannot parse, an unknown option or command, a missing one: one line naming the help
    to read, not typer's boxed panel, and click's exit status 2."""
    proc = _cmtp(*args)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], proc.stderr
    assert lines[0].endswith("--help)"), lines


def test_cmtp_alone_prints_the_help_and_no_error_line():
    proc = _cmtp()
    assert proc.returncode == 2 and "Usage" in proc.stdout and "error:" not in proc.stderr


def test_a_rethreshold_outside_the_cosine_range_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    line = cli_error("score", tmp_path / "in", "--out", tmp_path / "cut", "--rethreshold", "2")
    assert "--rethreshold must be in [-1, 1]" in line and not (tmp_path / "cut").exists()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["extract", "nosuch=x.json", "--out", "o"], "unknown adapter 'nosuch'"),
        (["extract", "just-a-path.json", "--out", "o"], "must be ADAPTER=GLOB"),
        (["extract", "wudao=/nonexistent/dir/*.json", "--out", "o"], "no files match /nonexistent/dir/*.json"),
    ],
)
def test_extract_user_errors(tmp_path, args, fragment):
    proc = _cmtp(*[a.replace("--out o", "") for a in args[:-1]], str(tmp_path / "o"))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and fragment in proc.stderr


def test_extract_command_runs_and_prints_summary(tmp_path):
    from pathlib import Path

    data = Path(__file__).parent / "data" / "raw" / "lcsts" / "clge_train_head30.tsv"
    result = runner.invoke(app, ["extract", f"lcsts={data}", "--out", str(tmp_path), "--workers", "1",
                                 "--num-shards", "2"])
    assert result.exit_code == 0, result.output
    assert "extract: in 30" in result.output and (tmp_path / "manifest.json").exists()


def test_an_existing_stage_output_needs_overwrite(tmp_path):
    from pathlib import Path

    data = Path(__file__).parent / "data" / "raw" / "lcsts" / "clge_train_head30.tsv"
    args = ["extract", f"lcsts={data}", "--out", str(tmp_path / "o"), "--workers", "1"]
    assert runner.invoke(app, args).exit_code == 0
    line = cli_error(*args)
    assert "already holds a stage output" in line and "--overwrite" in line
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_ctrl_c_is_one_aborted_line_with_exit_130(monkeypatch, capsys):
    """Ctrl-C while the modules load, inside a command (typer's exit code 130), or first seen by a Beam worker
    thread (a RuntimeError whose text names KeyboardInterrupt) ends as ``error: aborted``, not a traceback."""
    from cmtp.pipelines import beam_runner, cli

    class Interrupted:
        def run(self):
            raise RuntimeError("Traceback ...\nKeyboardInterrupt [while running 'Score/RunInference']")

    with pytest.raises(KeyboardInterrupt):
        beam_runner.run_to_completion(Interrupted(), "the pipeline")
    monkeypatch.setattr(cli, "_hard_exit", sys.exit)  # main() ends the process with os._exit: not pytest's
    for interrupt in (lambda: (_ for _ in ()).throw(KeyboardInterrupt), lambda: 130):
        monkeypatch.setattr(cli, "_main", interrupt)
        with pytest.raises(SystemExit) as stop:
            cli.main()
        assert stop.value.code == 130 and capsys.readouterr().err.strip() == "error: aborted"


def test_help_paragraphs_are_reflowed_for_the_terminal_and_examples_kept():
    """typer keeps a help's source line breaks: 115-character source lines came out ragged on an 80-column
    terminal (a line of one word every other line)."""
    from cmtp.pipelines.app import _reflowed

    assert _reflowed("One paragraph\nover two lines.\n\nExamples:\n\n  cmtp a\n  --flag x\n") == \
        "One paragraph over two lines.\n\nExamples:\n\n  cmtp a\n  --flag x"
    result = CliRunner().invoke(app, ["mine", "--help"], terminal_width=80)
    assert "The pool is every passage of the inputs, or" in result.output  # a source line break fell after "the"


def test_an_adapter_plugin_whose_own_code_fails_is_one_error_line(tmp_path):
    """A plugin module raising at import (not an ImportError) was a traceback."""
    import os

    (tmp_path / "badplug.py").write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    data = Path(__file__).parent / "data" / "raw" / "lcsts" / "clge_train_head30.tsv"
    proc = _cmtp("extract", f"lcsts={data}", "--plugin", "badplug", "--out", str(tmp_path / "o"),
                 env={**os.environ, "PYTHONPATH": str(tmp_path)})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines == ["error: cannot import adapter plugin 'badplug': RuntimeError: boom"]
