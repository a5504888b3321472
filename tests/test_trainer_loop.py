"""The training loop on the tiny model: loss falls, save/load keeps embeddings, GradCache and activation
checkpointing match plain training, an interrupted run resumes to the same weights as an uninterrupted one,
and torchrun with 2 gloo processes trains."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from cmtp.pipelines.stages import STAGES, prepare
from cmtp.schemas import TRAINING_EXAMPLE, rows_to_table
from cmtp.trainer.loop import train
from tests.dist_worker import free_port
from tests.numerics import assert_float32_close, gradient_scale

RAW = Path(__file__).parent / "data" / "raw"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("examples")
    pairs = []
    for name in ["lcsts/clge_train_head30.tsv", "csl/clge_csl_val_head20.tsv"]:
        for line in (RAW / name).read_text(encoding="utf-8").splitlines():
            title, text = line.split("\t")[:2]
            pairs.append((title, text[:120]))
    rows = []
    for i, (title, text) in enumerate(pairs):
        negs = [pairs[(i + k) % len(pairs)][1] for k in (1, 2, 3)]
        rows.append({"example_id": f"e{i:03d}", "query": title, "pos": [text], "neg": negs, "instruction": None,
                     "source": "s", "task": "retrieval", "pos_scores": [0.9], "neg_scores": [0.3, 0.2, 0.1],
                     "neg_kinds": ["mined"] * 3})
    pq.write_table(rows_to_table(rows, TRAINING_EXAMPLE), d / "part-00000.parquet", row_group_size=10)
    return d


def config(model, data, out, **kw):
    values = dict(stage="finetune", model=str(model), data=[{"name": "s", "paths": [str(data)]}], output_dir=str(out),
                  max_steps=40, batch_size=8, learning_rate=2e-3, train_group_size=3, temperature=0.05,
                  save_steps=1000, query_max_len=32, passage_max_len=64, seed=1, query_prompt="", passage_prompt="")
    if "epochs" in kw:
        del values["max_steps"]  # one or the other sets the length
    values.update(kw)
    return prepare(STAGES["train"], values)[0]


def test_loss_falls_and_the_saved_model_loads_with_the_same_embeddings(tiny_model_path, examples_dir, tmp_path):
    losses = []
    run = config(tiny_model_path, examples_dir, tmp_path / "run")
    summary = train(run, on_step=lambda s, loss: losses.append(loss))
    assert np.mean(losses[-8:]) < 0.6 * np.mean(losses[:8]), losses
    from sentence_transformers import SentenceTransformer

    from cmtp.trainer.encoder import Encoder, load_encoder

    saved = SentenceTransformer(summary["model"], device="cpu")
    texts = ["长江是亚洲第一长河", "股票市场今天下跌"]
    encoder = Encoder(load_encoder(summary["model"])).eval()
    with torch.no_grad():
        direct = encoder(texts).numpy()
    np.testing.assert_allclose(saved.encode(texts, normalize_embeddings=True), direct, atol=1e-5)
    assert (Path(summary["model"]) / "cmtp_training.json").exists()
    assert list((tmp_path / "run" / "tensorboard").iterdir())


@pytest.fixture(scope="module")
def no_dropout_model(tmp_path_factory):
    """Without dropout: chunking or recomputation changes how dropout masks are drawn, not the mathematics
    the comparisons below check."""
    from tests.tiny_models import build_tiny_model

    corpus = [line for name in ["lcsts/clge_train_head30.tsv", "csl/clge_csl_val_head20.tsv"]
              for line in (RAW / name).read_text(encoding="utf-8").splitlines()]
    return build_tiny_model(tmp_path_factory.mktemp("nodrop"), corpus, dropout=0.0)


def test_gradcache_training_matches_plain_training(no_dropout_model, examples_dir, tmp_path):
    model = no_dropout_model
    a = train(config(model, examples_dir, tmp_path / "plain", max_steps=4))
    b = train(config(model, examples_dir, tmp_path / "cached", max_steps=4, gradcache_chunk=5))
    wa, wb = load_file(Path(a["model"]) / "model.safetensors"), load_file(Path(b["model"]) / "model.safetensors")
    # Adam divides by sqrt(v): float rounding in a rare token's tiny gradient moves its row by up to ~1e-5 after
    # 4 steps, while a wrong gradient moves weights by the order of lr * steps = 8e-3
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-4), key


def test_gradient_checkpointing_matches_and_frozen_embeddings_stay_fixed(no_dropout_model, examples_dir, tmp_path):
    model = no_dropout_model
    kw = dict(max_steps=3, freeze_embeddings=True)
    a = train(config(model, examples_dir, tmp_path / "plain", **kw))
    b = train(config(model, examples_dir, tmp_path / "ckpt", gradient_checkpointing=True, **kw))
    start = load_file(Path(model) / "model.safetensors")
    wa, wb = load_file(Path(a["model"]) / "model.safetensors"), load_file(Path(b["model"]) / "model.safetensors")
    table = "embeddings.word_embeddings.weight"
    assert torch.equal(wa[table], start[table]) and torch.equal(wb[table], start[table])
    moved = [k for k in wa if not torch.equal(wa[k], start[k])]
    assert any("encoder.layer.0." in k for k in moved) and any("encoder.layer.1." in k for k in moved)
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-4), key


class Killed(Exception):
    pass


def assert_kill_and_resume_is_exact(make_config, tmp_path, steps: int, save_steps: int, kill_at: int) -> None:
    """A run killed after step ``kill_at`` and resumed from its last checkpoint ends with the weights of an
    uninterrupted run. ``make_config(out, **kw)`` builds the run's TrainConfig."""
    whole = train(make_config(tmp_path / "whole", max_steps=steps, save_steps=save_steps, logging_steps=1))

    def kill(step, loss):
        if step == kill_at:
            raise Killed

    out = tmp_path / "interrupted"
    with pytest.raises(Killed):
        train(make_config(out, max_steps=steps, save_steps=save_steps, logging_steps=1), on_step=kill)
    last = kill_at // save_steps * save_steps
    assert (out / "checkpoints" / f"step-{last}" / "trainer_state.pt").exists()
    resumed = train(make_config(out, max_steps=steps, save_steps=save_steps, logging_steps=1))
    assert resumed["steps"] == steps
    # the summary (and so the manifest and the funnel) describes the whole run, not the part after the resume
    assert resumed["samples"] == whole["samples"] and resumed["malformed_rows"] == whole["malformed_rows"]
    assert (resumed["first_loss"], resumed["final_loss"]) == (whole["first_loss"], whole["final_loss"])
    w1 = load_file(Path(whole["model"]) / "model.safetensors")
    w2 = load_file(Path(resumed["model"]) / "model.safetensors")
    for key in w1:
        assert torch.equal(w1[key], w2[key]), key
    # the killed run's events after its checkpoint are hidden: each step's loss shows once, as uninterrupted
    assert _logged_steps(out) == _logged_steps(tmp_path / "whole")
    train(make_config(out, max_steps=steps, save_steps=save_steps, logging_steps=1, resume=False))  # a fresh start
    assert len(list((out / "tensorboard").iterdir())) == 1  # the earlier runs' event files are gone


def _logged_steps(out: Path) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return [e.step for e in events.Scalars("train/loss")]


def test_kill_and_resume_gives_the_same_weights(tiny_model_path, examples_dir, tmp_path):
    assert_kill_and_resume_is_exact(lambda out, **kw: config(tiny_model_path, examples_dir, out, **kw), tmp_path,
                                    steps=8, save_steps=3, kill_at=5)


def test_kill_and_resume_with_length_grouped_batches_gives_the_same_weights(tiny_model_path, examples_dir,
                                                                           tmp_path):
    """Killed inside a length group (16 batches), the resumed run rebuilds the group and skips what it served."""
    assert_kill_and_resume_is_exact(
        lambda out, **kw: config(tiny_model_path, examples_dir, out, group_by_length=True, batch_size=2, **kw),
        tmp_path, steps=8, save_steps=3, kill_at=5)


def test_torchrun_two_gloo_processes(tiny_model_path, examples_dir, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    port = free_port()
    cmd = [torchrun, "--nproc_per_node=2", f"--master_port={port}", "-m", "cmtp.pipelines", "train", "--stage",
           "finetune", "--model", str(tiny_model_path), "--data", str(examples_dir), "--out", str(out),
           "--max-steps", "3", "--batch-size", "4", "--train-group-size", "2", "--gradcache-chunk", "4",
           "--save-steps", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model" / "model.safetensors").exists() and (out / "checkpoints" / "step-2").exists()
    assert proc.stdout.count("trained 3 steps") == 1  # rank 0 speaks for the run, with the loss over ranks


def test_queries_are_cut_at_query_max_len_and_passages_at_the_model_length(tiny_model_path):
    from cmtp.trainer.encoder import Encoder, load_encoder

    encoder = Encoder(load_encoder(str(tiny_model_path), max_seq_length=10), query_max_len=6).eval()
    text = "长江是亚洲第一长河，全长六千三百公里"  # one token per character with the tiny model
    with torch.no_grad():
        as_query = encoder([text], "query")
        # the same tokens through the tiny model (two layers over at most 10 positions, 32-wide): rounding only
        terms = 2 * (16 + 10 + 10 + 32 + 64 + 32 + 32) + 10 + 32
        assert_float32_close(as_query, encoder([text[:4]], "passage"), terms)  # [CLS] 4 chars [SEP]
        assert_float32_close(encoder([text], "passage"), encoder([text[:8]], "passage"), terms)
        assert not torch.allclose(as_query, encoder([text], "passage"), atol=1e-3)


def test_resuming_with_another_reader_layout_is_refused(tiny_model_path, examples_dir, tmp_path):
    from cmtp.schemas.errors import CmtpError

    train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=2, save_steps=2))
    with pytest.raises(CmtpError, match="data readers"):
        train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=4, workers=2))
    resumed = train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=4))
    assert resumed["steps"] == 4


def test_resuming_with_options_that_change_the_run_is_refused(tiny_model_path, examples_dir, tmp_path):
    """A checkpoint of batch 8 resumed at batch 4 continued its stream positions on other batches, and a new
    learning rate was replaced by the optimiser state's, silently; a longer run that saves more often is the
    same run."""
    from cmtp.schemas.errors import CmtpError

    train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=2, save_steps=2))
    with pytest.raises(CmtpError, match="step-2 was written with --batch-size 8, this run has 4: resume with the same"):
        train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=4, batch_size=4))
    with pytest.raises(CmtpError, match="written with --learning-rate 0.002, this run has 0.001"):
        train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=4, learning_rate=1e-3))
    assert train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=4, save_steps=1))["steps"] == 4


def test_resuming_on_changed_data_is_refused(tiny_model_path, examples_dir, tmp_path):
    """The checkpoint's stream positions point into the files it trained on: new text, or fewer rows, at the same
    --data path resumed without a word."""
    import shutil

    from cmtp.schemas.errors import CmtpError

    data = tmp_path / "data"
    shutil.copytree(examples_dir, data)
    train(config(tiny_model_path, data, tmp_path / "run", max_steps=2, save_steps=2))
    path = next(data.glob("*.parquet"))
    rows = pq.read_table(path).to_pylist()
    pq.write_table(rows_to_table([{**r, "query": r["query"] + "（改）"} for r in rows], TRAINING_EXAMPLE), path,
                   row_group_size=10)
    with pytest.raises(CmtpError, match="the training data s changed since .*step-2 was written"):
        train(config(tiny_model_path, data, tmp_path / "run", max_steps=4))
    assert train(config(tiny_model_path, data, tmp_path / "run", max_steps=4, resume=False))["steps"] == 4


def test_distillation_without_teacher_scores_says_so_once(tiny_model_path, examples_dir, tmp_path, capsys):
    """--distill-weight on rows without pos_scores / neg_scores (score's pairs) trained without distillation,
    silently."""
    rows = pq.read_table(next(examples_dir.glob("*.parquet"))).to_pylist()
    data = tmp_path / "no-scores"
    data.mkdir()
    pq.write_table(rows_to_table([{**r, "pos_scores": [], "neg_scores": []} for r in rows], TRAINING_EXAMPLE),
                   data / "part-00000.parquet")
    train(config(tiny_model_path, data, tmp_path / "run", max_steps=2, distill_weight=1.0))
    assert capsys.readouterr().err.count("--distill-weight is set, but this batch lacks teacher scores") == 1
    train(config(tiny_model_path, examples_dir, tmp_path / "run2", max_steps=2, distill_weight=1.0))
    assert "lacks teacher scores" not in capsys.readouterr().err


def test_a_damaged_checkpoint_is_one_error_saying_what_to_do(tiny_model_path, examples_dir, tmp_path):
    from cmtp.schemas.errors import CmtpError

    train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=2, save_steps=1))
    state = tmp_path / "run" / "checkpoints" / "step-2" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # a copy cut short
    with pytest.raises(CmtpError, match="step-2 cannot be read .*delete it to resume from the one before"):
        train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=3, save_steps=1))
    __import__("shutil").rmtree(state.parent)
    assert train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=3, save_steps=1))["steps"] == 3


class _RunsCode:
    """A pickled object whose loading would run code (it writes a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (__import__("pathlib").Path(self.marker).write_text, ("ran",))


def test_a_checkpoint_never_runs_code_from_its_file_and_old_ones_are_rotated(tiny_model_path, examples_dir,
                                                                              tmp_path):
    """Resume loaded trainer_state.pt with a full unpickler: a checkpoint folder copied from elsewhere ran code.
    It loads with weights_only now (tensors and plain values); the RNG state is stored as plain values. Only the
    newest --save-total-limit checkpoints are kept."""
    from cmtp.schemas.errors import CmtpError

    train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=4, save_steps=1))
    steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert steps == ["step-3", "step-4"]  # the default keeps two
    state = tmp_path / "run" / "checkpoints" / "step-4" / "trainer_state.pt"
    saved = torch.load(state, weights_only=True)  # the state itself is plain
    marker = tmp_path / "ran.txt"
    torch.save({**saved, "rng": _RunsCode(marker)}, state)
    with pytest.raises(CmtpError, match="step-4 cannot be read"):
        train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=5, save_steps=1))
    assert not marker.exists()
    train(config(tiny_model_path, examples_dir, tmp_path / "all", max_steps=3, save_steps=1, save_total_limit=0))
    assert len(list((tmp_path / "all" / "checkpoints").iterdir())) == 3


def test_unusable_rows_are_reported_and_data_without_any_is_an_error(tiny_model_path, tmp_path):
    from cmtp.schemas.errors import CmtpError
    from tests.test_trainer_data import write_with_bad_rows

    write_with_bad_rows(tmp_path / "mixed")
    summary = train(config(tiny_model_path, tmp_path / "mixed", tmp_path / "run", max_steps=12, batch_size=10,
                           save_steps=0))
    assert summary["malformed_rows"] == 17  # 12 x 10 rows: two passes over the file, its bad rows counted once
    bad = {"example_id": "b", "query": "", "pos": ["答案"], "neg": [], "instruction": None, "source": "s",
           "task": "pair", "pos_scores": [], "neg_scores": [], "neg_kinds": []}
    (tmp_path / "bad").mkdir()
    pq.write_table(rows_to_table([bad] * 5, TRAINING_EXAMPLE, validate=False), tmp_path / "bad" / "p.parquet")
    with pytest.raises(CmtpError, match="ran out: no usable rows"):
        train(config(tiny_model_path, tmp_path / "bad", tmp_path / "run-bad", max_steps=2))


def test_the_saved_model_keeps_the_base_models_length_limit(tiny_model_path, examples_dir, tmp_path):
    import json

    from sentence_transformers import SentenceTransformer

    summary = train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=2, passage_max_len=16,
                           save_steps=1))
    for path in [Path(summary["model"]), tmp_path / "run" / "checkpoints" / "step-1" / "model"]:
        assert SentenceTransformer(str(path), device="cpu").max_seq_length == 128  # the tiny model's own
        assert json.loads((path / "tokenizer_config.json").read_text())["model_max_length"] == 128
    assert json.loads((Path(summary["model"]) / "cmtp_training.json").read_text())["passage_max_len"] == 16


def test_epochs_are_turned_into_steps_from_the_parquet_row_counts(tiny_model_path, examples_dir, tmp_path):
    from cmtp.trainer.loop import planned_steps

    rows = pq.read_metadata(next(examples_dir.glob("*.parquet"))).num_rows  # 50
    run = config(tiny_model_path, examples_dir, tmp_path / "run", epochs=2, batch_size=8, save_steps=0)
    assert planned_steps(run, world=1) == -(-2 * rows // 8)
    assert planned_steps(run, world=2) == -(-2 * rows // 16)
    assert train(config(tiny_model_path, examples_dir, tmp_path / "run", epochs=0.5, batch_size=8,
                        save_steps=0))["steps"] == -(-rows // 16)


def test_the_summary_compares_smoothed_losses_not_single_batches():
    from cmtp.trainer.loop import smoothed_losses

    first, last, n = smoothed_losses([0.43, 0.001, 0.40, 0.42])
    assert n == 1 and (first, last) == (0.43, 0.42)
    curve = [1.0] * 10 + [0.5] * 20 + [0.2, 0.0] * 5
    first, last, n = smoothed_losses(curve)
    assert n == 10 and first == 1.0 and abs(last - 0.1) < 1e-9
    assert smoothed_losses([]) == (None, None, 0)


@pytest.mark.parametrize("chunk", [0, 4])
def test_an_enabled_fp16_grad_scaler_gives_the_unscaled_step_with_and_without_gradcache(no_dropout_model,
                                                                                        examples_dir, chunk):
    """The loss-scaling code path of --precision fp16, run on CPU with a CPU GradScaler (autocast itself is
    CUDA-only): the step taken must equal the plain fp32 step, cached or not (the cached branch used to skip
    scaling, so ``unscale_`` failed at step 1)."""
    from cmtp.trainer.batches import build_step
    from cmtp.trainer.encoder import Encoder, load_encoder
    from cmtp.trainer.losses import info_nce
    from cmtp.trainer.steps import Optimisation, train_step

    rows = pq.read_table(next(examples_dir.glob("*.parquet"))).to_pylist()[:6]
    batch = build_step(rows, 2, "", "", 0, 0)
    run = config(no_dropout_model, examples_dir, "unused", gradcache_chunk=chunk, train_group_size=2)

    def loss_fn(q, p):
        return info_nce(q, p, 0.05, 2, False)

    weights = []
    for scaler in [None, torch.amp.GradScaler("cpu", init_scale=2.0**12)]:
        encoder = Encoder(load_encoder(str(no_dropout_model))).train()
        params = [p for p in encoder.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=0.5)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        train_step(encoder, batch, loss_fn, config=run, device=torch.device("cpu"),
                   optimisation=Optimisation(params, optimizer, scheduler, scaler))
        weights.append([p.detach().clone() for p in params])
        if scaler is not None:
            assert scaler.get_scale() == 2.0**12  # no inf/nan found: the step was taken, not skipped
    # scaling by a power of two is exact; what remains is the rounding of the tiny model's gradient reductions
    scale = gradient_scale(weights[0])  # zero-initialised biases move by rounding of their terms' size alone
    for a, b in zip(*weights, strict=True):
        assert_float32_close(b, a, 2 * (16 + 32 + 32 + 32 + 64 + 64) + 64, what="weights", scale=scale)


@pytest.mark.parametrize("chunk", [0, 4])
def test_a_step_on_pairs_padded_to_a_group_equals_the_in_batch_step(no_dropout_model, examples_dir, chunk):
    """Rows without hard negatives in a group of 3: the padding is neither embedded nor a candidate, so the step
    (plain or gradient-cached) equals the in-batch step with groups of one."""
    from cmtp.trainer.batches import build_step
    from cmtp.trainer.encoder import Encoder, load_encoder
    from cmtp.trainer.losses import info_nce
    from cmtp.trainer.steps import Optimisation, train_step

    rows = [dict(r, neg=[], neg_scores=[]) for r in pq.read_table(next(examples_dir.glob("*.parquet"))).to_pylist()[:6]]
    run = config(no_dropout_model, examples_dir, "unused", gradcache_chunk=chunk)
    weights, calls = [], []
    for group in (3, 1):
        batch = build_step(rows, group, "", "", 0, 0)
        filler = torch.tensor(batch.filler) if batch.filler else None
        encoder = Encoder(load_encoder(str(no_dropout_model))).train()
        params = [p for p in encoder.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=0.5)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        forward = encoder.forward
        encoder.forward = lambda texts, kind, forward=forward: calls.append(len(texts)) or forward(texts, kind)
        train_step(encoder, batch, lambda q, p, g=group, f=filler: info_nce(q, p, 0.05, g, False, filler=f),
                   config=run, device=torch.device("cpu"), optimisation=Optimisation(params, optimizer, scheduler))
        weights.append([p.detach().clone() for p in params])
    assert sum(calls) == 2 * (6 + 6) * (2 if chunk else 1)  # 6 queries and 6 passages a step: no padding embedded
    scale = gradient_scale(weights[1])
    for a, b in zip(*weights, strict=True):
        assert_float32_close(a, b, 2 * (16 + 32 + 32 + 32 + 64 + 64) + 64, what="weights", scale=scale)


@pytest.fixture(scope="module")
def sts_task(tmp_path_factory):
    d = tmp_path_factory.mktemp("sts")
    lines = (RAW / "lcsts" / "clge_train_head30.tsv").read_text(encoding="utf-8").splitlines()
    rows = [(line.split("\t")[0], line.split("\t")[1][:60], str(i % 6)) for i, line in enumerate(lines)]
    (d / "pairs.tsv").write_text("\n".join("\t".join(r) for r in rows), encoding="utf-8")
    (d / "task.yaml").write_text("name: sts-small\ntype: sts\npath: pairs.tsv\n", encoding="utf-8")
    return d


def test_training_evaluates_start_steps_and_end_and_keeps_the_best(tiny_model_path, examples_dir, sts_task, tmp_path):
    import json

    out = tmp_path / "run"
    summary = train(config(tiny_model_path, examples_dir, out, max_steps=6, eval=[str(sts_task)], eval_steps=2,
                           eval_holdout=0.2, keep_best=True, save_steps=0))
    e = summary["eval"]
    history = json.loads((out / "eval.json").read_text(encoding="utf-8"))["history"]
    assert [h["step"] for h in history] == [0, 2, 4, 6]
    assert set(history[0]["scores"]) == {"sts-small", "holdout"}
    assert e["start"]["step"] == 0 and e["final"]["step"] == 6
    assert e["rows"][-1]["task"] == "average"
    assert e["worse_than_start"] == (history[-1]["average"] < history[0]["average"])
    best = max(history, key=lambda h: h["average"])
    assert e["best_step"] == best["step"]
    assert (out / "best_model").exists() == (best["step"] > 0)
    _check_model_card(out / "model", tiny_model_path, evaluated=True)
    if (out / "best_model").exists():
        assert f"best evaluated step ({best['step']})" in (out / "best_model" / "README.md").read_text(encoding="utf-8")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"eval/average", "eval/sts-small", "eval/holdout"} <= set(events.Tags()["scalars"])


def test_held_out_rows_are_never_trained_on(examples_dir):
    from cmtp.trainer.data.stream import DataSource, StreamConfig, holdout_rows, in_holdout, make_loader

    held = holdout_rows([str(examples_dir)], 0.2, 1000)
    assert 3 <= len(held) <= 20 and all(in_holdout(r, 0.2) for r in held)
    stream = StreamConfig([DataSource("s", [str(examples_dir)])], batch_size=10, holdout=0.2, epochs=1)
    seen = {ex["example_id"] for item in make_loader(stream, 0, 1, 0) for ex in item["examples"]}
    assert seen and not seen & {r["example_id"] for r in held}
    assert len(seen) + len(held) == pq.read_metadata(next(examples_dir.glob("*.parquet"))).num_rows


def test_a_saturated_in_batch_task_is_reported(tiny_model_path, examples_dir, tmp_path):
    from cmtp.trainer.losses import info_nce

    stats = {}
    q = torch.eye(4)
    info_nce(q, q.clone(), 0.05, 1, False, stats=stats)
    assert stats["accuracy"] == 1.0
    info_nce(q, torch.roll(q, 1, dims=0), 0.05, 1, False, stats=stats)
    assert stats["accuracy"] == 0.0
    # a learning rate that makes the tiny in-batch task trivial within a few steps
    summary = train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=30, batch_size=4,
                           learning_rate=5e-3, train_group_size=1, saturation_steps=3, save_steps=0))
    assert summary["saturation_warnings"] >= 1


def test_a_retrieval_instruction_does_not_become_the_prompt_of_symmetric_tasks(examples_dir, sts_task, tmp_path):
    """Stage 3 saves the examples' instruction as the query prompt; STS must keep the model's own prompt
    (given the instruction, the demo's STS-B fell by 10 points with unchanged weights)."""
    import json

    from sentence_transformers import SentenceTransformer

    from cmtp.trainer.evaluation import EvalOptions, evaluate, load_tasks
    from tests.tiny_models import build_tiny_model

    corpus = [line for name in ["lcsts/clge_train_head30.tsv", "csl/clge_csl_val_head20.tsv"]
              for line in (RAW / name).read_text(encoding="utf-8").splitlines()]
    corpus.append("问答：为这个句子生成表示以用于检索相关文章")
    model = build_tiny_model(tmp_path / "m", corpus, prompts={"query": "问：", "passage": "答："})
    rows = pq.read_table(next(examples_dir.glob("*.parquet"))).to_pylist()
    instruction = "为这个句子生成表示以用于检索相关文章："
    (tmp_path / "data").mkdir()
    pq.write_table(rows_to_table([{**r, "instruction": instruction} for r in rows], TRAINING_EXAMPLE),
                   tmp_path / "data" / "part-0.parquet")
    summary = train(config(model, tmp_path / "data", tmp_path / "run", max_steps=2, query_prompt=None,
                           passage_prompt=None, save_steps=0))
    prompts = json.loads((Path(summary["model"]) / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["query"] == instruction and prompts["STS"] == prompts["Clustering"] == "问："
    report = evaluate(SentenceTransformer(summary["model"], device="cpu"), load_tasks([str(sts_task)]),
                      EvalOptions(progress=False))
    assert report.tasks[0].prompts == {"text": "问："}


def _check_model_card(folder: Path, base: Path, evaluated: bool) -> None:
    """The saved model loads, and its README.md is a Hub model card: YAML metadata, then the sections a user needs."""
    import yaml
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(str(folder), device="cpu")
    text = (folder / "README.md").read_text(encoding="utf-8")
    _, header, body = text.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert meta["base_model"] == str(base) and meta["library_name"] == "sentence-transformers"
    assert meta["language"] == ["zh"] and "sentence-transformers" in meta["tags"]
    assert ("model-index" in meta) == evaluated
    for section in ("## Data", "## Recipe", "## Evaluation", "## Usage", "prompt_name=\"query\""):
        assert section in body, section


def test_a_model_saved_without_evaluation_says_how_to_evaluate_it(tiny_model_path, examples_dir, tmp_path):
    train(config(tiny_model_path, examples_dir, tmp_path / "run", max_steps=2, save_steps=0))
    _check_model_card(tmp_path / "run" / "model", tiny_model_path, evaluated=False)
    assert "cmtp eval MODEL --compare" in (tmp_path / "run" / "model" / "README.md").read_text(encoding="utf-8")
