"""The cmtp command line: version, schema display, and error paths that print one line and exit non-zero."""

import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


def _cmtp(*args, env=None):
    exe = shutil.which("cmtp") or str(__import__("pathlib").Path(sys.executable).parent / "cmtp")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=120)


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


def test_every_command_has_help_with_examples():
    for args in [["schema", "show"], ["schema", "list"], ["models", "prepare"], ["models", "list"]]:
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, args
        assert "Example" in result.output, args


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["schema", "show", "nope"], "unknown schema 'nope'"),
        (["models", "prepare", "builtin:nope"], "unknown built-in model 'builtin:nope'"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, fragment):
    proc = _cmtp(*args)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], proc.stderr


def test_bad_option_is_a_usage_error():
    proc = _cmtp("schema", "show", "pair", "--format", "xml")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "xml" in proc.stderr
