"""Every ``cmtp`` example in the README, in docs/ and in the commands' ``--help`` texts is a command line the CLI
accepts (options that exist, values of the right type), the ones that use bundled data run (issue #21), and every
relative link in the README and docs/ leads to a file that exists (issue #35)."""

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cmtp.pipelines.app import app
from cmtp.pipelines.commands import (
    audit_cmd,
    build_cmd,
    dedup_cmd,
    eval_cmd,
    export_cmd,
    extract_cmd,
    mine_cmd,
    score_cmd,
    train_cmd,
)

ROOT = Path(__file__).resolve().parents[1]
HELPS = [audit_cmd, build_cmd, dedup_cmd, eval_cmd, export_cmd, extract_cmd, mine_cmd, score_cmd, train_cmd]


def _command_lines(text: str) -> list[str]:
    """``cmtp ...`` lines, continuation backslashes joined, trailing ``# comments`` dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("cmtp "):
            lines.append(re.sub(r"\s+#.*$", "", line))
    return lines


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _readme_examples() -> list[str]:
    """The ``cmtp`` lines of every bash block of the README and the docs pages."""
    blocks = [b for page in DOCS for b in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), re.S)]
    return [line for block in blocks for line in _command_lines(block)]


def _help_examples() -> list[str]:
    return [line for module in HELPS for line in _command_lines(module.HELP)]


EXAMPLES = sorted(set(_readme_examples() + _help_examples()))


def _parse(line: str) -> None:
    """Resolve the sub-command and let the CLI's parser take its arguments, as a run would, without running it.
    (typer vendors its own click, so the objects are used by what they do, not by their class.)"""
    args = shlex.split(line)[1:]
    command = typer.main.get_command(app)
    ctx = command.make_context("cmtp", list(args))
    while hasattr(command, "resolve_command"):
        rest = list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])) + list(ctx.args)
        if not rest:
            break
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)


def _problem(line: str) -> str | None:
    """None when ``line`` parses (or is --version/--help), else the parser's message."""
    try:
        _parse(line)
    except Exception as exc:
        if type(exc).__name__ == "Exit":
            return None
        return exc.format_message() if hasattr(exc, "format_message") else repr(exc)
    return None


def test_the_examples_were_found():
    assert len(_readme_examples()) >= 30 and len(_help_examples()) >= 25


@pytest.mark.parametrize("line", [e for e in EXAMPLES if "..." not in e])
def test_every_example_is_a_command_line_the_cli_accepts(line):
    assert _problem(line) is None, f"{line}: {_problem(line)}"


def test_a_broken_example_is_caught():
    assert "thresold" in _problem("cmtp dedup a --out b --thresold 0.7")
    assert "--negatives" in _problem("cmtp mine a --out b --negatives many")
    assert _problem("cmtp eval x --instruction") is not None


RUNNABLE = ["cmtp --version", "cmtp schema list", "cmtp schema show training_example", "cmtp models list"]


@pytest.mark.parametrize("line", RUNNABLE)
def test_the_examples_on_bundled_data_run(line, monkeypatch):
    assert line in EXAMPLES
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, shlex.split(line)[1:])
    assert result.exit_code == 0, result.output


def test_the_demo_build_file_plans(tmp_path, monkeypatch):
    assert "cmtp build examples/pipeline.yaml" in EXAMPLES
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["build", "examples/pipeline.yaml", "--dry-run", "--work", str(tmp_path)],
                                terminal_width=200)
    assert result.exit_code == 0 and "stage3" in result.output, result.output


def test_the_training_yaml_example_is_a_valid_config(monkeypatch):
    from cmtp.pipelines.stages import STAGES, prepare

    monkeypatch.chdir(ROOT)
    import yaml

    options = yaml.safe_load((ROOT / "examples" / "train_finetune.yaml").read_text(encoding="utf-8"))
    config, _ = prepare(STAGES["train"], options)
    assert config.stage == "finetune" and config.learning_rate == 5e-6 and config.temperature == 0.01


def test_the_eval_example_on_the_bundled_suite_runs(builtin_model_path, monkeypatch):
    assert "cmtp eval builtin:me5-small --suite dev" in EXAMPLES
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["eval", "builtin:me5-small", "--suite", "dev", "--max-per-task", "5"],
                                terminal_width=200)
    assert result.exit_code == 0 and "average" in result.output, result.output


def test_every_relative_link_of_the_docs_resolves():
    """Links and images in README.md and docs/ (``[text](path)``, ``![alt](path)``) point at files that exist,
    relative to the page; web links and in-page anchors are left alone."""
    broken = []
    for page in DOCS:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code blocks hold no links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target) or target.startswith(("#", "mailto:")):
                continue
            if not (page.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
    assert len(DOCS) >= 10  # the docs pages are found


def test_the_readme_is_a_page_a_newcomer_reads():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250
