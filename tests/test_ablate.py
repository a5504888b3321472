"""``cmtp build --ablate``: variants share the stages before the change (reused by fingerprint), re-run the changed
stage and what reads it under their own names, and one proxy audit compares their training data with the build's
own; a stage's input can be ablated (the build without dedup); mistakes are one error line."""

import re
from pathlib import Path

import pytest

from cmtp.pipelines.ablate import parse_ablation, run_ablations, training_data, variant
from cmtp.pipelines.build import load_build_file, plan_build
from cmtp.schemas import CmtpError
from tests.test_build import build, pipeline_file
from tests.test_cli import cli_error
from tests.test_proxy_audit import _counting_train


def _with_training(path: Path) -> Path:
    path.write_text(path.read_text(encoding="utf-8") + """  stage3:
    kind: train
    stage: finetune
    data: ["@mine/examples"]
    max_steps: 2
""", encoding="utf-8")
    return path


def test_a_variant_renames_the_changed_stage_and_what_reads_it(tmp_path, tiny_model_path):
    spec = load_build_file(str(_with_training(pipeline_file(tmp_path, tiny_model_path))))
    assert training_data(spec, None) == ("mine", "examples")
    stages, data = variant(spec, parse_ablation("mine.range=3-10")[0], "mine")
    assert [s.name for s in stages] == ["extract", "dedup", "score", "mine-range-3-10"] and data == "mine-range-3-10"
    assert stages[-1].options["range"] == "3-10" and stages[-1].options["input"] == "score"
    stages, data = variant(spec, parse_ablation("score.input=extract")[0], "mine")
    assert [s.name for s in stages] == ["extract", "dedup", "score-input-extract", "mine-input-extract"]
    assert stages[2].options["input"] == "extract" and stages[2].depends == ["extract"]
    assert stages[3].options["input"] == "score-input-extract" and stages[3].depends == ["score-input-extract"]


@pytest.mark.parametrize("text, fragment", [
    ("mine.range", "use STAGE.OPTION=V1,V2"),
    ("nosuch.x=1", "no stage 'nosuch'"),
    ("score.input=mine", "score's input mine is not a stage before score"),
    ("stage3.max_steps=1,2", "stage3 runs after mine"),
    ("no-such-name", "or the name of a variant under the build file's ablations"),
])
def test_a_bad_ablation_is_one_error(tmp_path, tiny_model_path, text, fragment):
    spec = load_build_file(str(_with_training(pipeline_file(tmp_path, tiny_model_path))))
    with pytest.raises(CmtpError, match=fragment):
        variant(spec, parse_ablation(text)[0], "mine")


def test_a_named_variant_changes_several_stages(tmp_path, tiny_model_path):
    path = _with_training(pipeline_file(tmp_path, tiny_model_path))
    path.write_text(path.read_text(encoding="utf-8") + """ablations:
  strict: {dedup: {threshold: 0.6}, mine: {range: 2-9}}
""", encoding="utf-8")
    spec = load_build_file(str(path))
    (chosen,) = parse_ablation("strict", spec.ablations)
    stages, data = variant(spec, chosen, "mine")
    assert [s.name for s in stages] == ["extract", "dedup-strict", "score-strict", "mine-strict"]
    assert data == "mine-strict" and stages[1].options["threshold"] == 0.6 and stages[3].options["range"] == "2-9"
    assert stages[2].options["input"] == "dedup-strict" and stages[3].options["input"] == "score-strict"


@pytest.mark.parametrize("ablations, fragment", [
    ("[a, b]", "ablations must map a variant's name to its changes"),
    ("{x: {nosuch: {a: 1}}}", "ablation 'x' changes nosuch, not a stage of the build"),
    ("{x: {dedup: 0.7}}", "ablation 'x' must map stages to the options it changes"),
    ("{'a b': {dedup: {threshold: 0.7}}}", "ablation name 'a b': use letters"),
])
def test_a_bad_ablations_mapping_is_one_error(tmp_path, tiny_model_path, ablations, fragment):
    path = _with_training(pipeline_file(tmp_path, tiny_model_path))
    path.write_text(path.read_text(encoding="utf-8") + f"ablations: {ablations}\n", encoding="utf-8")
    with pytest.raises(CmtpError, match=re.escape(fragment)):
        load_build_file(str(path))


def test_an_ablation_reuses_the_shared_stages_and_a_killed_one_resumes(tmp_path, tiny_model_path, monkeypatch):
    path = _with_training(pipeline_file(tmp_path, tiny_model_path))
    build(path, "--until", "mine")
    spec = load_build_file(str(path))
    proxy = {"model": str(tiny_model_path), "steps": 2, "batch_size": 8, "suite": None, "query_max_len": 16,
             "passage_max_len": 32, "eval_max_len": 32}

    def ablate(shown):
        return run_ablations(spec, [parse_ablation("mine.range=1-20,5-30")], None, 2, False, log=lambda _: None,
                             show_plan=lambda name, plans: shown.setdefault(name, {p.name: p.action for p in plans}),
                             proxy_options=proxy)

    first: dict = {}
    _counting_train(monkeypatch, fail_at=4)  # Ctrl-C in the fourth of six proxy runs
    with pytest.raises(KeyboardInterrupt):
        ablate(first)
    assert first["mine.range 1-20 (the build's)"] == {n: "reuse" for n in ["extract", "dedup", "score", "mine"]}
    assert first["mine.range 5-30"] == {"extract": "reuse", "dedup": "reuse", "score": "reuse",
                                        "mine-range-5-30": "run"}
    assert (tmp_path / "work" / "mine-range-5-30" / "examples").is_dir()
    monkeypatch.undo()
    calls, shown = _counting_train(monkeypatch), {}
    report = ablate(shown)
    assert shown["mine.range 5-30"]["mine-range-5-30"] == "reuse"  # the variant is not built again
    assert len(calls) == 3 and sum(r.cached for r in report.runs) == 3  # resumed at the run it was in
    names = [v.name for v in report.variants]
    assert names == ["mine.range 1-20 (the build's)", "mine.range 1-20 (the build's) (in-batch negatives only)",
                     "mine.range 5-30"]
    assert report.baseline == names[0] and len(report.runs) == 3 * 2
    assert report.verdict().startswith(("no variant measurably different", "measurably"))
    assert {p.name: p.action for p in plan_build(spec, until="mine")} == {n: "reuse" for n in
                                                                           ["extract", "dedup", "score", "mine"]}


def test_ablate_data_without_ablate_is_refused(tmp_path, tiny_model_path):
    path = _with_training(pipeline_file(tmp_path, tiny_model_path))
    assert "--ablate-data needs --ablate" in cli_error("build", path, "--ablate-data", "mine/examples")
