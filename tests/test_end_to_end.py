"""The whole pipeline through the ``cmtp`` command line on the bundled real samples, as a user chains it:
extract -> dedup -> score -> audit -> mine -> train stage 2 -> train stage 3, each stage reading the previous
one's output. Every manifest must reconcile and every record must be accounted for from stage to stage; the
final model must load in sentence-transformers with the instruction saved as its query prompt and carry a model
card; every stage folder is a Hugging Face dataset whose card's configs all load."""

import json
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from cmtp.pipelines.app import app
from cmtp.pipelines.audit.stats import ALL
from cmtp.schemas import Manifest

RAW = Path(__file__).parent / "data" / "raw"
INSTRUCTION = "为这个句子生成表示以用于检索相关文章："
runner = CliRunner()


def cmtp(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args[0], result.output, result.exception)
    return result.output


def rows(path: Path) -> int:
    return pq.read_table(path).num_rows if path.exists() else 0


def test_pipeline_from_raw_dumps_to_a_trained_model(tmp_path, tiny_model_path):
    work = tmp_path
    cmtp("extract", f"lcsts={RAW / 'lcsts' / 'clge_train_head30.tsv'}", f"csl={RAW / 'csl' / 'ts_dev_head20.tsv'}",
         f"news={RAW / 'news' / 'inews_head30.jsonl'}", "--out", work / "extract", "--workers", "1")
    cmtp("dedup", work / "extract", "--out", work / "dedup", "--workers", "1")
    cmtp("score", work / "dedup", "--out", work / "score", "--model", tiny_model_path, "--threshold", "0.2",
         "--workers", "1")
    report = cmtp("audit", work / "score", "--thresholds", "0.1:0.5:0.1", "--format", "json")
    cmtp("mine", work / "score", "--out", work / "mine", "--negatives", "3", "--range", "1-30", "--max-neg-ratio",
         "1.5", "--train-instruction", INSTRUCTION)
    common = ["--batch-size", "4", "--max-steps", "3", "--save-steps", "0", "--query-max-len", "32",
              "--passage-max-len", "64"]
    cmtp("train", "--stage", "contrastive", "--model", tiny_model_path, "--data", work / "score" / "kept", "--out",
         work / "stage2", *common)
    out = cmtp("train", "--stage", "finetune", "--model", work / "stage2" / "model", "--data",
               work / "mine" / "examples", "--out", work / "stage3", "--train-group-size", "3", *common)
    assert "trained 3 steps" in out

    # every stage reconciles, and each one's input is the previous one's output
    manifests = {s: Manifest.read(str(work / s)).check() for s in ["extract", "dedup", "score", "mine"]}
    assert manifests["extract"].count_out == rows(work / "extract" / "pairs") > 50
    assert manifests["dedup"].count_in == manifests["extract"].count_out
    assert manifests["score"].count_in == manifests["dedup"].count_out == rows(work / "dedup" / "pairs")
    kept, rejected = rows(work / "score" / "kept"), rows(work / "score" / "rejected")
    assert kept + rejected == manifests["score"].count_in and kept > 0
    assert manifests["mine"].count_in == kept and rows(work / "mine" / "examples") == manifests["mine"].count_out
    overall = json.loads(report)["sources"][ALL]  # the audit sees every scored pair, and replays the cut exactly
    assert overall["count"] == kept + rejected
    assert next(k["kept"] for k in overall["keep"] if abs(k["threshold"] - 0.2) < 1e-6) == kept

    # the final model: sentence-transformers loads it, with the mined instruction as its query prompt
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(work / "stage3" / "model"), device="cpu")
    assert model.prompts["query"] == INSTRUCTION
    assert model.encode(["长江是亚洲第一长河"], normalize_embeddings=True).shape[0] == 1
    assert not (work / "stage2" / "checkpoints").exists()  # --save-steps 0: the model only

    assert (work / "stage3" / "model" / "README.md").read_text(encoding="utf-8").startswith("---\nbase_model:")

    # every stage output is a dataset: each config its card lists loads with `datasets`, with the manifest's rows
    import yaml
    from datasets import load_dataset

    for stage, manifest in manifests.items():
        card = yaml.safe_load((work / stage / "README.md").read_text(encoding="utf-8").split("---\n")[1])
        names = [c["config_name"] for c in card["configs"]]
        assert names and names == [n for n, o in manifest.outputs.items() if o["rows"]], stage
        for name in names:
            loaded = load_dataset(str(work / stage), name, split="train", cache_dir=str(tmp_path / "hf-cache"))
            assert len(loaded) == manifest.outputs[name]["rows"], (stage, name)
