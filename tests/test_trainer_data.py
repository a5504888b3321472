"""The training stream: exactly-once coverage across ranks x workers, exact resume, mixing by source."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cmtp.schemas import TRAINING_EXAMPLE, rows_to_table
from cmtp.trainer.batches import build_step
from cmtp.trainer.data.stream import DataSource, ParquetStream, StreamConfig, make_loader


def write_examples(directory, prefix, n, files=3, row_group=7):
    directory.mkdir(parents=True, exist_ok=True)
    rows = [{"example_id": f"{prefix}{i:04d}", "query": f"问题{i}", "pos": [f"答案{i}"], "neg": [f"错{i}a", f"错{i}b"],
             "instruction": None, "source": prefix, "task": "retrieval", "pos_scores": [0.9], "neg_scores": [0.5, 0.4],
             "neg_kinds": ["mined", "mined"]} for i in range(n)]
    for f in range(files):
        part = rows[f::files]
        pq.write_table(rows_to_table(part, TRAINING_EXAMPLE), directory / f"part-{f}.parquet", row_group_size=row_group)
    return {r["example_id"] for r in rows}


def read_all(config, ranks, workers):
    seen = []
    for rank in range(ranks):
        for batch in make_loader(config, rank, ranks, workers):
            assert len(batch["examples"]) <= config.batch_size
            seen += [e["example_id"] for e in batch["examples"]]
    return seen


def test_two_ranks_two_workers_see_every_row_exactly_once(tmp_path):
    ids = write_examples(tmp_path / "a", "a", 200)
    config = StreamConfig([DataSource("a", [str(tmp_path / "a")])], batch_size=8, epochs=1, seed=3)
    seen = read_all(config, ranks=2, workers=2)
    assert len(seen) == len(set(seen)) == 200 and set(seen) == ids
    # a second epoch reshuffles: same rows, another order
    two = StreamConfig([DataSource("a", [str(tmp_path / "a")])], batch_size=8, epochs=2, seed=3)
    seen2 = read_all(two, ranks=2, workers=2)
    assert sorted(seen2) == sorted(seen * 2)


def test_resume_continues_at_the_exact_row(tmp_path):
    write_examples(tmp_path / "a", "a", 120)
    config = StreamConfig([DataSource("a", [str(tmp_path / "a")])], batch_size=5, epochs=1, seed=1)
    stream = ParquetStream(config)
    full = [e["example_id"] for b in stream for e in b["examples"]]
    it = iter(ParquetStream(config))
    first, state = [], {}
    for _ in range(9):  # stop in the middle of a shuffle block
        b = next(it)
        first += [e["example_id"] for e in b["examples"]]
        state[b["reader"]] = b["position"]
    resumed = StreamConfig(config.sources, batch_size=5, epochs=1, seed=1, state=state)
    rest = [e["example_id"] for b in ParquetStream(resumed) for e in b["examples"]]
    assert first + rest == full


def write_varied_lengths(directory, n):
    """Examples whose passages run from 1 to 60 characters, in no order of length."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [{"example_id": f"v{i:04d}", "query": f"问题{i}", "pos": ["长" * (1 + (i * 37) % 60)], "neg": ["短"],
             "instruction": None, "source": "v", "task": "retrieval", "pos_scores": [], "neg_scores": [],
             "neg_kinds": ["mined"]} for i in range(n)]
    for f in range(2):
        pq.write_table(rows_to_table(rows[f::2], TRAINING_EXAMPLE), directory / f"part-{f}.parquet", row_group_size=25)


def padding(batches) -> int:
    """Characters of padding the passage tensors of these batches hold."""
    lengths = [[max(map(len, e["pos"] + e["neg"])) for e in b["examples"]] for b in batches]
    return sum(max(ls) * len(ls) - sum(ls) for ls in lengths)


def test_length_grouped_batches_pad_less_cover_every_row_once_and_resume_exactly(tmp_path):
    write_varied_lengths(tmp_path / "v", 400)
    source = [DataSource("v", [str(tmp_path / "v")])]
    plain = StreamConfig(source, batch_size=8, epochs=2, seed=3)
    grouped = StreamConfig(source, batch_size=8, epochs=2, seed=3, group_by_length=True)
    for ranks, workers in [(1, 0), (2, 2)]:  # every row once per epoch, whatever the layout
        seen = read_all(grouped, ranks, workers)
        assert sorted(seen) == sorted(read_all(plain, ranks, workers))
    one = [b for b in ParquetStream(grouped)]
    assert [b["examples"] for b in one] == [b["examples"] for b in ParquetStream(grouped)]  # deterministic
    assert padding(one) < padding(list(ParquetStream(plain))) / 4
    full = [e["example_id"] for b in one for e in b["examples"]]
    for stop in (1, 7, 16, 17, 40, len(one) - 1):  # inside a group, at its end, in the second epoch
        state = {one[stop - 1]["reader"]: one[stop - 1]["position"]}
        resumed = StreamConfig(source, batch_size=8, epochs=2, seed=3, group_by_length=True, state=state)
        rest = [e["example_id"] for b in ParquetStream(resumed) for e in b["examples"]]
        assert full[: stop * 8] + rest == full, stop


def test_mixing_by_weight_with_one_source_per_global_batch(tmp_path):
    write_examples(tmp_path / "a", "a", 300)
    write_examples(tmp_path / "b", "b", 300)
    sources = [DataSource("a", [str(tmp_path / "a")], 3.0), DataSource("b", [str(tmp_path / "b")], 1.0)]
    config = StreamConfig(sources, batch_size=4, seed=5, same_source_batches=True)
    per_rank = []
    for rank in range(2):
        it = iter(ParquetStream(config, rank, 2))
        per_rank.append([next(it) for _ in range(40)])
    for b0, b1 in zip(*per_rank, strict=True):  # the same source on both ranks at every step
        assert b0["source"] == b1["source"]
        assert {e["source"] for e in b0["examples"] + b1["examples"]} == {b0["source"]}
    share_a = sum(b["source"] == "a" for b in per_rank[0]) / 40
    assert 0.55 < share_a < 0.95


def test_pair_shards_become_examples(tmp_path):
    from cmtp.schemas import PAIR

    rows = [{"pair_id": f"p{i}", "source": "s", "source_file": "f", "record_key": str(i), "title": f"标题{i}",
             "passage": f"正文{i}", "meta": "{}"} for i in range(10)]
    pq.write_table(rows_to_table(rows, PAIR), tmp_path / "pairs.parquet")
    config = StreamConfig([DataSource("p", [str(tmp_path / "pairs.parquet")])], batch_size=10, epochs=1)
    (batch,) = list(ParquetStream(config))
    assert {e["query"] for e in batch["examples"]} == {f"标题{i}" for i in range(10)}
    assert all(len(e["pos"]) == 1 and e["neg"] == [] for e in batch["examples"])


def test_a_pair_with_a_null_id_is_skipped_and_counted(tmp_path):
    """A null pair_id was an AttributeError in the step builder (a null passage was already skipped and counted)."""
    from cmtp.schemas import PAIR

    rows = [{"pair_id": None if i == 3 else f"p{i}", "source": "s", "source_file": "f", "record_key": str(i),
             "title": f"标题{i}", "passage": f"正文{i}", "meta": "{}"} for i in range(10)]
    import pyarrow as pa

    loose = pa.schema([f.with_nullable(True) for f in PAIR])  # as a file written by another tool may be
    pq.write_table(pa.Table.from_pylist(rows, schema=loose), tmp_path / "pairs.parquet")
    config = StreamConfig([DataSource("p", [str(tmp_path / "pairs.parquet")])], batch_size=9, epochs=1)
    (batch,) = list(ParquetStream(config))
    assert len(batch["examples"]) == 9 and batch["malformed"] == 1 and "标题3" not in {e["query"] for e in
                                                                                       batch["examples"]}


def test_a_dataset_with_fewer_row_groups_than_ranks_is_read_in_slices(tmp_path):
    """Readers take whole row groups; with fewer than the ranks need (the last rank's first reader must own
    one), every group is cut into equal slices, and the ranks still see every row exactly once. Data too small
    even in slices is one error on every rank, before any collective call; with enough groups nothing changes."""
    from cmtp.schemas import CmtpError

    ids = write_examples(tmp_path / "one", "o", 20, files=1, row_group=20)
    config = StreamConfig([DataSource("o", [str(tmp_path / "one")])], batch_size=4, epochs=1, seed=0)
    for ranks, workers in [(2, 0), (2, 2), (3, 1)]:
        seen = read_all(config, ranks=ranks, workers=workers)
        assert len(seen) == len(set(seen)) == 20 and set(seen) == ids, (ranks, workers)
    assert len(make_loader(config, 1, 3, 2).dataset.units["o"]) == 5  # (3 - 1) x 2 + 1 readers: five slices
    write_examples(tmp_path / "tiny", "t", 2, files=1, row_group=2)
    tiny = StreamConfig([DataSource("t", [str(tmp_path / "tiny")])], batch_size=4, seed=0)
    for rank in range(3):
        with pytest.raises(CmtpError, match="2 row\\(s\\) for 3 processes.*process 2 would read nothing"):
            make_loader(tiny, rank, 3, 0)
    write_examples(tmp_path / "three", "h", 21, files=1, row_group=7)
    three = StreamConfig([DataSource("h", [str(tmp_path / "three")])], batch_size=4, seed=0)
    assert [u.parts for u in make_loader(three, 0, 2, 0).dataset.units["h"]] == [1, 1, 1]


def test_a_stage_folder_as_data_is_its_data_subfolder(tmp_path):
    """score's folder means kept/ (read whole it trained on the rejected pairs too), mine's examples/; an extract
    folder, with pairs/ and pretrain/, must name one; a plain folder is read whole."""
    from cmtp.schemas import CmtpError
    from cmtp.trainer.data.stream import training_files

    score = tmp_path / "score"
    for sub in ("kept", "rejected", "dead_letters"):
        write_examples(score / sub, sub, 4, files=1)
    (score / "manifest.json").write_text("{}")
    assert [Path(f).parent.name for f in training_files(str(score))] == ["kept"]
    assert len(training_files(str(score / "rejected"))) == 1  # a subfolder named: that one
    extract = tmp_path / "extract"
    for sub in ("pairs", "pretrain"):
        write_examples(extract / sub, sub, 4, files=1)
    (extract / "manifest.json").write_text("{}")
    with pytest.raises(CmtpError, match="holds pairs/ .* and pretrain/ .*: name one"):
        training_files(str(extract))
    (extract / "manifest.json").unlink()
    assert len(training_files(str(extract))) == 2  # not a stage's folder: every file under it


def test_build_step_groups_instructions_and_teacher_scores():
    ex = [{"example_id": "e1", "query": "长江", "pos": ["长江是河"], "neg": ["黄河", "珠江"], "instruction": "指令：",
           "pos_scores": [0.9], "neg_scores": [0.5, 0.4]},
          {"example_id": "e2", "query": "黄河", "pos": ["黄河是河"], "neg": [], "instruction": None,
           "pos_scores": [], "neg_scores": []}]
    step = build_step(ex, 3, "query: ", "passage: ", seed=0, step=0)
    assert step.queries == ["指令：长江", "query: 黄河"]
    assert len(step.passages) == 6
    assert step.passages[0] == "passage: 长江是河" and step.passages[3] == "passage: 黄河是河"
    assert step.passages[4:] == ["", ""] and step.filler == [False] * 4 + [True] * 2  # no negatives: padding
    assert step.teacher is None
    step = build_step(ex[:1], 3, "", "", seed=0, step=0)
    assert step.teacher.shape == (1, 3) and step.teacher[0, 0] == pytest.approx(0.9) and step.filler is None


def test_streams_from_an_fsspec_url_like_a_bucket(tmp_path):
    """gs:// and s3:// go through the same fsspec calls as this in-memory filesystem (globs included)."""
    import fsspec

    ids = write_examples(tmp_path / "local", "m", 40, files=2, row_group=6)
    fs = fsspec.filesystem("memory")
    for f in sorted((tmp_path / "local").iterdir()):
        fs.pipe(f"/bucket/train/{f.name}", f.read_bytes())
    config = StreamConfig([DataSource("m", ["memory://bucket/train/*.parquet"])], batch_size=8, epochs=1, seed=0)
    seen = [e["example_id"] for b in ParquetStream(config) for e in b["examples"]]
    assert sorted(seen) == sorted(ids)


def write_with_bad_rows(directory):
    """60 good rows and 17 unusable ones, spread over row groups of 7, one group holding bad rows only."""
    good = [{"example_id": f"g{i:03d}", "query": f"问题{i}", "pos": [f"答案{i}"], "neg": [f"错{i}"],
             "instruction": None, "source": "s", "task": "retrieval", "pos_scores": [0.9], "neg_scores": [0.2],
             "neg_kinds": ["mined"]} for i in range(60)]
    bad = []
    for i in range(17):
        row = dict(good[0], example_id=f"b{i:03d}")
        row.update([{"query": ""}, {"pos": []}, {"pos": [""]}, {"neg_scores": [0.1, 0.2]}][i % 4])
        bad.append(row)
    rows = bad[:7] + good[:30] + bad[7:] + good[30:]  # the first row group is all bad
    directory.mkdir(parents=True, exist_ok=True)
    # written without validation: the trainer also reads Parquet it did not write
    pq.write_table(rows_to_table(rows, TRAINING_EXAMPLE, validate=False), directory / "part-0.parquet",
                   row_group_size=7)
    return {r["example_id"] for r in good}


@pytest.mark.parametrize("grouped", [False, True])
def test_unusable_rows_are_skipped_and_counted_once(tmp_path, grouped):
    good = write_with_bad_rows(tmp_path / "a")
    config = StreamConfig([DataSource("a", [str(tmp_path / "a")])], batch_size=4, epochs=1, seed=2,
                          group_by_length=grouped)
    seen, malformed = [], 0
    for rank in range(2):
        for batch in make_loader(config, rank, 2, 2):
            seen += [e["example_id"] for e in batch["examples"]]
            malformed += batch["malformed"]
    assert sorted(seen) == sorted(good) and malformed == 17
    # stopping mid-stream and resuming neither loses nor recounts any
    it = iter(ParquetStream(config))
    first, state, counted = [], {}, 0
    for _ in range(6):
        b = next(it)
        first += [e["example_id"] for e in b["examples"]]
        state[b["reader"]] = b["position"]
        counted += b["malformed"]
    resumed = StreamConfig(config.sources, batch_size=4, epochs=1, seed=2, state=state, group_by_length=grouped)
    rest = list(ParquetStream(resumed))
    assert sorted(first + [e["example_id"] for b in rest for e in b["examples"]]) == sorted(good)
    assert counted + sum(b["malformed"] for b in rest) == 17


def test_a_file_without_training_columns_is_named(tmp_path):
    import pyarrow as pa

    from cmtp.schemas.errors import CmtpError

    pq.write_table(pa.table({"text": ["长江"]}), tmp_path / "other.parquet")
    with pytest.raises(CmtpError, match="other.parquet has neither"):
        list(ParquetStream(StreamConfig([DataSource("x", [str(tmp_path / "other.parquet")])], batch_size=2,
                                        epochs=1)))
