"""``cmtp audit --proxy``: seeded equal-sized variant samples, the significance rule, cached and resumed runs, and
bad options as one ``error:`` line. The proxy here is the tiny test model, trained 2 steps a run."""

import json

import numpy as np
import pytest

from cmtp.pipelines.audit.proxy import NO_FILTER, ProxyAudit, ProxyConfig, run_proxy_audit
from cmtp.pipelines.audit.proxy_stats import Arm, Summary, ablation_verdict, difference, pooled_sd, verdict
from cmtp.pipelines.audit.proxy_variants import Variant, holdout_table, sample_variants
from cmtp.pipelines.audit.stats import open_scored
from tests.test_cli import cli_error

RAW_LCSTS = __import__("pathlib").Path(__file__).parent / "data" / "raw" / "lcsts" / "clge_train_head30.tsv"


def _scored_dir(tmp_path, n=120):
    """n pairs with real Chinese titles and passages (LCSTS), scores spread over [0.1, 0.9], as cmtp score writes."""
    import pyarrow.parquet as pq

    from cmtp.schemas import SCORED_PAIR, rows_to_table

    lines = RAW_LCSTS.read_text(encoding="utf-8").splitlines()
    scores = np.random.default_rng(0).uniform(0.1, 0.9, n).astype(np.float32)
    rows = [{"pair_id": f"p{i}", "source": "lcsts", "source_file": "f", "record_key": str(i),
             "title": lines[i % len(lines)].split("\t")[0] + f" {i}",
             "passage": lines[i % len(lines)].split("\t")[1] + f" 第{i}条", "meta": "{}", "cluster_id": None,
             "cluster_size": None, "score": float(s), "scorer": "m", "scorer_hash": "h", "threshold": 0.0,
             "kept": True} for i, s in enumerate(scores)]
    directory = tmp_path / "score"
    (directory / "kept").mkdir(parents=True)
    pq.write_table(rows_to_table(rows, SCORED_PAIR), directory / "kept" / "part-00000-of-00001.parquet")
    return directory


# --- the significance rule ---------------------------------------------------------------------------------------

def test_difference_is_measurable_only_beyond_two_pooled_sds():
    a, b = Summary((10.0, 11.0, 12.0)), Summary((8.0, 9.0, 10.0))  # sd 1 each, delta 2 = 2 pooled sds
    assert pooled_sd(a, b) == pytest.approx(1.0)
    d = difference(a, b)
    assert d.delta == pytest.approx(2.0) and d.measurable
    close = difference(Summary((10.0, 11.0, 12.0)), Summary((9.2, 10.2, 11.2)))  # delta 0.8 < 2
    assert not close.measurable and "no measurable difference" in close.describe()
    # against the floor (one value): the spread is the variant's own seeds
    assert difference(Summary((5.0, 6.0, 7.0)), Summary((1.0,))).measurable
    assert not difference(Summary((5.0, 6.0, 7.0)), Summary((4.5,))).measurable
    # one seed each: no spread to judge by, nothing is measurable
    one_seed = difference(Summary((5.0,)), Summary((1.0,)))
    assert not one_seed.measurable and one_seed.describe() == "+4.00 (one seed: no spread to judge it by)"  # ± nan


def test_verdict_names_the_cut_and_the_control():
    good, base, control = Summary((12.0, 12.1, 11.9)), Summary((10.0, 10.1, 9.9)), Summary((10.0, 10.2, 9.8))
    no_filter = Arm("no filter", base, 5000)
    line = verdict([(Arm("keep 0.80", good, 4000), Arm("random", control, 4000))], no_filter, budget=1920)
    assert line.startswith("keep 0.80 beats no filter by +2.00") and "measurably better than its random control" in line
    same = verdict([(Arm("keep 0.80", base, 4000), Arm("random", control, 4000))], no_filter, budget=1920)
    assert same.startswith("no cut measurably better than no filter")
    same_as_control = verdict([(Arm("keep 0.80", good, 4000), Arm("random", good, 4000))], no_filter, budget=1920)
    assert "fewer pairs, not the selection, may explain" in same_as_control


def test_the_verdict_reads_the_whole_table():
    """On 2,000 pairs the audit printed only 'no cut measurably better than no filter (best: keep 0.60, -0.91 ±
    0.23)': the cut was measurably worse (4 sd), measurably better than its control, and the budget repeated its
    774 pairs five times where no filter's 1,286 were repeated three times."""
    cut = Arm("keep 0.60", Summary((49.87, 50.07, 49.67)), 774)
    control = Arm("random", Summary((49.37, 49.6, 49.14)), 774)
    no_filter = Arm("no filter", Summary((50.78, 51.0, 50.56)), 1286)
    line = verdict([(cut, control)], no_filter, budget=3840)
    assert "measurably worse than no filter: keep 0.60 -0.91" in line
    assert "keep 0.60 is measurably better than its random control of the same size (49.87" in line
    assert "repeats no filter's 1,286 pairs 3.0 times, keep 0.60's 774 pairs 5.0 times" in line
    assert "carries over" in line


def test_an_ablation_verdict_names_gains_and_losses_against_the_base():
    base = Arm("range 10-210 (the build's)", Summary((60.0, 60.2, 59.8)), 1000)
    better = Arm("range 3-60", Summary((62.0, 62.2, 61.8)), 1000)
    same = Arm("range 30-200", Summary((60.1, 60.3, 59.9)), 1000)
    assert ablation_verdict([base, better, same], base) == ("measurably better than range 10-210 (the build's): "
                                                           "range 3-60 +2.00 ± 0.20")
    assert ablation_verdict([base, same], base).startswith("no variant measurably different")


# --- variants -----------------------------------------------------------------------------------------------------

def test_variant_samples_are_seeded_equal_sized_and_leave_the_holdout_out(tmp_path):
    dataset = open_scored([str(_scored_dir(tmp_path))])
    held = set(holdout_table(dataset, 20).column("pair_id").to_pylist())
    assert len(held) == 20 and held == set(holdout_table(dataset, 20).column("pair_id").to_pylist())
    scores = dict(zip(*[dataset.to_table().column(c).to_pylist() for c in ["pair_id", "score"]], strict=True))
    kept = sum(1 for i, s in scores.items() if s >= np.float32(0.5) and i not in held)
    variants = [Variant(NO_FILTER, "all", 100), Variant("cut", "threshold", kept, threshold=0.5),
                Variant("control", "random", kept, threshold=0.5)]
    first = sample_variants(dataset, variants, 40, seed=0, held=held)
    again = sample_variants(dataset, variants, 40, seed=0, held=held)
    other = sample_variants(dataset, variants, 40, seed=1, held=held)
    for name, table in first.items():
        ids = table.column("pair_id").to_pylist()
        assert ids == again[name].column("pair_id").to_pylist()  # seeded: the same pairs, in the same order
        assert len(ids) == 40 == len(set(ids)) and not set(ids) & held  # equal-sized, no held-out pair
        assert set(ids) != set(other[name].column("pair_id").to_pylist())  # another seed draws others
    assert all(scores[i] >= np.float32(0.5) for i in first["cut"].column("pair_id").to_pylist())
    assert any(scores[i] < np.float32(0.5) for i in first["control"].column("pair_id").to_pylist())
    # a variant smaller than the budget gives what it has (reported as its pair count), never padded
    small = sample_variants(dataset, variants, 10_000, seed=0, held=held)
    assert small["cut"].num_rows == kept and small["control"].num_rows == kept and small[NO_FILTER].num_rows == 100


# --- runs: cached, resumed ------------------------------------------------------------------------------------------

@pytest.fixture
def proxy_setup(tmp_path, tiny_model_path):
    dataset = open_scored([str(_scored_dir(tmp_path))])
    config = ProxyConfig(model=str(tiny_model_path), keep_rates=[0.6], steps=2, batch_size=8, seeds=2, pairs=200,
                         holdout=20, suite=None, max_per_task=None, query_max_len=16, passage_max_len=32,
                         eval_max_len=32)
    return dataset, config, tmp_path / "work"


def _counting_train(monkeypatch, fail_at=None):
    calls = []
    original = ProxyAudit._train

    def train(self, data, out, seed, group=1):
        calls.append(seed)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt  # the user's Ctrl-C in the middle of a run
        return original(self, data, out, seed, group)

    monkeypatch.setattr(ProxyAudit, "_train", train)
    return calls


def test_runs_are_cached_and_a_new_threshold_trains_only_itself(proxy_setup, monkeypatch):
    dataset, config, work = proxy_setup
    calls = _counting_train(monkeypatch)
    report = run_proxy_audit(dataset, config, work, log=lambda _: None)
    assert len(calls) == 3 * 2  # no filter, the cut, its control; 2 seeds
    assert {r.variant for r in report.runs} == {v.name for v in report.variants}
    rows = {r["name"]: r for r in report.rows()}
    assert rows[NO_FILTER]["seeds"] == 2 and rows[NO_FILTER]["pairs"] == 100  # all outside the holdout
    json.dumps(report.to_dict())  # the JSON output is serialisable
    calls.clear()
    again = run_proxy_audit(dataset, config, work, log=lambda _: None)
    assert calls == [] and all(r.cached for r in again.runs) and again.floor.cached
    assert [r.dev_average for r in again.runs] == [r.dev_average for r in report.runs]
    config.keep_rates = [0.6, 0.3]
    run_proxy_audit(dataset, config, work, log=lambda _: None)
    assert len(calls) == 2 * 2  # the new cut and its control, per seed


def test_a_killed_audit_resumes_at_the_run_it_was_in(proxy_setup, monkeypatch):
    dataset, config, work = proxy_setup
    calls = _counting_train(monkeypatch, fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        run_proxy_audit(dataset, config, work, log=lambda _: None)
    assert not list((work / "runs").glob(".*"))  # the interrupted run left no half-written folder
    monkeypatch.undo()
    calls = _counting_train(monkeypatch)
    report = run_proxy_audit(dataset, config, work, log=lambda _: None)
    assert len(calls) == 3  # 3 of 6 runs had finished
    assert sum(r.cached for r in report.runs) == 3


def _mined_dir(tmp_path, n=120):
    """Training examples of the scored pairs (mine's output: example_id = pair_id), each with 3 negatives drawn from
    other passages."""
    import pyarrow.parquet as pq

    from cmtp.schemas import TRAINING_EXAMPLE, rows_to_table

    scored = pq.read_table(next((tmp_path / "score" / "kept").glob("*.parquet"))).to_pylist()
    rows = [{"example_id": r["pair_id"], "query": r["title"], "pos": [r["passage"]],
             "neg": [scored[(i + k) % len(scored)]["passage"] for k in (7, 13, 29)], "instruction": "为这个句子：",
             "source": "lcsts", "task": "retrieval", "pos_scores": [], "neg_scores": [], "neg_kinds": []}
            for i, r in enumerate(scored[:n])]
    (tmp_path / "mine" / "examples").mkdir(parents=True)
    pq.write_table(rows_to_table(rows, TRAINING_EXAMPLE),
                   tmp_path / "mine" / "examples" / "part-00000-of-00001.parquet")
    return tmp_path / "mine"


def test_the_proxy_trains_on_mined_examples_beside_their_pairs(proxy_setup, tmp_path, monkeypatch):
    """An examples input (mine's output) is two variants from the same queries: with the mined negatives (stage 3's
    loss, --proxy-train-group-size passages a query) and with in-batch negatives alone."""
    dataset, config, work = proxy_setup
    config.inputs = [f"mined={_mined_dir(tmp_path, n=80)}"]  # fewer queries than no filter: another sample
    config.keep_rates, config.seeds = [0.6], 1
    groups = []
    original = ProxyAudit._train

    def train(self, data, out, seed, group=1):
        groups.append(group)
        if group > 1:
            import pyarrow.parquet as pq

            rows = pq.read_table(data).to_pylist()
            assert rows[0]["neg"] and rows[0]["instruction"] is None  # its negatives; no instruction of its own
        return original(self, data, out, seed, group)

    monkeypatch.setattr(ProxyAudit, "_train", train)
    report = run_proxy_audit(dataset, config, work, log=lambda _: None)
    names = [v.name for v in report.variants]
    assert names[-2:] == ["mined", "mined (in-batch negatives only)"]
    assert sorted(groups) == [1, 1, 1, 1, config.train_group_size]  # no filter, cut, control, pairs, mined
    mined, pairs = (next(r for r in report.runs if r.variant == n) for n in names[-2:])
    assert mined.pairs == pairs.pairs  # the same sampled queries


def test_rewritten_text_under_the_same_ids_is_not_a_cached_run(proxy_setup, tmp_path, monkeypatch):
    """Runs were keyed by pair ids, which hash a record's place: a corpus re-extracted with other cleaning (every
    passage rewritten, the same ids) reused the old runs and their numbers."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    dataset, config, work = proxy_setup
    run_proxy_audit(dataset, config, work, log=lambda _: None)
    path = next((tmp_path / "score" / "kept").glob("*.parquet"))
    table = pq.read_table(path)
    rewritten = table.set_column(table.schema.get_field_index("passage"), "passage",
                                 pc.binary_join_element_wise(table.column("passage"), "（修订）", ""))
    pq.write_table(rewritten, path)
    calls = _counting_train(monkeypatch)
    report = run_proxy_audit(open_scored([str(tmp_path / "score")]), config, work, log=lambda _: None)
    assert len(calls) == 3 * 2 and not any(r.cached for r in report.runs) and not report.floor.cached


def test_a_second_audit_on_one_work_folder_is_refused(proxy_setup):
    """Two audits on one --proxy-work: the second deleted the first's training folder (a 94-line traceback)."""
    from cmtp.pipelines.locking import hold
    from cmtp.schemas.errors import CmtpError

    dataset, config, work = proxy_setup
    work.mkdir()
    with hold(work, own=True), pytest.raises(CmtpError, match="in use by another cmtp run"):
        run_proxy_audit(dataset, config, work, log=lambda _: None)


# --- options ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["--proxy-keep-rates", "1.5"], "keep_rates must be in (0, 1)"),
    (["--proxy-thresholds", "2"], "thresholds must be in [-1, 1]"),
    (["--proxy-steps", "0"], "option steps must be in [1, inf)"),
    (["--proxy-learning-rate", "-1e-4"], "option learning_rate must be in (0, inf)"),
    (["--proxy-input", "no-equals-sign"], "NAME=PATH"),
    (["--proxy-keep-rates", "abc"], "comma list"),
])
def test_a_bad_proxy_option_is_one_error_line(tmp_path, args, fragment):
    directory = _scored_dir(tmp_path, n=20)
    assert fragment in cli_error("audit", directory, "--proxy", *args)


def test_proxy_options_without_proxy_are_refused(tmp_path):
    directory = _scored_dir(tmp_path, n=20)
    assert "need --proxy" in cli_error("audit", directory, "--proxy-keep-rates", "0.8")
