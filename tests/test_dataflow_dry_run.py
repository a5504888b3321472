"""Dataflow translation, offline: with Beam's gcp extra installed (``pip install 'cmtp[gcp]'``), each Beam stage's
pipeline is translated into a Dataflow job request by the DataflowRunner's ``--dry_run`` (the job is built, not
submitted; no network). The job must be a batch job whose pipeline holds the stage's transforms and runs in the
given worker image. Skipped where the gcp extra is absent (the CI machine)."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("apitools", reason="needs apache-beam[gcp] (pip install 'cmtp[gcp]')")

from apache_beam.runners.dataflow import dataflow_runner  # noqa: E402

from cmtp.schemas import PAIR, rows_to_table  # noqa: E402

RAW = Path(__file__).parent / "data" / "raw"
IMAGE = "us-docker.pkg.dev/my-project/cmtp/worker:0.1.0"
ARGS = ["--runner", "DataflowRunner", "--project", "my-project", "--region", "us-central1", "--temp_location",
        "gs://my-bucket/tmp", "--sdk_container_image", IMAGE, "--dry_run", "True"]


class JobBuilt(BaseException):  # not an Exception: the drivers' error handling lets it through
    def __init__(self, job):
        super().__init__("job built")
        self.job = job


@pytest.fixture
def dataflow_job(monkeypatch):
    """Stop the driver as soon as the DataflowRunner has built (not submitted) the job."""
    real = dataflow_runner.DataflowRunner.run_pipeline

    def build_only(self, pipeline, options, *args, **kwargs):
        raise JobBuilt(real(self, pipeline, options, *args, **kwargs).job)

    monkeypatch.setattr(dataflow_runner.DataflowRunner, "run_pipeline", build_only)

    def run(call):
        with pytest.raises(JobBuilt) as built:
            call()
        job = built.value.job
        names = [t.unique_name for t in job.proto_pipeline.components.transforms.values()]
        images = [e.payload for e in job.proto_pipeline.components.environments.values()]
        assert job.proto.type == 1 and all(IMAGE.encode() in p for p in images), (job.proto.type, images)  # batch
        return names

    return run


def _pairs(tmp_path) -> str:
    rows = []
    for i, line in enumerate((RAW / "lcsts" / "clge_train_head30.tsv").read_text(encoding="utf-8").splitlines()):
        title, text = line.split("\t")
        rows.append({"pair_id": f"p{i:03d}", "source": "lcsts", "source_file": "f", "record_key": str(i),
                     "title": title, "passage": text, "meta": "{}"})
    (tmp_path / "in" / "pairs").mkdir(parents=True)
    pq.write_table(rows_to_table(rows, PAIR), tmp_path / "in" / "pairs" / "part-00000-of-00001.parquet")
    return str(tmp_path / "in")


def test_extract_dedup_score_and_mine_translate_to_dataflow_jobs(dataflow_job, tmp_path, tiny_model_path):
    from cmtp.pipelines.dedup import run_dedup
    from cmtp.pipelines.extract import run_extract
    from cmtp.pipelines.mine.run import run_mine
    from cmtp.pipelines.score import run_score
    from cmtp.transforms.extract.dofns import SourceSpec
    from cmtp.transforms.mine.config import MineConfig
    from cmtp.transforms.score.config import ScoreConfig

    pairs = _pairs(tmp_path)
    names = dataflow_job(lambda: run_extract([SourceSpec("lcsts", "lcsts", str(RAW / "lcsts/*.tsv"))],
                                             str(tmp_path / "e"), beam_args=ARGS))
    assert "Extract/CleanPair" in names and any(n.startswith("WritePairs") for n in names)
    names = dataflow_job(lambda: run_dedup(pairs, str(tmp_path / "d"), beam_args=ARGS))
    assert any("NearDedup/Components" in n for n in names)
    names = dataflow_job(lambda: run_score(pairs, str(tmp_path / "s"), ScoreConfig(model=str(tiny_model_path)),
                                           beam_args=ARGS))
    assert any(n.endswith("ScorePairs/RunInference") or "RunInference" in n for n in names)
    names = dataflow_job(lambda: run_mine(pairs, str(tmp_path / "m"), MineConfig(model=str(tiny_model_path)), ARGS))
    assert any("Embed/Embed" in n for n in names)
