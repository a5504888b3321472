"""Options are declared once, on the config dataclasses (``schemas.ranges.option``), and the commands' options are
generated from them (``pipelines/commands/options.py``): each command declares none of its config's fields
itself, every field with help becomes exactly one option, and every default a --help states equals the field's
default (issue #22 found "temperature (default 0.02)" over a field of 0.01)."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

from cmtp.pipelines.audit.proxy import ProxyConfig
from cmtp.pipelines.commands import audit_cmd, dedup_cmd, eval_cmd, extract_cmd, mine_cmd, score_cmd, train_cmd
from cmtp.pipelines.evaluate import EvalRunOptions
from cmtp.trainer.config import STAGE_DEFAULTS, TrainConfig
from cmtp.trainer.evaluation.runner import EvalOptions
from cmtp.transforms.common.parquet_shards import ShardOptions
from cmtp.transforms.dedup.config import DedupConfig
from cmtp.transforms.extract.config import ExtractConfig
from cmtp.transforms.mine.config import MineConfig, MineRunOptions
from cmtp.transforms.score.config import ScoreConfig

COMMANDS = {
    "extract": (extract_cmd.extract, [ExtractConfig, ShardOptions]),
    "dedup": (dedup_cmd.dedup, [DedupConfig, ShardOptions]),
    "score": (score_cmd.score, [ScoreConfig, ShardOptions]),
    "mine": (mine_cmd.mine, [MineConfig, MineRunOptions]),
    "train": (train_cmd.train, [TrainConfig]),
    "eval": (eval_cmd.eval_model, [EvalRunOptions, EvalOptions]),
    "audit": (audit_cmd.audit, [ProxyConfig]),  # its --proxy-* options
}
DEFAULT = re.compile(r"\(default (-?[0-9][0-9,._]*)(?:[;)])")


def stated_defaults(command) -> list[tuple[str, str, float]]:
    """(parameter, help, number) for every option whose help says "(default NUMBER)"."""
    found = []
    for name, parameter in inspect.signature(command).parameters.items():
        text = getattr(parameter.default, "help", None) or ""
        match = DEFAULT.search(text)
        if match:
            found.append((name, text, float(match.group(1).replace(",", "").replace("_", ""))))
    return found


def field_default(configs, name: str):
    for config in configs:
        for field in dataclasses.fields(config):
            if field.name == name:
                if field.default is not dataclasses.MISSING:
                    return field.default
                return field.default_factory()  # type: ignore[misc]
    return None


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_default_in_help_is_the_config_default(command):
    function, configs = COMMANDS[command]
    stated = stated_defaults(function)
    assert stated, f"{command}: no option states a default (the pattern no longer matches the help texts)"
    wrong = []
    for name, text, number in stated:
        field = name
        default = field_default(configs, field)
        if default is None and TrainConfig in configs:  # set per training stage: the default stage's value
            default = STAGE_DEFAULTS["contrastive"].get(field)
        if default is None:
            continue  # an option of the command, not of a config (e.g. --workers of the runner)
        if isinstance(default, str) and f"default {default})" in text:  # a list written as text: "1,0.3,1"
            continue
        if not isinstance(default, int | float) or abs(float(default) - number) > 1e-12 * max(1.0, abs(number)):
            wrong.append(f"--{name.replace('_', '-')}: help says {number:g} ({text!r}), the config {default!r}")
    assert not wrong, "\n".join(wrong)


def test_a_drifted_help_default_is_caught():
    def command(temperature: float = type("Option", (), {"help": "InfoNCE temperature (default 0.02)"})()):
        pass

    (name, _text, number), = stated_defaults(command)
    assert STAGE_DEFAULTS["contrastive"][name] != number


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_generated_command_declares_each_config_option_once(command):
    """Commands built with ``config_options`` take their config's options from the dataclass alone: the
    command's own parameters are only the ones no config holds (input, output, runner options)."""
    function, configs = COMMANDS[command]
    own = set(inspect.signature(function.__wrapped__).parameters)
    declared = {f.name for config in configs for f in dataclasses.fields(config) if f.metadata.get("help")}
    generated = set(inspect.signature(function).parameters) - own
    assert not own & declared
    assert generated == declared


def test_an_old_flag_spelling_still_works_with_one_warning(capsys):
    from cmtp.pipelines.commands.options import warn_old_spellings

    warn_old_spellings([TrainConfig], ["train", "--group-size", "8", "--lr=1e-5", "--max-steps", "3"])
    lines = capsys.readouterr().err.splitlines()
    assert sorted(lines) == ["warning: --group-size is an old spelling of --train-group-size and goes in the next "
                             "release", "warning: --lr is an old spelling of --learning-rate and goes in the next "
                             "release"]


def test_an_old_option_name_in_a_config_file_still_works_with_one_warning(capsys):
    """mine's rows_per_group became row_group_size, the other stages' name: a config or build file with the old
    key keeps working for a release."""
    from cmtp.pipelines.stages import STAGES, prepare

    for _ in range(2):  # a build reads the options twice (validation, run): one warning
        _, extras = prepare(STAGES["mine"], {"rows_per_group": 64})
        assert extras["row_group_size"] == 64 and "rows_per_group" not in extras
    assert capsys.readouterr().err.strip() == ("warning: rows_per_group is an old name of row_group_size and goes in "
                                               "the next release")


def test_the_option_tables_are_the_generated_ones():
    """docs/options.md's tables come from the same fields as the commands: a field edited without regenerating them
    fails here (fix: python -m cmtp.pipelines.commands.options --write docs/options.md)."""
    from pathlib import Path

    from cmtp.pipelines.commands.options import OPTIONS_PAGE, TABLES_BEGIN, with_options

    text = (Path(__file__).resolve().parents[1] / OPTIONS_PAGE).read_text(encoding="utf-8")
    assert TABLES_BEGIN in text
    assert with_options(text) == text
    assert "| `--num-perm` | `128` | [2, inf) |" in text  # a field's flag, default and range reach the table
