"""The two shard writers: ``WriteParquetShards`` (a Beam PTransform over spilled batches) and
``StreamingShardWriter`` (rows streamed in one process) name, fill and leave out shards by the same rule, and write
the same bytes for the same rows, however the rows were cut into batches."""

import hashlib
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from cmtp.schemas import PAIR, rows_to_table
from cmtp.transforms.common.parquet_shards import StreamingShardWriter, WriteParquetShards, merge_sorted, spill


def _rows(n: int) -> list[dict]:
    return [{"pair_id": f"p{i:04d}", "source": "s", "source_file": "f", "record_key": str(i), "title": f"标题{i}",
             "passage": f"正文 {i} " * 3, "meta": "{}"} for i in range(n)]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("part-*.parquet"))}


def _beam(rows: list[dict], folder: Path, num_shards: int, row_group_size: int, batch: int = 7) -> None:
    """The rows in batches of ``batch`` (in reverse order, so that the spills must be sorted and merged)."""
    work = folder.parent / f"{folder.name}-scratch"
    batches = [(i, rows[::-1][i:i + batch]) for i in range(0, len(rows), batch)]
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (p | beam.Create(batches, reshuffle=False)
             | beam.Map(lambda b: spill(rows_to_table(b[1], PAIR), PAIR, str(work / f"b{b[0]:04d}.arrow")))
             | WriteParquetShards(str(folder), PAIR, str(work / "pieces"), num_shards, row_group_size=row_group_size))


def _streamed(rows: list[dict], folder: Path, num_shards: int, row_group_size: int) -> list[str]:
    writer = StreamingShardWriter(str(folder), PAIR, lambda r: r["pair_id"], num_shards, row_group_size)
    for row in rows:
        writer.add(row)
    return writer.close()


def test_both_writers_write_the_same_shards(tmp_path):
    rows = _rows(50)  # 50 rows in 80 shards: most shards get none and are not written
    for shards, group in ((3, 7), (80, 4)):
        _beam(rows, tmp_path / f"beam{shards}", shards, group)
        written = _streamed(rows, tmp_path / f"streamed{shards}", shards, group)
        assert _digests(tmp_path / f"streamed{shards}") == _digests(tmp_path / f"beam{shards}") != {}
        assert sorted(Path(p).name for p in written) == sorted(_digests(tmp_path / f"beam{shards}"))
    assert pq.read_table(tmp_path / "streamed3").num_rows == 50
    assert pq.ParquetFile(next((tmp_path / "streamed3").glob("*.parquet"))).metadata.row_group(0).num_rows == 7


def test_an_empty_output_is_one_zero_row_file_for_both(tmp_path):
    _beam([], tmp_path / "beam", 4, 8)
    written = _streamed([], tmp_path / "streamed", 4, 8)
    assert [Path(p).name for p in written] == ["part-00000-of-00001.parquet"]
    assert _digests(tmp_path / "streamed") == _digests(tmp_path / "beam")
    assert pq.read_table(tmp_path / "streamed").schema.names == PAIR.names


def test_the_merge_takes_rows_in_key_order_and_ties_in_piece_order(tmp_path):
    from cmtp.transforms.common import scratch

    def piece(name, ids):
        rows = [{**_rows(1)[0], "pair_id": i, "record_key": f"{name}{n}"} for n, i in enumerate(ids)]
        return spill(rows_to_table(rows, PAIR), PAIR, str(tmp_path / f"{name}.arrow")).path

    paths = [piece("a", ["p1", "p3", "p3", "p9"]), piece("b", ["p0", "p3", "p8"]), piece("c", ["p2"])]
    merged = [row for part in merge_sorted(paths) for row in part.to_pylist()]
    assert [(r["pair_id"], r["record_key"]) for r in merged] == [
        ("p0", "b0"), ("p1", "a0"), ("p2", "c0"), ("p3", "a1"), ("p3", "a2"), ("p3", "b1"), ("p8", "b2"), ("p9", "a3")]
    assert scratch.read_table(paths[0]).num_rows == 4
