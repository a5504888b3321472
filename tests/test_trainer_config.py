"""Training options from a YAML file and flags: flags override the file, unknown options and stages are
one-line errors, and the example config parses."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from cmtp.pipelines.app import app
from cmtp.pipelines.stages import STAGES, prepare
from cmtp.schemas import TRAINING_EXAMPLE, rows_to_table
from cmtp.schemas.errors import CmtpError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_the_example_config_parses():
    config = prepare(STAGES["train"], yaml.safe_load((ROOT / "examples" / "train_finetune.yaml").read_text()))[0]
    assert config.stage == "finetune" and [d.paths for d in config.data] == [["demo-out/mine/examples"]]
    assert config.train_group_size == 4 and config.gradcache_chunk == 16


@pytest.mark.parametrize("values, fragment", [
    ({"stage": "finetune", "data": [{"name": "a", "paths": ["x"]}], "batchsize": 4}, "unknown train option"),
    ({"stage": "pretrain", "data": [{"name": "a", "paths": ["x"]}]}, "option stage must be one of"),
    ({"stage": "retromae", "data": [{"name": "a", "paths": ["x"]}], "gradcache_chunk": 8}, "not to retromae"),
    ({"stage": "retromae", "data": [{"name": "a", "paths": ["x"]}], "encoder_mask_ratio": 1.5}, "mask_ratio"),
    ({"stage": "finetune"}, "no training data"),
    # the second dataset's files silently replaced the first's in the stream (both were keyed by name)
    ({"data": [{"name": "a", "paths": ["x"]}, {"name": "a", "paths": ["y"]}]}, "two datasets are named a"),
    ({"data": ["x"], "epochs": 1, "max_steps": 50}, "--epochs and --max-steps each set the run's length"),
    ({"stage": "finetune", "data": [{"name": "a", "paths": ["x"]}], "save_steps": -1}, r"save_steps must be in \[0, "),
])
def test_bad_options_are_named(values, fragment):
    with pytest.raises(CmtpError, match=fragment):
        prepare(STAGES["train"], values)[0]


def test_flags_override_the_yaml_file(tmp_path, tiny_model_path):
    rows = [{"example_id": f"e{i}", "query": f"问题{i}", "pos": [f"第{i}个答案在这里"], "neg": [], "instruction": None,
             "source": "s", "task": "pair", "pos_scores": [], "neg_scores": [], "neg_kinds": []} for i in range(16)]
    (tmp_path / "data").mkdir()
    pq.write_table(rows_to_table(rows, TRAINING_EXAMPLE), tmp_path / "data" / "part-0.parquet")
    config = {"stage": "contrastive", "model": str(tiny_model_path), "output_dir": str(tmp_path / "out"),
              "data": [{"name": "s", "paths": [str(tmp_path / "data")]}], "max_steps": 50, "batch_size": 4,
              "temperature": 0.05, "save_steps": 0, "query_max_len": 16, "passage_max_len": 32}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "train.yaml"), "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    saved = json.loads((tmp_path / "out" / "model" / "cmtp_training.json").read_text(encoding="utf-8"))
    assert saved["max_steps"] == 2 and saved["temperature"] == 0.05 and saved["batch_size"] == 4

    bad = runner.invoke(app, ["train", "--config", str(tmp_path / "missing.yaml")])
    assert isinstance(bad.exception, CmtpError) and "config file not found" in str(bad.exception)


def test_a_worse_trained_model_gets_a_loud_warning(capsys):
    from cmtp.pipelines.commands.train_cmd import print_eval_summary

    rows = [{"task": "sts", "metric": "cosine_spearman", "base": 0.8, "other": 0.7, "delta": -0.1},
            {"task": "average", "metric": "", "base": 0.8, "other": 0.7, "delta": -0.1}]
    print_eval_summary({"start": {"step": 0, "average": 0.8}, "final": {"step": 9, "average": 0.7}, "rows": rows,
                        "best_step": 0, "worse_than_start": True, "tasks_worse": ["sts"]})
    captured = capsys.readouterr()
    assert "80.00" in captured.out and "-10.00" in captured.out
    assert "WARNING: the trained model is WORSE" in captured.err and "worse on sts" in captured.err


def test_keep_best_needs_an_evaluation():
    with pytest.raises(CmtpError, match="keep_best needs an evaluation"):
        prepare(STAGES["train"], {"data": [{"name": "a", "paths": ["x"]}], "keep_best": True})[0]
