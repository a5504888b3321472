"""``cmtp export``: FlagEmbedding's own training-data class reads the flagembedding export, and the
sentence-transformers export trains a step of ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss``
as it is. Rows a format cannot take are left out and counted."""

import json

import pyarrow.parquet as pq
import pytest

from cmtp.schemas import TRAINING_EXAMPLE, Manifest, rows_to_table
from tests.test_cli import cli_error

INSTRUCTION = "为这个句子生成表示以用于检索相关文章："


def _mine_output(folder, n=12, negatives=3):
    """A mine output of ``n`` examples with ``negatives`` negatives each; the last one fell short by one."""
    rows = [{"example_id": f"e{i:02d}", "query": f"长江第{i}问", "pos": [f"长江是亚洲第一长河，第{i}段。"],
             "neg": [f"黄河是第二长河，第{i}.{j}段。" for j in range(negatives - (i == n - 1))],
             "instruction": INSTRUCTION, "source": "s", "task": "retrieval", "pos_scores": [0.9],
             "pos_scores_": None} for i in range(n)]
    for r in rows:
        del r["pos_scores_"]
        r["neg_scores"] = [0.5] * len(r["neg"])
        r["neg_kinds"] = ["mined"] * len(r["neg"])
    (folder / "examples").mkdir(parents=True)
    pq.write_table(rows_to_table(rows, TRAINING_EXAMPLE), folder / "examples" / "part-00000-of-00001.parquet")
    Manifest(stage="mine", config={"negatives": negatives}).write(str(folder))
    return rows


def test_flagembeddings_training_dataset_reads_the_export(tmp_path):
    embedder = pytest.importorskip("FlagEmbedding.abc.finetune.embedder")  # a dev dependency
    AbsEmbedderDataArguments, AbsEmbedderTrainDataset = embedder.AbsEmbedderDataArguments, \
        embedder.AbsEmbedderTrainDataset

    rows = _mine_output(tmp_path / "mine")
    from cmtp.pipelines.export import export

    summary = export(str(tmp_path / "mine"), str(tmp_path / "train.jsonl"), "flagembedding")
    assert summary["written"] == len(rows) and summary["left_out"] == {}
    args = AbsEmbedderDataArguments(train_data=[str(tmp_path / "train.jsonl")], train_group_size=3,
                                    knowledge_distillation=True, query_instruction_for_retrieval="",
                                    query_instruction_format="{}{}", cache_path=str(tmp_path / "cache"))
    dataset = AbsEmbedderTrainDataset(args, tokenizer=None)
    query, passages, scores = dataset[0]
    assert len(dataset) == len(rows) and query == INSTRUCTION + rows[0]["query"]  # its prompt, FlagEmbedding's way
    assert passages[0] == rows[0]["pos"][0] and set(passages[1:]) <= set(rows[0]["neg"])
    assert scores[0] == pytest.approx(0.9) and len(scores) == 3
    first = json.loads((tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["prompt"] == INSTRUCTION and "type" not in first  # retrieval is FlagEmbedding's default


def test_the_sentence_transformers_export_trains_one_step_of_mnrl(tmp_path, tiny_model_path):
    from datasets import load_dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    rows = _mine_output(tmp_path / "mine")
    from cmtp.pipelines.export import export

    summary = export(str(tmp_path / "mine"), str(tmp_path / "train.parquet"), "sentence-transformers")
    assert summary["written"] == len(rows) - 1 and summary["left_out"] == {"fewer_negatives": 1}  # 3 columns
    dataset = load_dataset("parquet", data_files=str(tmp_path / "train.parquet"), split="train",
                           cache_dir=str(tmp_path / "cache"))
    assert dataset.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert dataset[0]["anchor"] == INSTRUCTION + rows[0]["query"]
    model = SentenceTransformer(str(tiny_model_path), device="cpu")
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "st"), per_device_train_batch_size=4,
                                                max_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                                                disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                         loss=MultipleNegativesRankingLoss(model))
    assert trainer.train().global_step == 1


def test_pairs_export_without_negatives_and_what_a_format_cannot_take(tmp_path):
    from cmtp.pipelines.export import export
    from cmtp.schemas import PAIR

    rows = [{"pair_id": f"p{i}", "source": "s", "source_file": "f", "record_key": str(i), "title": f"标题{i}",
             "passage": f"正文{i}", "meta": "{}"} for i in range(5)]
    (tmp_path / "dedup" / "pairs").mkdir(parents=True)
    pq.write_table(rows_to_table(rows, PAIR), tmp_path / "dedup" / "pairs" / "part-00000-of-00001.parquet")
    summary = export(str(tmp_path / "dedup"), str(tmp_path / "pairs.parquet"), "sentence-transformers")
    assert summary["written"] == 5 and pq.read_table(tmp_path / "pairs.parquet").column_names == ["anchor",
                                                                                                  "positive"]
    line = cli_error("export", tmp_path / "dedup", "--format", "flagembedding", "--out", tmp_path / "f.jsonl")
    assert "FlagEmbedding's fine-tuning needs negatives" in line and not (tmp_path / "f.jsonl").exists()
