"""The Beam stages on a real multi-process engine: Beam's DaskRunner against a dask.distributed LocalCluster with
2 worker processes. extract, dedup and score give byte-identical Parquet to the local runner; the DaskRunner
limitations that broke them are pinned by minimal pipelines; a failing --runner is one error and leaves nothing."""

import hashlib
from pathlib import Path

import apache_beam as beam
import pytest

distributed = pytest.importorskip("distributed")

from cmtp.pipelines.dedup import run_dedup  # noqa: E402
from cmtp.pipelines.extract import run_extract  # noqa: E402
from cmtp.pipelines.score import run_score  # noqa: E402
from cmtp.transforms.common.multi_output import MultiOutput  # noqa: E402
from cmtp.transforms.extract.dofns import SourceSpec  # noqa: E402
from cmtp.transforms.score.config import ScoreConfig  # noqa: E402

RAW = Path(__file__).parent / "data" / "raw"
DASK = "apache_beam.runners.dask.dask_runner.DaskRunner"


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def dask_args(cluster):
    return ["--runner", DASK, "--dask_client_address", cluster.scheduler_address]


def digest(directory: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.parquet"))}


def test_extract_dedup_score_on_dask_equal_the_local_runner(cluster, tmp_path, tiny_model_path):
    specs = [SourceSpec("lcsts", "lcsts", str(RAW / "lcsts/*.tsv")), SourceSpec("csl", "csl", str(RAW / "csl/*.tsv")),
             SourceSpec("wudao", "wudao", str(RAW / "wudao/*.json"))]
    score = ScoreConfig(model=str(tiny_model_path), threshold=0.9, inference_batch=16)
    local, dask = tmp_path / "local", tmp_path / "dask"
    m = run_extract(specs, str(local / "extract"))
    run_dedup(str(local / "extract"), str(local / "dedup"))
    run_score(str(local / "dedup"), str(local / "score"), score)
    d = run_extract(specs, str(dask / "extract"), beam_args=dask_args(cluster))
    run_dedup(str(local / "extract"), str(dask / "dedup"), beam_args=dask_args(cluster))
    s = run_score(str(local / "dedup"), str(dask / "score"), score, beam_args=dask_args(cluster))
    assert d.count_in == m.count_in > 0 and s.count_in > 0
    for stage, subs in [("extract", ["pairs", "pretrain", "dead_letters"]), ("dedup", ["pairs", "dead_letters"]),
                        ("score", ["kept", "rejected", "dead_letters"])]:
        for sub in subs:
            assert digest(dask / stage / sub) == digest(local / stage / sub), (stage, sub)
            assert digest(local / stage / sub), (stage, sub)


def test_multi_output_keeps_tags_apart_on_dask(cluster, tmp_path):
    """``ParDo(...).with_outputs()`` on the DaskRunner delivers every element to every output (Beam 2.77);
    ``MultiOutput`` is the formulation the stages use instead. The result is written to a file: prints and
    appends happen in the worker processes."""
    import json

    class Split(beam.DoFn):
        def process(self, x):
            yield beam.pvalue.TaggedOutput("odd", x) if x % 2 else x

    out = tmp_path / "split.json"

    def write(pair):
        out.write_text(json.dumps(pair))

    from apache_beam.options.pipeline_options import PipelineOptions

    with beam.Pipeline(options=PipelineOptions(dask_args(cluster))) as p:
        parts = p | beam.Create(list(range(10))) | MultiOutput(Split(), "odd", main="even")
        evens = parts.even | "E" >> beam.combiners.ToList()
        odds = parts["odd"] | "O" >> beam.combiners.ToList()
        (evens, odds) | beam.Flatten() | beam.combiners.ToList() | beam.Map(write)
    lists = sorted(sorted(x) for x in json.loads(out.read_text()))
    assert lists == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]


def test_a_failing_runner_is_one_error_line_and_leaves_no_output(tmp_path):
    from tests.test_cli import _cmtp

    out = tmp_path / "out"
    proc = _cmtp("extract", f"lcsts={RAW / 'lcsts' / '*.tsv'}", "--out", str(out), "--", "--runner", "NoSuchRunner")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and lines[-1].startswith("error:"), proc.stderr
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


def test_mine_embedding_and_partitioned_search_on_dask_equal_one_process(cluster, tmp_path, tiny_model_path):
    """Mining's two Beam pipelines (embedding blocks, search partitions) on the Dask workers give the same
    training examples as embedding and searching in this process."""
    from cmtp.pipelines.mine.run import run_mine
    from cmtp.transforms.mine.config import MineConfig, MineRunOptions
    from tests.test_mine import _digest, _lcsts_pairs

    source = _lcsts_pairs(tmp_path, 60)
    base = dict(model=str(tiny_model_path), range_start=2, range_end=30, negatives=3, embed_shard_rows=16,
                search_batch=16)
    local = run_mine(source, str(tmp_path / "local"), MineConfig(**base))
    dask = run_mine(source, str(tmp_path / "dask"), MineConfig(**base), dask_args(cluster),
                    MineRunOptions(search_partitions=2))
    assert _digest(tmp_path / "dask" / "examples") == _digest(tmp_path / "local" / "examples") != {}
    assert dask.extra["guards_removed"] == local.extra["guards_removed"] and dask.count_out == 60
