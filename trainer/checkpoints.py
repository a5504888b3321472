"""Checkpoints and saved models of a training run: what a checkpoint holds beyond the weights (``RunState``),
writing it atomically on rank 0 after gathering every rank's stream position and RNG (``Saver``), restoring it
(``restore``), and the final sentence-transformers folder with the training prompts (``save_model``)."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from cmtp.schemas.errors import CmtpError
from cmtp.schemas.ranges import flag_of

from .config import RESUME_MAY_CHANGE, TrainConfig
from .data.stream import saved_reader_counts
from .training_eval import TrainingEval

STATE_FILE = "trainer_state.pt"


SYMMETRIC_PROMPT_NAMES = ("STS", "PairClassification", "Classification", "Clustering")  # mteb's task types


def rng_state() -> dict:
    """Every generator's state as tensors and plain Python values, so that a checkpoint loads with
    ``torch.load(weights_only=True)`` (numpy's state is a tuple holding an array: stored as a list)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(output_dir: str) -> Path | None:
    ckpts = sorted(Path(output_dir, "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [c for c in ckpts if (c / STATE_FILE).exists()]
    return complete[-1] if complete else None


def rotate_checkpoints(output_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints (0: keep all), oldest first; each is a full copy of
    the model and optimiser (430 MB for the proxy, gigabytes for a base model)."""
    if keep <= 0:
        return
    ckpts = sorted(Path(output_dir, "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [c for c in ckpts if (c / STATE_FILE).exists()]
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def unreadable(checkpoint: Path, exc: Exception) -> CmtpError:
    """A checkpoint that cannot be loaded (a damaged disk, a copy cut short): one error saying what to do."""
    cause = (str(exc).strip().splitlines() or [""])[0][:200]
    return CmtpError(f"checkpoint {checkpoint} cannot be read ({type(exc).__name__}: {cause}); delete it to resume "
                     "from the one before, or pass --no-resume to start afresh")


def check_readers(positions: dict, readers: int, checkpoint: Path) -> None:
    """The stream position is per reader (rank x dataloader worker); another layout cannot continue it."""
    saved = saved_reader_counts(positions)
    if saved and saved != {readers}:
        raise CmtpError(f"{checkpoint} was written with {', '.join(map(str, sorted(saved)))} data readers (processes x "
                        f"--workers), this run has {readers}: resume with the same layout, or --no-resume")


def check_same_run(config: TrainConfig, checkpoint: Path) -> None:
    """A resumed run continues the run that wrote the checkpoint: a changed --batch-size or --data continued that
    run's stream positions on other batches, and a new --learning-rate was replaced by the optimiser state's.
    What may change is declared in ``config.RESUME_MAY_CHANGE`` (how long, how often, where, what is evaluated)."""
    recorded = checkpoint / "model" / "cmtp_training.json"
    if not recorded.exists():  # written by an older cmtp
        return
    saved = json.loads(recorded.read_text(encoding="utf-8"))
    now = json.loads(json.dumps(config.to_dict(), default=str))
    for f in fields(config):
        if f.name not in RESUME_MAY_CHANGE and f.name in saved and saved[f.name] != now[f.name]:
            raise CmtpError(f"{checkpoint} was written with {flag_of(f).split('/')[0]} {saved[f.name]}, this run "
                            f"has {now[f.name]}: resume with the same options, or --no-resume to start afresh")


def saved_query_prompt(config: TrainConfig, query_prompt: str, instructions: Counter) -> str:
    """The query prompt the saved model carries: --query-prompt when given, else the instruction most of the
    trained examples had (stage 3), else the model's own query prompt."""
    if config.query_prompt is None:
        seen = [(n, text) for text, n in instructions.items() if text is not None]
        if seen:
            return max(seen)[1]
    return query_prompt


@dataclass
class RunState:
    """What a checkpoint holds beyond the weights and the optimiser, and what resume restores."""

    step: int = 0
    positions: dict = field(default_factory=dict)
    instructions: Counter = field(default_factory=Counter)
    malformed: int = 0
    prompts: tuple[str, str] = ("", "")
    saturation_warnings: int = 0
    samples: int = 0  # trained over the whole run, resumed parts included (the manifest counted the last part only)
    losses: list[float] = field(default_factory=list)  # this rank's loss per step, from step 1
    data: dict = field(default_factory=dict)  # stream.data_fingerprint of the training data


def load_state(path: Path) -> dict:
    """A checkpoint's state, loaded the safe way: ``weights_only=True`` admits tensors and plain Python values and
    never runs code from the file (a checkpoint folder copied from elsewhere could, with a full unpickler). NumPy's
    array types are allowed too, for the RNG state of checkpoints written before it was stored as a list."""
    from numpy._core.multiarray import _reconstruct

    allowed = [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def restore(resume_from: Path, optimizer, scheduler, run: RunState, rank: int, readers: int,
             retromae=None) -> dict | None:
    """Restore the checkpoint's optimiser, schedule, stream positions and RNG into ``run``; returns its
    evaluations so far (so a resumed run still compares with its start)."""
    try:
        state = load_state(resume_from / STATE_FILE)
    except Exception as exc:  # a truncated or damaged file: torch raises RuntimeError, EOFError, UnpicklingError
        raise unreadable(resume_from, exc) from exc
    if retromae is not None:
        retromae.load_heads(state["retromae"])
    changed = sorted(name for name, digest in state.get("data", {}).items() if run.data.get(name, digest) != digest)
    if changed:  # the stream positions point into files that are no longer there as they were
        raise CmtpError(f"the training data {', '.join(changed)} changed since {resume_from} was written (its files' "
                        "rows or text differ): resume on the same data, or --no-resume to start afresh")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    run.step, run.positions = state["step"], state["positions"]
    check_readers(run.positions, readers, resume_from)
    run.instructions = Counter(state.get("instructions", {}))
    run.malformed = state.get("malformed_rows", [0] * (rank + 1))[rank]
    run.samples = state.get("samples", 0)
    run.losses = list(state.get("losses", [[]] * (rank + 1))[rank])
    # the prompts of the original run (the checkpoint's model carries the saved ones, which may differ)
    run.prompts = tuple(state.get("train_prompts", run.prompts))
    set_rng_state(state["rng"][rank])
    return state.get("eval")


class Saver:
    """Writes the final model and checkpoints of one run (rank 0 writes; every rank takes part in gathers)."""

    def __init__(self, config: TrainConfig, st, optimizer, scheduler, rank: int, world: int, retromae=None,
                 evaluator: TrainingEval | None = None, heads=None):
        self.config, self.st, self.retromae, self.heads = config, st, retromae, heads
        self.evaluator = evaluator  # its evaluations so far go into each checkpoint
        self.optimizer, self.scheduler, self.rank, self.world = optimizer, scheduler, rank, world

    def model(self, path: Path, run: RunState) -> None:
        save_model(self.st, path, self.config, run.prompts, run.instructions, self.heads)

    def checkpoint(self, run: RunState) -> None:
        all_positions, all_rng, all_malformed, all_losses = [run.positions], [rng_state()], [run.malformed], \
            [run.losses]
        if self.world > 1:
            all_positions, all_rng, all_malformed, all_losses = ([None] * self.world for _ in range(4))
            dist.all_gather_object(all_positions, run.positions)
            dist.all_gather_object(all_rng, rng_state())
            dist.all_gather_object(all_malformed, run.malformed)
            dist.all_gather_object(all_losses, run.losses)
        if self.rank == 0:
            directory = Path(self.config.output_dir) / "checkpoints" / f"step-{run.step}"
            directory.mkdir(parents=True, exist_ok=True)
            self.model(directory / "model", run)
            merged = {k: v for p in all_positions for k, v in p.items()}
            torch.save({"step": run.step, "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "positions": merged, "rng": all_rng,
                        "instructions": dict(run.instructions), "train_prompts": run.prompts,
                        "malformed_rows": all_malformed, "samples": run.samples, "losses": all_losses,
                        "data": run.data,
                        "eval": self.evaluator.state() if self.evaluator is not None else None,
                        "retromae": self.retromae.heads_state() if self.retromae is not None else None},
                       directory / (STATE_FILE + ".tmp"))
            os.replace(directory / (STATE_FILE + ".tmp"), directory / STATE_FILE)
            rotate_checkpoints(Path(self.config.output_dir), self.config.save_total_limit)
        if self.world > 1:
            dist.barrier()


def save_model(st, path: Path, config: TrainConfig, train_prompts: tuple[str, str], instructions: Counter,
               heads=None) -> None:
    """A sentence-transformers directory with the training prompts, and the base model's length limit: the
    training lengths (--passage-max-len) are training settings, recorded in ``cmtp_training.json``, and a model
    saved with them would silently cut every text at that length when used. BGE-M3 ``heads`` go beside the
    weights, where FlagEmbedding's ``BGEM3FlagModel`` reads them."""
    prompts = dict(st.prompts or {})
    query = saved_query_prompt(config, train_prompts[0], instructions)
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
        st.save(str(tmp), create_model_card=False, safe_serialization=True)
        if heads is not None:
            heads.save(tmp)
        (tmp / "cmtp_training.json").write_text(json.dumps(config.to_dict(), indent=2, ensure_ascii=False,
                                                           default=str))
    except BaseException:  # a full disk or a kill while saving leaves no half-written model.tmp
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
