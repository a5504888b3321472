"""The training loop: streamed batches -> (GradCache) InfoNCE -> AdamW with warm-up and linear decay, on one
CPU, one GPU, or many GPUs under ``torchrun`` (DDP, NCCL or gloo).

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

import json
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.embedding import set_max_seq_length
from cmtp.transforms.embedding.registry import max_seq_length_as

from .batches import build_step
from .config import TrainConfig
from .data.stream import StreamConfig, make_loader, saved_reader_counts
from .encoder import Encoder, load_encoder
from .gradcache import cached_backward
from .losses import info_nce
from .training_eval import TrainingEval

STATE_FILE = "trainer_state.pt"
SYMMETRIC_PROMPT_NAMES = ("STS", "PairClassification", "Classification", "Clustering")  # mteb's task types


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


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(output_dir: str) -> Path | None:
    ckpts = sorted(Path(output_dir, "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [c for c in ckpts if (c / STATE_FILE).exists()]
    return complete[-1] if complete else None


def _prompts(st_model, config: TrainConfig) -> tuple[str, str]:
    from cmtp.transforms.embedding import resolve_prompts

    return resolve_prompts(st_model, config.query_prompt, config.passage_prompt)


def _check_readers(positions: dict, readers: int, checkpoint: Path) -> None:
    """The stream position is per reader (rank x dataloader worker); another layout cannot continue it."""
    saved = saved_reader_counts(positions)
    if saved and saved != {readers}:
        raise CmtpError(f"{checkpoint} was written with {', '.join(map(str, sorted(saved)))} data readers (processes x "
                        f"--workers), this run has {readers}: resume with the same layout, or --no-resume")


def _saved_query_prompt(config: TrainConfig, query_prompt: str, instructions: Counter) -> str:
    """The query prompt the saved model carries: --query-prompt when given, else the instruction most of the
    trained examples had (stage 3), else the model's own query prompt."""
    if config.query_prompt is None:
        seen = [(n, text) for text, n in instructions.items() if text is not None]
        if seen:
            return max(seen)[1]
    return query_prompt


def _autocast(config: TrainConfig, device: torch.device):
    if device.type != "cuda" or config.precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if config.precision == "fp16" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


def _adamw(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """The fused AdamW kernel (CPU and CUDA): on me5-small (118M parameters, CPU) a step takes 0.32 s against
    1.49 s for the default per-tensor loop, which had been the largest part of a CPU step."""
    try:
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # a device or dtype the fused kernel does not support
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def _grad_scaler(config: TrainConfig, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling (bf16 and fp32 do not); autocast, and so fp16, is used on CUDA only."""
    if config.precision == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def train_step(module, batch, loss_fn, config: TrainConfig, device: torch.device, optimizer, scheduler,
               scaler: torch.amp.GradScaler | None, parameters) -> torch.Tensor:
    """One contrastive optimiser step: forward + backward (cached or plain, scaled under fp16), then
    :func:`optimizer_step`."""
    with _autocast(config, device):
        if config.gradcache_chunk:
            loss = cached_backward(module, batch.queries, batch.passages, loss_fn, config.gradcache_chunk, device,
                                   scaler)
        else:
            loss = loss_fn(module(batch.queries, "query"), module(batch.passages, "passage"))
            (scaler.scale(loss) if scaler else loss).backward()
    optimizer_step(optimizer, scheduler, scaler, parameters, config)
    return loss.detach()


def retromae_step(module, aligner, examples: list[dict], config: TrainConfig, device: torch.device, step: int,
                  optimizer, scheduler, scaler, parameters, stats: dict) -> torch.Tensor:
    """One RetroMAE optimiser step on the texts of ``examples``; masks are keyed by row id and step."""
    from .retromae.masking import EncodedBatch, row_seeds

    encoded = aligner([ex["query"] for ex in examples])
    batch = EncodedBatch(*(t.to(device) for t in (encoded.input_ids, encoded.attention_mask, encoded.word_ids)),
                         encoded.max_length)
    seeds = row_seeds([ex["example_id"] for ex in examples], step, config.seed, device)
    with _autocast(config, device):
        loss, values = module(batch, seeds)
    stats.update(values)
    (scaler.scale(loss) if scaler else loss).backward()
    optimizer_step(optimizer, scheduler, scaler, parameters, config)
    return loss.detach()


def optimizer_step(optimizer, scheduler, scaler, parameters, config: TrainConfig) -> None:
    """Unscale (fp16), clip, step, schedule, clear."""
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


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


@dataclass
class RunState:
    """What a checkpoint holds beyond the weights and the optimiser, and what resume restores."""

    step: int = 0
    positions: dict = field(default_factory=dict)
    instructions: Counter = field(default_factory=Counter)
    malformed: int = 0
    prompts: tuple[str, str] = ("", "")
    saturation_warnings: int = 0


def _restore(resume_from: Path, optimizer, scheduler, run: RunState, rank: int, readers: int,
             retromae=None) -> dict | None:
    """Restore the checkpoint's optimiser, schedule, stream positions and RNG into ``run``; returns its
    evaluations so far (so a resumed run still compares with its start)."""
    state = torch.load(resume_from / STATE_FILE, map_location="cpu", weights_only=False)
    if retromae is not None:
        retromae.load_heads(state["retromae"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    run.step, run.positions = state["step"], state["positions"]
    _check_readers(run.positions, readers, resume_from)
    run.instructions = Counter(state.get("instructions", {}))
    run.malformed = state.get("malformed_rows", [0] * (rank + 1))[rank]
    # the prompts of the original run (the checkpoint's model carries the saved ones, which may differ)
    run.prompts = tuple(state.get("train_prompts", run.prompts))
    _set_rng_state(state["rng"][rank])
    return state.get("eval")


def _retromae(config: TrainConfig, st, model_source: str, device: torch.device):
    """Stage 1's model (encoder + MLM head + enhanced decoder) and its tokenizer-to-words aligner, or Nones."""
    if config.stage != "retromae":
        return None, None
    from cmtp.transforms.embedding import resolve_model

    from .retromae.masking import WordAligner
    from .retromae.model import RetroMAE

    model_dir = resolve_model(model_source, allow_network=config.allow_network).path
    model = RetroMAE(st, config.encoder_mask_ratio, config.decoder_mask_ratio, model_dir).to(device)
    return model, WordAligner(st.tokenizer, st.max_seq_length, config.whole_word_masking)


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
    parameters: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None
    loader: object
    save: _Saver
    evaluator: TrainingEval | None
    writer: object | None
    retromae: object | None = None
    aligner: object | None = None


def _start(config: TrainConfig) -> _Session:
    """The model (from the newest checkpoint when resuming), optimiser, schedule, data stream, evaluator and
    TensorBoard writer of a run, restored to the checkpoint's state."""
    rank, world, local_rank, own_group = _dist_setup()
    device = torch.device(config.device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"))
    _seed_all(config.seed + rank)
    max_steps = planned_steps(config, world)
    resume_from = latest_checkpoint(config.output_dir) if config.resume else None
    model_source = str(resume_from / "model") if resume_from else config.model
    st = load_encoder(model_source, config.pooling if not resume_from else None, None,
                      str(device), config.allow_network, config.gradient_checkpointing)
    base_max_len = st.max_seq_length  # what the saved model keeps: training lengths are training settings
    set_max_seq_length(st, config.passage_max_len)
    run = RunState(prompts=_prompts(st, config))
    encoder = Encoder(st, config.query_max_len).to(device)
    encoder.train()
    if config.freeze_embeddings:  # the word-embedding table is most of a multilingual model's parameters
        st[0].auto_model.get_input_embeddings().weight.requires_grad_(False)
    retromae, aligner = _retromae(config, st, model_source, device)
    net = retromae if retromae is not None else encoder
    module = net
    if world > 1:
        module = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimizer = _adamw(parameters, config)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * max_steps), max_steps)
    evaluator = TrainingEval.create(config, run.prompts, base_max_len) if rank == 0 else None
    eval_state = None
    if resume_from:
        eval_state = _restore(resume_from, optimizer, scheduler, run, rank, world * max(config.workers, 1), retromae)
    stream = StreamConfig(list(config.data), config.batch_size, seed=config.seed, shuffle_units=config.shuffle_units,
                          same_source_batches=config.same_source_batches, state=run.positions,
                          holdout=config.eval_holdout)
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
    return _Session(config, rank, world, own_group, device, max_steps, st, run, module, parameters, optimizer,
                    scheduler, _grad_scaler(config, device), make_loader(stream, rank, world, config.workers),
                    _Saver(config, st, base_max_len, optimizer, scheduler, rank, world, retromae, evaluator),
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
        return retromae_step(s.module, s.aligner, examples, config, s.device, s.run.step, s.optimizer, s.scheduler,
                             s.scaler, s.parameters, stats)
    batch = build_step(examples, config.train_group_size, *s.run.prompts, config.seed, s.run.step)
    teacher = torch.from_numpy(batch.teacher).to(s.device) if batch.teacher is not None else None

    def loss_fn(q, p):
        return info_nce(q, p, config.temperature, config.train_group_size, config.cross_device, teacher,
                        config.distill_weight, config.distill_temperature, stats)

    return train_step(s.module, batch, loss_fn, config, s.device, s.optimizer, s.scheduler, s.scaler, s.parameters)


def _log(s: _Session, loss: float, stats: dict, rate: float) -> None:
    if s.writer is None or s.run.step % s.config.logging_steps:
        return
    step = s.run.step
    s.writer.add_scalar("train/loss", loss, step)
    for name, value in stats.items():
        s.writer.add_scalar(f"train/{'in_batch_' if name == 'accuracy' else ''}{name}", value, step)
    s.writer.add_scalar("train/lr", s.scheduler.get_last_lr()[0], step)
    s.writer.add_scalar("train/samples_per_s", rate, step)
    s.writer.add_scalar("data/malformed_rows", s.run.malformed, step)
    s.writer.flush()  # as HF's TensorBoard callback does: a killed run's curve reaches its last logged step


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
        device = s.device if s.device.type == "cuda" else "cpu"
        total = torch.tensor([s.run.malformed], dtype=torch.int64, device=device)
        dist.all_reduce(total)  # every rank's readers skip their own unusable rows
        s.run.malformed = int(total.item())
        dist.barrier()
    if s.own_group:
        dist.destroy_process_group()
    return final, eval_summary


SATURATION_WARNING = ("warning: in-batch accuracy has been 1.0 for {n} steps: the batch is too easy to teach the "
                      "model anything and it drifts. Raise --batch-size (with --gradcache-chunk to keep memory flat) "
                      "or train on mined hard negatives (--group-size).")


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
    started, samples, losses, saturated = time.perf_counter(), 0, [], 0
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
        losses.append(float(_step(s, item["examples"], stats)))
        run.step += 1
        samples += len(item["examples"]) * s.world
        accuracy = stats.get("accuracy", 0.0)
        saturated = saturated + 1 if accuracy >= 1.0 else 0
        if saturated == config.saturation_steps:
            run.saturation_warnings += 1
            progress.write(SATURATION_WARNING.format(n=saturated))
        rate = samples / (time.perf_counter() - started)
        progress.update(1)
        progress.set_postfix(loss=f"{losses[-1]:.4f}", acc=f"{accuracy:.2f}", samples_per_s=f"{rate:.1f}")
        _log(s, losses[-1], stats, rate)
        if on_step:
            on_step(run.step, losses[-1])
        if run.step == s.max_steps or (config.eval_steps and run.step % config.eval_steps == 0):
            _evaluate(s, progress)  # before the checkpoint, which keeps the evaluations for a resumed run
        if config.save_steps and (run.step % config.save_steps == 0 or run.step == s.max_steps):
            s.save.checkpoint(run)
    progress.close()
    final, eval_summary = _finish(s)
    first, last, window = smoothed_losses(losses)
    return {"steps": run.step, "first_loss": first, "final_loss": last, "loss_window": window,
            "samples": samples, "samples_per_second": samples / max(time.perf_counter() - started, 1e-9),
            "model": str(final), "malformed_rows": run.malformed, "eval": eval_summary,
            "saturation_warnings": run.saturation_warnings}


class _Saver:
    """Writes the final model and checkpoints of one run (rank 0 writes; every rank takes part in gathers)."""

    def __init__(self, config: TrainConfig, st, base_max_len: int | None, optimizer, scheduler, rank: int,
                 world: int, retromae=None, evaluator: TrainingEval | None = None):
        self.config, self.st, self.base_max_len, self.retromae = config, st, base_max_len, retromae
        self.evaluator = evaluator  # its evaluations so far go into each checkpoint
        self.optimizer, self.scheduler, self.rank, self.world = optimizer, scheduler, rank, world

    def model(self, path: Path, run: RunState) -> None:
        _save_model(self.st, path, self.config, run.prompts, run.instructions, self.base_max_len)

    def checkpoint(self, run: RunState) -> None:
        all_positions, all_rng, all_malformed = [run.positions], [_rng_state()], [run.malformed]
        if self.world > 1:
            all_positions, all_rng, all_malformed = [None] * self.world, [None] * self.world, [None] * self.world
            dist.all_gather_object(all_positions, run.positions)
            dist.all_gather_object(all_rng, _rng_state())
            dist.all_gather_object(all_malformed, run.malformed)
        if self.rank == 0:
            directory = Path(self.config.output_dir) / "checkpoints" / f"step-{run.step}"
            directory.mkdir(parents=True, exist_ok=True)
            self.model(directory / "model", run)
            merged = {k: v for p in all_positions for k, v in p.items()}
            torch.save({"step": run.step, "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "positions": merged, "rng": all_rng,
                        "instructions": dict(run.instructions), "train_prompts": run.prompts,
                        "malformed_rows": all_malformed,
                        "eval": self.evaluator.state() if self.evaluator is not None else None,
                        "retromae": self.retromae.heads_state() if self.retromae is not None else None},
                       directory / (STATE_FILE + ".tmp"))
            os.replace(directory / (STATE_FILE + ".tmp"), directory / STATE_FILE)
        if self.world > 1:
            dist.barrier()


def _save_model(st, path: Path, config: TrainConfig, train_prompts: tuple[str, str], instructions: Counter,
                base_max_len: int | None = None) -> None:
    """A sentence-transformers directory with the training prompts, and the base model's length limit: the
    training lengths (--passage-max-len) are training settings, recorded in ``cmtp_training.json``, and a model
    saved with them would silently cut every text at that length when used."""
    prompts = dict(st.prompts or {})
    query = _saved_query_prompt(config, train_prompts[0], instructions)
    if query != prompts.get("query", ""):
        # a retrieval instruction replaces the query prompt: symmetric tasks keep the model's own, under mteb's
        # task-type prompt names (the STS drop was 10 points when they got the instruction instead)
        for name in SYMMETRIC_PROMPT_NAMES:
            prompts.setdefault(name, prompts.get("query", ""))
    prompts["query"] = query
    # encode_document() looks for "document" before "passage": both carry the passage prompt
    prompts["passage"] = prompts["document"] = train_prompts[1]
    st.prompts = prompts
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with max_seq_length_as(st, base_max_len):
            st.save(str(tmp), create_model_card=False, safe_serialization=True)
        (tmp / "cmtp_training.json").write_text(json.dumps(config.to_dict(), indent=2, ensure_ascii=False,
                                                           default=str))
    except BaseException:  # a full disk or a kill while saving leaves no half-written model.tmp
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
