"""The stage contract (pipelines/stages.py): one runner for every stage. A stage's options mapping becomes its
config the same way everywhere; output is committed only when the stage succeeded; an existing output needs
overwrite; the manifest must reconcile. Plus: every stage command takes --config, training included."""

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from apache_beam.io.localfilesystem import LocalFileSystem
from typer.testing import CliRunner

from cmtp.pipelines.app import app
from cmtp.pipelines.stages import STAGES, Stage, prepare, run_stage
from cmtp.schemas import TRAINING_EXAMPLE, CmtpError, Manifest, rows_to_table


@dataclass
class FakeConfig:
    rows: int = 3
    dropped: int = 0

    def __post_init__(self):
        if self.rows < 0:
            raise CmtpError("rows must be >= 0")


class Boom(Exception):
    pass


def fake_run(inputs, out, config, beam_args, *, fail=False, lie=False):
    """Writes ``rows/part.txt`` and a manifest (that does not reconcile with ``lie``), then fails if asked."""
    (Path(out) / "rows").mkdir(parents=True)
    (Path(out) / "rows" / "part.txt").write_text(str(config.rows))
    manifest = Manifest(stage="fake", config={"rows": config.rows}, outputs={"rows": {"path": f"{out}/rows"}},
                        count_in=config.rows + config.dropped + (1 if lie else 0), count_out=config.rows,
                        dropped={"too_short": config.dropped} if config.dropped else {})
    manifest.write(out)
    if fail:
        raise Boom("killed mid-stage")
    return manifest


FAKE = Stage("fake", lambda: FakeConfig, ("rows", "extra"), fake_run, runner_options=("fail", "lie"), inputs="none")


def test_a_successful_stage_is_committed_with_its_final_paths(tmp_path):
    out = tmp_path / "out"
    manifest = run_stage(FAKE, [], str(out), {"rows": 5, "dropped": 2})
    assert (out / "rows" / "part.txt").read_text() == "5" and not (tmp_path / ".out.tmp").exists()
    assert manifest.count_out == 5 and manifest.outputs["rows"]["path"] == f"{out}/rows"
    assert ".tmp" not in (out / "manifest.json").read_text()
    assert json.loads((out / "manifest.json").read_text())["outputs"]["rows"]["path"] == "rows"  # relative
    moved = tmp_path / "elsewhere"
    out.rename(moved)  # a folder moved as a whole still names its own outputs
    assert Manifest.read(str(moved)).outputs["rows"]["path"] == f"{moved}/rows"


def test_a_failed_stage_leaves_the_previous_output_and_no_temporary_folder(tmp_path):
    out = tmp_path / "out"
    run_stage(FAKE, [], str(out), {"rows": 5})
    with pytest.raises(Boom):
        run_stage(FAKE, [], str(out), {"rows": 9, "fail": True}, overwrite=True)
    assert (out / "rows" / "part.txt").read_text() == "5" and Manifest.read(str(out)).count_out == 5
    assert not (tmp_path / ".out.tmp").exists()


class FakeStore(LocalFileSystem):
    """An object store for the runner's remote case: Beam picks a file system by URL scheme, and
    ``fakestore://PATH`` is the local ``PATH`` (no bucket can be reached here)."""

    @classmethod
    def scheme(cls):
        return "fakestore"

    def exists(self, path):
        return super().exists(path.removeprefix("fakestore://"))

    def mkdirs(self, path):
        super().mkdirs(path.removeprefix("fakestore://"))

    def create(self, path, *args, **kwargs):
        return super().create(path.removeprefix("fakestore://"), *args, **kwargs)

    def delete(self, paths):
        super().delete([p.removeprefix("fakestore://") for p in paths])


def fake_remote_run(inputs, out, config, beam_args, *, fail=False, lie=False):
    """Writes ``rows/part.txt`` and an outcomes file through Beam's file systems, as the Beam stages do, then
    fails if asked."""
    from apache_beam.io.filesystems import FileSystems

    from cmtp.transforms.common.outcomes import OUTCOMES_FILE

    FileSystems.mkdirs(f"{out}/rows")
    for name in ("rows/part.txt", OUTCOMES_FILE):
        with FileSystems.create(f"{out}/{name}") as fh:
            fh.write(b"5")
    if fail:
        raise Boom("worker lost")
    return Manifest(stage="fake", config={}, count_in=4 if lie else 3, count_out=3)


def test_a_failed_stage_on_a_store_removes_what_it_wrote_in_place(tmp_path):
    """A remote output cannot be moved into place in one step: the stage writes there, and the runner removes its
    outputs and outcomes file when it fails; files that are not the stage's stay."""
    from dataclasses import replace

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(Boom):
        run_stage(replace(FAKE, run=fake_remote_run), [], f"fakestore://{tmp_path}/out", {"fail": True})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]
    assert not list(tmp_path.glob(".*tmp"))  # written in place, never through a tmp folder
    with pytest.raises(CmtpError):  # counts that do not reconcile: not left for the next stage either
        run_stage(replace(FAKE, run=fake_remote_run), [], f"fakestore://{tmp_path}/out", {"lie": True})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("kind, options", [("mine", {}), ("train", {"data": ["x"]})])
def test_local_only_stages_refuse_a_store_before_any_work(tmp_path, kind, options):
    """Mine builds its index and merges on local files, training saves and resumes locally: an object-store --out
    is one error, nothing written (train made a local folder named gs:)."""
    inputs = [str(tmp_path)] if kind == "mine" else []
    with pytest.raises(CmtpError, match=f"{kind} writes a local folder"):
        run_stage(STAGES[kind], inputs, f"fakestore://{tmp_path}/{kind}", options)
    assert not (tmp_path / kind).exists() and not Path("fakestore:").exists()


def test_existing_output_needs_overwrite_and_stale_outputs_go(tmp_path):
    out = tmp_path / "out"
    run_stage(FAKE, [], str(out), {})
    (out / "extra").mkdir()  # an output the next run does not write must not survive it
    (out / "notes.txt").write_text("mine")  # a file that is not the stage's is left alone
    with pytest.raises(CmtpError, match="already holds a stage output.*--overwrite"):
        run_stage(FAKE, [], str(out), {})
    run_stage(FAKE, [], str(out), {"rows": 1}, overwrite=True)
    assert not (out / "extra").exists() and (out / "notes.txt").read_text() == "mine"
    assert (out / "rows" / "part.txt").read_text() == "1"


def test_options_are_checked_and_manifests_must_reconcile(tmp_path):
    with pytest.raises(CmtpError, match="unknown fake option.*colour.*known: dropped, fail, lie, rows"):
        prepare(FAKE, {"colour": "red"})
    with pytest.raises(CmtpError, match="rows must be >= 0"):
        prepare(FAKE, {"rows": -1})
    config, extras = prepare(FAKE, {"rows": 2, "fail": False})
    assert config == FakeConfig(rows=2) and extras == {"fail": False}
    with pytest.raises(CmtpError, match="in=4.*out=3|does not reconcile|!="):
        run_stage(FAKE, [], str(tmp_path / "liar"), {"lie": True})
    assert not (tmp_path / "liar").exists() and not (tmp_path / ".liar.tmp").exists()


def test_every_stage_declares_its_config_and_outputs():
    assert set(STAGES) == {"extract", "dedup", "score", "mine", "train", "eval"}
    for stage in STAGES.values():
        assert stage.outputs and callable(stage.run)
        # defaults alone are valid, with what a stage cannot do without (its data, its sources)
        prepare(stage, {"train": {"data": ["some/path"]}, "extract": {"sources": ["lcsts=some/*.tsv"]}}.get(
            stage.kind, {}))
    with pytest.raises(CmtpError, match="give at least one source"):  # found when the options are read
        prepare(STAGES["extract"], {})


def test_runner_options_are_range_checked_before_the_stage_runs():
    """A runner option out of range is one error from ``prepare``, which a build calls on every stage first."""
    with pytest.raises(CmtpError, match="num_shards must be in \\[1, inf\\)"):
        prepare(STAGES["mine"], {"num_shards": 0})
    with pytest.raises(CmtpError, match="row_group_size must be in \\[1, inf\\)"):
        prepare(STAGES["dedup"], {"row_group_size": 0})
    with pytest.raises(CmtpError, match="search_partitions must be an integer"):
        prepare(STAGES["mine"], {"search_partitions": "two"})
    with pytest.raises(CmtpError, match="max_per_task must be in \\[1, inf\\)"):  # a numpy error mid-eval before
        prepare(STAGES["eval"], {"suite": "dev", "max_per_task": -1})
    _, extras = prepare(STAGES["mine"], {"workers": 2, "num_shards": 3})
    assert extras == {"workers": 2, "num_shards": 3}


def test_one_source_as_a_string_is_that_source(tmp_path):
    """``sources: lcsts=GLOB`` (a string, not a list) names one source; it was read letter by letter."""
    from cmtp.pipelines.extract import _source_files

    assert _source_files({"sources": "lcsts=a/*.tsv"}) == _source_files({"sources": ["lcsts=a/*.tsv"]}) == ["a/*.tsv"]
    # the same for a list that is a runner option (eval's tasks) and one that is a config field (train's eval)
    assert prepare(STAGES["eval"], {"model": "m", "tasks": "my-tasks"})[1]["tasks"] == ["my-tasks"]
    assert prepare(STAGES["train"], {"data": ["a"], "eval": "suite:dev"})[0].eval == ["suite:dev"]
    with pytest.raises(CmtpError, match="no files match /no/such/\\*.tsv"):
        run_stage(STAGES["extract"], [], str(tmp_path / "e"), {"sources": "lcsts=/no/such/*.tsv"})


def test_a_glob_in_the_current_folder_matches_and_a_folder_is_named(tmp_path, monkeypatch):
    """``csl=*.tsv`` matched nothing: Beam's local file system needs a folder part (apache/beam#19741); a folder
    given as a source failed inside the pipeline (IsADirectoryError)."""
    import shutil

    from cmtp.pipelines.outputs import match_files

    shutil.copy(Path(__file__).parent / "data" / "raw" / "csl" / "clge_csl_val_head20.tsv", tmp_path / "a.tsv")
    (tmp_path / "dumps.tsv").mkdir()
    monkeypatch.chdir(tmp_path)
    assert match_files("*.tsv") == ["./a.tsv"]  # the folder dumps.tsv is not a file the glob gives
    manifest = run_stage(STAGES["extract"], [], "e", {"sources": "csl=*.tsv", "workers": 1})
    assert manifest.count_in == 20 and manifest.count_out > 0
    with pytest.raises(CmtpError, match="dumps.tsv matches the folder dumps.tsv: give the files in it"):
        run_stage(STAGES["extract"], [], "f", {"sources": "csl=dumps.tsv"})


def test_mine_range_and_train_data_strings_are_read_the_same_from_yaml_and_flags():
    mine, _ = prepare(STAGES["mine"], {"range": "5-50"})
    assert (mine.range_start, mine.range_end) == (5, 50)
    train, _ = prepare(STAGES["train"], {"data": ["a/b", "qa=gs://x/y@0.5", {"name": "n", "paths": ["p"]}]})
    assert [(d.name, d.paths, d.weight) for d in train.data] == [("data0", ["a/b"], 1.0), ("qa", ["gs://x/y"], 0.5),
                                                                 ("n", ["p"], 1.0)]


def test_every_stage_command_reads_its_options_from_config(tmp_path, tiny_model_path):
    """extract, dedup, score and train from a --config file each (mine: test_mine); runner options (workers,
    shard sizes, sources) live in the same file as the config fields; a finished training run is refused."""
    raw = Path(__file__).parent / "data" / "raw"
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, (result.output, result.exception)

    def config_file(name, values):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
        return path

    run("extract", "--out", tmp_path / "extract", "--config", config_file("extract", {
        "sources": [f"lcsts={raw}/lcsts/*.tsv"], "title_min_chars": 6, "workers": 1, "row_group_size": 7}))
    m = Manifest.read(str(tmp_path / "extract"))
    assert m.config["title_min_chars"] == 6 and m.config["workers"] == 1 and m.config["shards"]["row_group_size"] == 7
    run("dedup", tmp_path / "extract", "--out", tmp_path / "dedup", "--config",
        config_file("dedup", {"threshold": 0.7, "workers": 1}))
    assert Manifest.read(str(tmp_path / "dedup")).config["threshold"] == 0.7
    run("score", tmp_path / "dedup", "--out", tmp_path / "score", "--config",
        config_file("score", {"model": str(tiny_model_path), "threshold": 0.5, "num_shards": 2}))
    m = Manifest.read(str(tmp_path / "score"))
    assert m.config["threshold"] == 0.5 and m.outputs["kept"]["files"] + m.outputs["rejected"]["files"] >= 2

    rows = [{"example_id": f"e{i}", "query": f"问题{i}", "pos": [f"第{i}个答案在这里"], "neg": [], "instruction": None,
             "source": "s", "task": "pair", "pos_scores": [], "neg_scores": [], "neg_kinds": []} for i in range(16)]
    (tmp_path / "data").mkdir()
    pq.write_table(rows_to_table(rows, TRAINING_EXAMPLE), tmp_path / "data" / "part-0.parquet")
    train = config_file("train", {"stage": "contrastive", "model": str(tiny_model_path), "max_steps": 2,
                                  "data": [str(tmp_path / "data")], "batch_size": 4, "save_steps": 0,
                                  "output_dir": str(tmp_path / "t")})
    run("train", "--config", train)
    m = Manifest.read(str(tmp_path / "t"))
    assert m.stage == "train" and m.count_out == 8 and m.extra["steps"] == 2 and m.check()
    refused = runner.invoke(app, ["train", "--config", str(train)])
    assert isinstance(refused.exception, CmtpError) and "--overwrite" in str(refused.exception)
    run("train", "--config", train, "--max-steps", "3", "--overwrite")
    assert json.loads((tmp_path / "t" / "manifest.json").read_text())["extra"]["steps"] == 3
