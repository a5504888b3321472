"""``cmtp build``: a second build reuses everything, a changed dedup threshold re-runs dedup and what follows only,
a build killed inside a stage resumes to files byte-identical to an uninterrupted build, a folder not written by
the build is refused without --overwrite, and the funnel adds up."""

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmtp.pipelines.app import app
from cmtp.pipelines.build import execute, funnel, load_build_file, plan_build
from cmtp.schemas import Manifest

RAW = Path(__file__).parent / "data" / "raw"


def pipeline_file(tmp_path: Path, model: Path, threshold: float = 0.8) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"""
work: {tmp_path / 'work'}
stages:
  extract:
    sources: ["lcsts={RAW / 'lcsts' / '*.tsv'}", "csl={RAW / 'csl' / '*.tsv'}"]
    workers: 1
  dedup: {{input: extract, threshold: {threshold}}}
  score: {{input: dedup, model: "{model}", threshold: 0.5}}
  mine: {{input: score, model: "{model}", negatives: 3, range: 1-20}}
""", encoding="utf-8")
    return path


def digests(work: Path) -> dict:
    return {str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(work.rglob("*.parquet")) if not any(part.startswith(".") for part in p.parts)}


def build(path: Path, *args):
    result = CliRunner().invoke(app, ["build", str(path), *args], terminal_width=200)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def actions(path: Path) -> dict:
    return {p.name: p.action for p in plan_build(load_build_file(str(path)))}


def test_rebuild_reuses_and_a_changed_threshold_reruns_from_dedup(tmp_path, tiny_model_path):
    path = pipeline_file(tmp_path, tiny_model_path)
    output = build(path)
    assert "funnel" in output and (tmp_path / "work" / "funnel.html").exists()
    first = digests(tmp_path / "work")
    assert any(k.startswith("mine/") for k in first)
    assert "nothing to run" in build(path)
    assert digests(tmp_path / "work") == first
    path = pipeline_file(tmp_path, tiny_model_path, threshold=0.7)
    assert actions(path) == {"extract": "reuse", "dedup": "run", "score": "run", "mine": "run"}
    reasons = {p.name: p.reason for p in plan_build(load_build_file(str(path)))}
    assert reasons["dedup"] == "its options or input files changed" and reasons["score"] == "an input stage changed"
    build(path)
    assert json.loads((tmp_path / "work" / "dedup" / "_build.json").read_text())["options"]["threshold"] == 0.7
    assert actions(path) == dict.fromkeys(["extract", "dedup", "score", "mine"], "reuse")
    spec = load_build_file(str(path))
    for row in funnel(spec, plan_build(spec)):
        assert row["in"] == row["out"] + sum(row["dropped"].values()), row


class Killed(BaseException):
    pass


def test_a_build_killed_inside_a_stage_resumes_to_identical_files(tmp_path, tiny_model_path, monkeypatch):
    reference = tmp_path / "ref"
    reference.mkdir()
    build(pipeline_file(reference, tiny_model_path))
    killed = tmp_path / "killed"
    killed.mkdir()
    path = pipeline_file(killed, tiny_model_path)
    import dataclasses

    from cmtp.pipelines import score

    real = score.STAGE

    def dies_in_score(inputs, out, config, beam_args, **options):  # the stage writes its files, then is killed
        real.run(inputs, out, config, beam_args, **options)
        (Path(out) / "kept" / "part-00000-of-00001.parquet").write_bytes(b"half a file")
        raise Killed

    monkeypatch.setattr(score, "STAGE", dataclasses.replace(real, run=dies_in_score))
    spec = load_build_file(str(path))
    with pytest.raises(Killed):
        execute(spec, plan_build(spec), log=lambda line: None)
    assert not (killed / "work" / "score").exists() and not (killed / "work" / ".score.tmp").exists()
    monkeypatch.setattr(score, "STAGE", real)
    assert actions(path) == {"extract": "reuse", "dedup": "reuse", "score": "run", "mine": "run"}
    build(path)
    assert digests(killed / "work") == digests(reference / "work")


def test_a_folder_not_written_by_the_build_needs_overwrite(tmp_path, tiny_model_path):
    from tests.test_cli import _cmtp

    path = pipeline_file(tmp_path, tiny_model_path)
    (tmp_path / "work" / "extract").mkdir(parents=True)
    (tmp_path / "work" / "extract" / "mine.txt").write_text("someone else's", encoding="utf-8")
    proc = _cmtp("build", str(path), "--until", "extract")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert "was not written by cmtp build" in lines[0] and "--overwrite" in lines[0]
    build(path, "--until", "extract", "--overwrite")
    assert not (tmp_path / "work" / "extract" / "mine.txt").exists()
    assert (tmp_path / "work" / "extract" / "_build.json").exists()


def test_the_funnel_covers_training_and_evaluation(tmp_path, tiny_model_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"""
work: {tmp_path / 'work'}
stages:
  extract: {{sources: ["lcsts={RAW / 'lcsts' / '*.tsv'}"], workers: 1}}
  stage2: {{kind: train, stage: contrastive, model: "{tiny_model_path}", data: ["@extract/pairs"], max_steps: 2,
            batch_size: 4, query_max_len: 32, passage_max_len: 64, save_steps: 0}}
  eval: {{kind: eval, model: "@stage2", compare: "{tiny_model_path}", suite: dev, max_per_task: 10}}
""", encoding="utf-8")
    output = build(path)
    spec = load_build_file(str(path))
    rows = {r["stage"]: r for r in funnel(spec, plan_build(spec))}
    assert set(rows) == {"extract", "stage2", "eval"}
    assert rows["stage2"]["out"] == 8 and rows["stage2"]["note"].startswith("2 steps, loss ")  # 2 steps x 4
    evaluated = Manifest.read(str(tmp_path / "work" / "eval")).check()
    assert rows["eval"]["out"] == evaluated.count_out > 0 and " vs " in rows["eval"]["note"]
    # the manifest rounds to 6 significant digits
    assert evaluated.extra["delta"] == pytest.approx(
        evaluated.extra["average"] - evaluated.extra["baseline_average"], abs=2e-6)
    assert "result" in output


def test_beam_args_may_be_one_string_and_work_a_number(tmp_path):
    """``beam_args: --runner DataflowRunner --project P`` is split as a shell would (it was read letter by letter);
    ``work: 5`` is the folder 5 (a TypeError before); any other shape is one error."""
    from cmtp.schemas import CmtpError

    path = tmp_path / "pipeline.yaml"
    path.write_text("work: 5\nbeam_args: --runner DataflowRunner --project 'my project'\nstages:\n  extract: {}\n",
                    encoding="utf-8")
    build = load_build_file(str(path))
    assert build.beam_args == ["--runner", "DataflowRunner", "--project", "my project"] and build.work == Path("5")
    path.write_text("beam_args: {runner: x}\nstages:\n  extract: {}\n", encoding="utf-8")
    with pytest.raises(CmtpError, match="beam_args must be a list of Beam flags"):
        load_build_file(str(path))
    path.write_text("work: [out]\nstages:\n  extract: {}\n", encoding="utf-8")  # was a folder named "['out']"
    with pytest.raises(CmtpError, match="work must be a folder path, not"):
        load_build_file(str(path))


@pytest.mark.parametrize("stages, message", [
    ("  extract: {}\n  e: {kind: eval, model: '@extract', suite: dev}\n", "@extract is not a training stage"),
    ("  extract: {}\n  dedup: {input: '@extract'}\n", "input: takes a stage name (extract), not @extract"),
    ("  extract: {}\n  x: {kind: extract, input: extract}\n", "'x' (extract) reads no input stage"),
    ("  extract: {}\n  t: {kind: train, data: ['@extract']}\n", "@extract holds pairs/ (title-passage, stage 2) "
     "and pretrain/ (texts, stage 1): name one, e.g. @extract/pretrain"),
    ("  extract: {}\n  t: {kind: train, data: ['x=@extract@2']}\n", "@extract holds pairs/"),
])
def test_references_a_stage_cannot_satisfy_are_refused_when_the_file_is_read(tmp_path, stages, message):
    """Found before any stage runs, not after the stages before them (an eval of @extract failed only once
    extract had run, looking for extract/model; an input: on extract was silently ignored)."""
    from cmtp.schemas import CmtpError

    path = tmp_path / "pipeline.yaml"
    path.write_text("stages:\n" + stages, encoding="utf-8")
    with pytest.raises(CmtpError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_build_file(str(path))


def test_stage_references_in_every_data_form_are_dependencies_and_resolve_to_paths(tmp_path):
    """NAME=@STAGE/sub@WEIGHT and {paths: [@STAGE/sub]} were left as literal paths (the first was not even a
    dependency, so a changed score stage did not re-run the training that read it)."""
    from cmtp.pipelines.build import _resolved_options

    path = tmp_path / "pipeline.yaml"
    path.write_text("work: w\nstages:\n  extract: {}\n  score: {input: extract}\n"
                    "  t1: {kind: train, data: ['kept=@score/kept@2', '@extract/pretrain']}\n"
                    "  t2: {kind: train, data: [{name: k, paths: ['@score/kept']}]}\n", encoding="utf-8")
    build = load_build_file(str(path))
    t1, t2 = build.stages[2:]
    assert t1.depends == ["score", "extract"] and t2.depends == ["score"]
    assert _resolved_options(t1, build.work)["data"] == [
        {"name": "kept", "paths": [str(build.work / "score" / "kept")], "weight": 2.0},
        {"name": "data1", "paths": [str(build.work / "extract" / "pretrain")], "weight": 1.0}]
    assert _resolved_options(t2, build.work)["data"][0]["paths"] == [str(build.work / "score" / "kept")]


@pytest.mark.parametrize("name", ["..", "/tmp/elsewhere", "a/b", ".hidden", "funnel.html", "x y"])
def test_a_stage_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, name):
    """A stage's folder is work/NAME: ".." was work's parent, which --overwrite would have deleted whole as a
    folder the build did not write; "/tmp/elsewhere" wrote outside work; "funnel.html" is the build's own file."""
    from cmtp.schemas import CmtpError

    path = tmp_path / "pipeline.yaml"
    path.write_text(f'stages:\n  "{name}": {{kind: extract}}\n', encoding="utf-8")
    with pytest.raises(CmtpError, match="use letters, digits, _ and -"):
        load_build_file(str(path))


def test_from_after_until_is_refused(tmp_path):
    """--from eval --until extract planned extract alone, as if --from were not given."""
    from cmtp.pipelines.build import plan_build
    from cmtp.schemas import CmtpError

    path = tmp_path / "pipeline.yaml"
    path.write_text("stages:\n  extract: {}\n  dedup: {input: extract}\n", encoding="utf-8")
    with pytest.raises(CmtpError, match="--from dedup comes after --until extract"):
        plan_build(load_build_file(str(path)), "dedup", "extract")


@pytest.mark.parametrize("marker, kept", [("another run's fingerprint", False), (None, True)])
def test_an_unfinished_stage_of_other_options_starts_afresh(tmp_path, marker, kept):
    """A training stage killed mid-run resumes from its checkpoints when its options are the same; after its
    options changed, it resumed another run's checkpoints (now refused by the trainer): the build, which knows the
    unfinished run's fingerprint, starts it afresh."""
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"work: {tmp_path / 'work'}\nstages:\n  extract: {{sources: ['csl={RAW / 'csl' / '*.tsv'}'], "
                    "workers: 1}\n", encoding="utf-8")
    spec = load_build_file(str(path))
    plans = plan_build(spec)
    leftover = tmp_path / "work" / "extract" / "checkpoints" / "step-2"
    leftover.mkdir(parents=True)
    (tmp_path / "work" / ".extract.running").write_text(marker or plans[0].fingerprint, encoding="utf-8")
    execute(spec, plans, log=lambda line: None)
    assert leftover.exists() == kept and (tmp_path / "work" / "extract" / "manifest.json").exists()
    assert not (tmp_path / "work" / ".extract.running").exists()
