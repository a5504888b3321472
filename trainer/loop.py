"""The training loop: streamed batches -> (GradCache) InfoNCE -> AdamW with warm-up and linear decay, on one
CPU, one GPU, or many GPUs under ``torchrun`` (DDP, NCCL or gloo). This module sets a run up and drives it;
one optimiser step is ``steps.py``, checkpoints, resume and the saved model are ``checkpoints.py``.

Written by hand rather than on HF ``Trainer`` / ``SentenceTransformerTrainer``: their resume replays or skips
the data by re-reading it, while streaming from buckets needs the checkpoint to hold the stream's exact
position (``trainer/data/stream.py``). sentence-transformers 6 does have a gathered and a cached
MultipleNegativesRankingLoss, but not with score distillation, and they take their batches from its own
collator; ``losses.py`` and ``gradcache.py`` are small and tested against one process / the uncached loss.
The pieces are the library ones: sentence-transformers models and saving, ``get_linear_schedule_with_warmup``,
DDP, TensorBoard's ``SummaryWriter``, tqdm. ``benchmarks/train.py`` compares speed and memory with
``SentenceTransformerTrainer``.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.embedding import resolve_prompts
from cmtp.transforms.embedding.engines import resolve_device

from .batches import build_step
from .checkpoints import RunState, Saver, check_same_run, latest_checkpoint, restore, unreadable
from .config import TrainConfig
from .data.stream import StreamConfig, data_fingerprint, make_loader
from .encoder import Encoder, load_encoder
from .losses import info_nce
from .model_card import write_model_card
from .steps import Optimisation, adamw, grad_scaler, retromae_step, train_step
from .training_eval import TrainingEval


def _dist_setup() -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, whether this call created the process group and must destroy it)."""
    created = False
    if "RANK" in os.environ and not dist.is_initialized():  # under torchrun
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        created = True
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), created
    return 0, 1, 0, False


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def smoothed_losses(losses: list[float]) -> tuple[float | None, float | None, int]:
    """(mean of the first N losses, mean of the last N, N): single-batch losses are too noisy to compare
    (a run whose curve went 0.43, 0.001, 0.40, 0.42 is not one whose loss fell from 0.001 to 0.42)."""
    if not losses:
        return None, None, 0
    n = max(1, min(10, len(losses) // 4))
    return float(np.mean(losses[:n])), float(np.mean(losses[-n:])), n


def planned_steps(config: TrainConfig, world: int) -> int:
    """``max_steps``, or with ``epochs`` the steps that cover the data that many times, counted from the
    Parquet metadata of every source (rows / global batch, rounded up)."""
    if not config.epochs:
        return config.max_steps
    from .data.stream import list_units

    rows = sum(u.rows for d in config.data for u in list_units(d.paths))
    return max(1, math.ceil(config.epochs * rows / (config.batch_size * world)))


def _retromae(config: TrainConfig, st, model_source: str, device: torch.device, max_length: int | None):
    """Stage 1's model (encoder + MLM head + enhanced decoder) and its tokenizer-to-words aligner, or Nones."""
    if config.stage != "retromae":
        return None, None
    from cmtp.transforms.embedding import resolve_model

    from .retromae.masking import WordAligner
    from .retromae.model import RetroMAE

    model_dir = resolve_model(model_source, allow_network=config.allow_network).path
    model = RetroMAE(st, config.encoder_mask_ratio, config.decoder_mask_ratio, model_dir).to(device)
    return model, WordAligner(st.tokenizer, max_length, config.whole_word_masking)


def _m3_heads(config: TrainConfig, st, model_source: str):
    """BGE-M3's heads: those saved with the starting model (a BGE-M3 folder, or a checkpoint), else new ones from
    the run's seed. They are made visible to evaluation, which scores retrieval with them."""
    from cmtp.transforms.embedding import resolve_model

    from .m3 import M3Heads
    from .m3.retrieval import attach_heads

    folder = resolve_model(model_source, allow_network=config.allow_network).path
    heads, _loaded = M3Heads.for_model(folder, st[0].auto_model.config.hidden_size)
    heads.to(next(st.parameters()).device)
    attach_heads(st, heads)
    return heads


@dataclass
class _Session:
    """Everything one training run holds, made by :func:`_start` (model, optimiser, data, evaluation, saving)."""

    config: TrainConfig
    rank: int
    world: int
    own_group: bool
    device: torch.device
    max_steps: int
    st: object  # the SentenceTransformer being trained
    run: RunState
    module: torch.nn.Module  # the encoder or RetroMAE, wrapped in DDP on several processes
    optimisation: Optimisation  # parameters, optimiser, schedule, fp16 scaler
    loader: object
    save: Saver
    evaluator: TrainingEval | None
    writer: object | None
    retromae: object | None = None
    aligner: object | None = None


def _start(config: TrainConfig) -> _Session:
    """The model (from the newest checkpoint when resuming), optimiser, schedule, data stream, evaluator and
    TensorBoard writer of a run, restored to the checkpoint's state."""
    rank, world, local_rank, own_group = _dist_setup()
    device = torch.device(resolve_device(config.device or (f"cuda:{local_rank}" if torch.cuda.is_available()
                                                           else None)))
    _seed_all(config.seed + rank)
    max_steps = planned_steps(config, world)
    resume_from = latest_checkpoint(config.output_dir) if config.resume else None
    if resume_from:
        check_same_run(config, resume_from)
    model_source = str(resume_from / "model") if resume_from else config.model
    try:
        st = load_encoder(model_source, config.pooling if not resume_from else None, None,
                          str(device), config.allow_network, config.gradient_checkpointing)
    except Exception as exc:
        if resume_from is None or isinstance(exc, CmtpError):
            raise
        raise unreadable(resume_from, exc) from exc
    run = RunState(prompts=resolve_prompts(st, config.query_prompt, config.passage_prompt),
                   data=data_fingerprint(config.data))
    # training lengths go with each call: the model keeps (and saves) its own limit
    encoder = Encoder(st, config.query_max_len, config.passage_max_len).to(device)
    encoder.train()
    if config.freeze_embeddings:  # the word-embedding table is most of a multilingual model's parameters
        st[0].auto_model.get_input_embeddings().weight.requires_grad_(False)
    retromae, aligner = _retromae(config, st, model_source, device, encoder.max_length())
    net = retromae if retromae is not None else encoder
    heads = None
    if config.m3_heads:  # BGE-M3: the dense encoder plus the sparse and multi-vector heads, trained as one module
        from .m3.model import M3Encoder

        heads = _m3_heads(config, st, model_source)
        net = M3Encoder(encoder, heads).to(device)
    module = net
    if world > 1:
        module = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimizer = adamw(parameters, config, list(heads.parameters()) if heads is not None else None)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * max_steps), max_steps)
    evaluator = TrainingEval.create(config, run.prompts) if rank == 0 else None
    eval_state = None
    if resume_from:
        eval_state = restore(resume_from, optimizer, scheduler, run, rank, world * max(config.workers, 1), retromae)
    stream = StreamConfig(list(config.data), config.batch_size, seed=config.seed, shuffle_units=config.shuffle_units,
                          same_source_batches=config.same_source_batches, state=run.positions,
                          holdout=config.eval_holdout, group_by_length=config.group_by_length)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        board = Path(config.output_dir) / "tensorboard"
        if not resume_from:  # a fresh run's curves are its own: event files of a killed or earlier run go
            shutil.rmtree(board, ignore_errors=True)
        # a resumed run hides what the killed run logged after its checkpoint (TensorBoard's purge_step), so
        # each step shows once
        writer = SummaryWriter(str(board), purge_step=run.step + 1 if resume_from else None)
        if resume_from:
            evaluator.restore(eval_state)
    return _Session(config, rank, world, own_group, device, max_steps, st, run, module,
                    Optimisation(parameters, optimizer, scheduler, grad_scaler(config, device)),
                    make_loader(stream, rank, world, config.workers),
                    Saver(config, st, optimizer, scheduler, rank, world, retromae, evaluator, heads),
                    evaluator, writer, retromae, aligner)


def _evaluate(s: _Session, progress) -> None:
    """Rank 0 evaluates (the others wait); the first evaluation is the starting model's."""
    config = s.config
    if s.rank == 0 and s.evaluator.enabled:
        entry = s.evaluator.run(s.st, s.run.step, s.writer)
        progress.write(f"eval at step {s.run.step}: average {100 * entry['average']:.2f} (" + ", ".join(
            f"{k} {100 * v:.2f}" for k, v in entry["scores"].items()) + ")")
        if s.evaluator.is_best(entry) and config.keep_best and s.run.step > 0:
            s.save.model(Path(config.output_dir) / "best_model", s.run)
    if s.world > 1 and (config.eval or config.eval_holdout):
        dist.barrier()


def _step(s: _Session, examples: list[dict], stats: dict) -> float:
    """One optimiser step on a batch of examples: RetroMAE's reconstruction, or InfoNCE (GradCache inside)."""
    config = s.config
    if s.retromae is not None:
        return retromae_step(s.module, s.aligner, examples, config=config, device=s.device, step=s.run.step,
                             optimisation=s.optimisation, stats=stats)
    batch = build_step(examples, config.train_group_size, *s.run.prompts, config.seed, s.run.step)
    teacher = torch.from_numpy(batch.teacher).to(s.device) if batch.teacher is not None else None
    if config.distill_weight and teacher is None:
        stats["no_teacher"] = 1.0  # a step trained without distillation (TensorBoard: train/no_teacher)
    filler = torch.tensor(batch.filler, device=s.device) if batch.filler is not None else None
    if config.m3_heads:
        from .m3.heads import parse_weights
        from .m3.loss import m3_loss

        def m3_loss_fn(q, p):
            return m3_loss(q, p, heads=config.m3_heads, weights=parse_weights(config.head_weights),
                           temperature=config.temperature, group_size=config.train_group_size,
                           cross_device=config.cross_device, self_distill=config.self_distill,
                           teacher_scores=teacher, distill_weight=config.distill_weight,
                           distill_temperature=config.distill_temperature, stats=stats, filler=filler)

        return train_step(s.module, batch, m3_loss_fn, config=config, device=s.device, optimisation=s.optimisation)

    def loss_fn(q, p):
        return info_nce(q, p, config.temperature, config.train_group_size, config.cross_device, teacher,
                        config.distill_weight, config.distill_temperature, stats, filler)

    return train_step(s.module, batch, loss_fn, config=config, device=s.device, optimisation=s.optimisation)


def _log(s: _Session, loss: float, stats: dict, rate: float) -> None:
    if s.writer is None or s.run.step % s.config.logging_steps:
        return
    step = s.run.step
    s.writer.add_scalar("train/loss", loss, step)
    for name, value in stats.items():
        s.writer.add_scalar(f"train/{'in_batch_' if name == 'accuracy' else ''}{name}", value, step)
    s.writer.add_scalar("train/lr", s.optimisation.scheduler.get_last_lr()[0], step)
    s.writer.add_scalar("train/samples_per_s", rate, step)
    s.writer.add_scalar("data/malformed_rows", s.run.malformed, step)
    s.writer.flush()  # as HF's TensorBoard callback does: a killed run's curve reaches its last logged step


def _sum_over_ranks(s: _Session, values: list, dtype: torch.dtype) -> list:
    """Each value summed over the ranks (a collective call: every rank makes it)."""
    total = torch.tensor(values, dtype=dtype, device=s.device if s.device.type == "cuda" else "cpu")
    dist.all_reduce(total)
    return total.tolist()


def _finish(s: _Session) -> tuple[Path, dict | None]:
    """Save the final model (rank 0), write the evaluations, sum the skipped rows over ranks, end DDP."""
    if s.writer:
        s.writer.close()
    final, eval_summary = Path(s.config.output_dir) / "model", None
    if s.rank == 0:
        s.save.model(final, s.run)
        if s.evaluator.enabled:
            s.evaluator.write(s.config.output_dir)
            eval_summary = s.evaluator.summary()
    if s.world > 1:
        (s.run.malformed,) = _sum_over_ranks(s, [s.run.malformed], torch.int64)  # each rank skips its own rows
    if s.rank == 0:
        _write_cards(s, final, eval_summary)
    if s.world > 1:
        dist.barrier()
    if s.own_group:
        dist.destroy_process_group()
    return final, eval_summary


def _write_cards(s: _Session, final: Path, eval_summary: dict | None) -> None:
    """The model cards of the final model and, with ``--keep-best``, of the best evaluated one."""
    card = dict(config=s.config, prompts=dict(s.st.prompts or {}), samples=s.run.samples, skipped=s.run.malformed,
                steps=s.run.step)
    write_model_card(final, evaluation=eval_summary, **card)
    best = Path(s.config.output_dir) / "best_model"
    if s.config.keep_best and best.is_dir() and s.evaluator.best is not None:
        write_model_card(best, evaluation=s.evaluator.summary(s.evaluator.best),
                         note=f"This is the best evaluated step ({s.evaluator.best['step']}) of the run "
                              "(`--keep-best`).", **card)


NO_TEACHER_WARNING = ("warning: --distill-weight is set, but this batch lacks teacher scores for some passage (mine's "
                      "pos_scores / neg_scores; plain pairs and padded groups have none): it trains without "
                      "distillation, as will every such batch")
SATURATION_WARNING = ("warning: in-batch accuracy has been 1.0 for {n} steps: the batch is too easy to teach the "
                      "model anything and it drifts. Raise --batch-size (with --gradcache-chunk to keep memory flat) "
                      "or train on mined hard negatives (--train-group-size).")


def train(config: TrainConfig, on_step=None) -> dict:
    """Run training; returns a summary. ``on_step(step, loss)`` is called after every optimiser step."""
    from tqdm.auto import tqdm

    s = _start(config)
    run = s.run
    # a bar on a terminal only (its lines would fill a log); the command prints the summary line either way
    progress = tqdm(total=s.max_steps, initial=run.step, disable=s.rank != 0 or not sys.stderr.isatty(),
                    desc=f"train {config.stage}")
    if run.step == 0:
        _evaluate(s, progress)
    # samples and losses count the whole run (a resumed one restores them); the rate is this session's
    started, session_samples, saturated, warned_teacher = time.perf_counter(), 0, 0, False

    def warn(line: str) -> None:  # on stderr, by rank 0 (tqdm.write prints on every rank, bar or not)
        if s.rank == 0:
            progress.write(line, file=sys.stderr)

    batches = iter(s.loader)
    while run.step < s.max_steps:
        item = next(batches, None)
        if item is None:
            raise CmtpError("the training data ran out: no usable rows in " +
                            ", ".join(p for d in config.data for p in d.paths) + f" ({run.malformed} malformed)")
        run.positions[item["reader"]] = item["position"]
        run.malformed += item["malformed"]
        run.instructions.update(ex.get("instruction") for ex in item["examples"])
        stats: dict = {}
        run.losses.append(float(_step(s, item["examples"], stats)))
        run.step += 1
        run.samples += len(item["examples"]) * s.world
        session_samples += len(item["examples"]) * s.world
        if stats.get("no_teacher") and not warned_teacher:
            warn(NO_TEACHER_WARNING)
            warned_teacher = True
        accuracy = stats.get("accuracy", 0.0)
        saturated = saturated + 1 if accuracy >= 1.0 else 0
        if saturated == config.saturation_steps:
            run.saturation_warnings += 1
            warn(SATURATION_WARNING.format(n=saturated))
        rate = session_samples / (time.perf_counter() - started)
        progress.update(1)
        progress.set_postfix(loss=f"{run.losses[-1]:.4f}", acc=f"{accuracy:.2f}", samples_per_s=f"{rate:.1f}")
        _log(s, run.losses[-1], stats, rate)
        if on_step:
            on_step(run.step, run.losses[-1])
        if run.step == s.max_steps or (config.eval_steps and run.step % config.eval_steps == 0):
            _evaluate(s, progress)  # before the checkpoint, which keeps the evaluations for a resumed run
        if config.save_steps and (run.step % config.save_steps == 0 or run.step == s.max_steps):
            s.save.checkpoint(run)
    progress.close()
    losses = run.losses
    if s.world > 1:  # a rank's loss is the mean over its own queries; the run's is the mean over ranks
        losses = [total / s.world for total in _sum_over_ranks(s, losses, torch.float64)]
    final, eval_summary = _finish(s)
    first, last, window = smoothed_losses(losses)
    return {"steps": run.step, "first_loss": first, "final_loss": last, "loss_window": window,
            "samples": run.samples,
            "samples_per_second": session_samples / max(time.perf_counter() - started, 1e-9),
            "model": str(final), "malformed_rows": run.malformed, "eval": eval_summary,
            "saturation_warnings": run.saturation_warnings}


