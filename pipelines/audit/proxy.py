"""``cmtp audit --proxy``: does a cut make a better model? Train the same small proxy student with the same budget on
every variant of the data (each threshold's kept pairs, no filter, random same-size controls, other inputs), over
several seeds, evaluate each, and say which differences are larger than the seed-to-seed spread.

This is the method of the data-filtering benchmarks (DataComp fixes the model and the budget and compares pools;
FineWeb trains small proxies on each filtered variant with several seeds). The proxy, ``builtin:me5-small-l2``,
is me5-small cut to its first 2 encoder layers with its tokenizer and frozen token table: far from saturated,
so a corpus's effect shows after a few CPU minutes, where the full model moves by less than its noise.

Every run (variant x seed) is cached under the work folder by a fingerprint of its training pairs, the recipe,
the proxy's weights and the evaluation, so adding a threshold trains only that one, and a killed audit resumes
at the run it was in. Training goes through the trainer (``cmtp.trainer.loop.train``: its device handling, so the
same command runs on a GPU), evaluation through ``cmtp.trainer.evaluation``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cmtp.schemas.errors import CmtpError
from cmtp.schemas.ranges import check_ranges, option, within

from .proxy_stats import Arm, Summary, ablation_verdict, difference, verdict
from .proxy_variants import (
    Variant,
    count_available,
    holdout_table,
    input_variants,
    sample_input,
    sample_variants,
    write_pairs,
)

PROXY_MODEL = "builtin:me5-small-l2"
DEFAULT_KEEP_RATES = (0.9, 0.8, 0.7, 0.6)
NO_FILTER = "no filter"
HOLDOUT_TASK = "holdout"
CACHE_VERSION = 3  # raised when a cached run's meaning changes (2: keys over the text; 3: negatives and group size)
# Used only for the estimate printed before the first run (then each finished run refines it): training rate of
# the proxy at the default recipe, measured on a 2-core CPU (docs/stages/proxy-audit.md).
PRIOR_SAMPLES_PER_SECOND = 40.0


@dataclass
class ProxyConfig:
    """The proxy audit's options (``cmtp audit --proxy-*``); the recipe defaults were chosen by measurement
    (docs/stages/proxy-audit.md)."""

    # the cuts to compare, as scores (--proxy-thresholds) and as shares kept (--proxy-keep-rates; 0.9 to 0.6)
    thresholds: list[float] = field(default_factory=list, metadata=within(ge=-1, le=1, why="scores are cosines"))
    keep_rates: list[float] = field(default_factory=list, metadata=within(
        gt=0, lt=1, why="1 keeps everything: that is 'no filter', always included"))
    inputs: list[str] = option(help="another training set NAME=PATH for --proxy (repeatable)", factory=list,
                               flag="--proxy-input")
    controls: bool = option(True, "also train a random subset of each cut's size",
                            flag="--proxy-controls/--no-proxy-controls")
    model: str = option(PROXY_MODEL, "the proxy student", flag="--proxy-model")
    steps: int = option(30, "training steps per run", flag="--proxy-steps", ge=1)
    batch_size: int = option(64, "pairs per step", flag="--proxy-batch-size", ge=2)
    learning_rate: float = option(5e-4, "learning rate", flag="--proxy-learning-rate", aliases=("--proxy-lr",), gt=0)
    temperature: float = option(0.05, "InfoNCE temperature", flag="--proxy-temperature", gt=0)
    seeds: int = option(3, "seeds per variant", flag="--proxy-seeds", ge=1)
    pairs: int = option(20_000, "distinct pairs a variant samples at most", flag="--proxy-pairs", ge=2)
    holdout: int = option(500, "unfiltered pairs held out and evaluated as retrieval (0: none)",
                          flag="--proxy-holdout", ge=0)
    tasks: list[str] = option(help="evaluation task folders or YAML for --proxy", factory=list)
    suite: str | None = option("dev", "a named evaluation suite for --proxy")
    max_per_task: int | None = option(200, "evaluation items per task for --proxy", ge=1)
    query_max_len: int = field(default=48, metadata=within(ge=4))
    passage_max_len: int = field(default=64, metadata=within(ge=4))
    eval_max_len: int = field(default=128, metadata=within(ge=8))
    eval_batch_size: int = field(default=64, metadata=within(ge=1))
    device: str | None = option(None, "device of the proxy runs (default: CUDA when present)")
    train_group_size: int = option(4, "passages per query of a training-examples input: its positive and "
                                      "hard negatives (stage 3's loss)", flag="--proxy-train-group-size", ge=2)
    cuts: bool = True  # compare the scored pairs' cuts (False: the inputs alone, as a build's --ablate does)
    twins: list[str] | None = None  # the examples inputs also trained without their negatives (None: every one)

    def __post_init__(self):
        check_ranges(self)
        if not self.thresholds and not self.keep_rates and self.cuts:
            self.keep_rates = list(DEFAULT_KEEP_RATES)
        if not self.cuts and not self.inputs:
            raise CmtpError("a proxy audit without cuts compares its inputs: give at least one NAME=PATH")
        if self.holdout and self.holdout < 10:
            raise CmtpError("--proxy-holdout must be 0 (none) or >= 10 pairs")
        for spec in self.inputs:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise CmtpError(f"--proxy-input {spec!r}: use NAME=PATH")
        if not self.tasks and not self.suite and not self.holdout:
            raise CmtpError("the proxy audit needs an evaluation: --tasks, --suite or --proxy-holdout")

    def recipe(self) -> dict:
        """What every run of the audit shares and its cache key includes."""
        keys = ["model", "steps", "batch_size", "learning_rate", "temperature", "query_max_len", "passage_max_len"]
        return {k: getattr(self, k) for k in keys}

    @property
    def budget(self) -> int:
        """Training samples every run sees: steps x batch (a variant with fewer pairs repeats them)."""
        return self.steps * self.batch_size


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def content_key(table) -> str:
    """The digest of a table's rows by content (id, title, passage and any negatives, in order): ids hash a
    record's place, not its text, so a corpus re-extracted with other cleaning keeps its ids and must not reuse runs
    trained on the old text."""
    h = hashlib.sha256()
    for name in ("pair_id", "title", "passage", "neg"):
        if name not in table.column_names:
            continue
        for value in table.column(name).to_pylist():
            for text in value if isinstance(value, list) else [value]:
                h.update((text or "").encode("utf-8", "surrogatepass"))
                h.update(b"\x1f")
            h.update(b"\x1d")
        h.update(b"\x1e")
    return h.hexdigest()[:16]


@dataclass
class RunResult:
    variant: str
    seed: int
    pairs: int  # distinct training pairs
    scores: dict[str, float]  # task -> main score x 100
    dev_average: float  # the average over the evaluation tasks (the held-out slice apart)
    train_seconds: float
    eval_seconds: float
    samples_per_second: float
    final_loss: float | None = None
    cached: bool = False


@dataclass
class ProxyReport:
    config: dict
    variants: list[Variant]
    floor: RunResult
    runs: list[RunResult]
    seconds: float = 0.0

    @property
    def baseline(self) -> str:
        """What the other variants are compared with: no filter, or (without cuts) the first input: a build's own
        choice when it ablates an option."""
        names = [v.name for v in self.variants]
        return NO_FILTER if NO_FILTER in names else names[0]

    def summary(self, variant: str, key: str = "dev_average") -> Summary:
        runs = [r for r in self.runs if r.variant == variant]
        return Summary(tuple(r.dev_average if key == "dev_average" else r.scores[key] for r in runs))

    def rows(self) -> list[dict]:
        """One row per variant: mean ± sd of the dev average and of the held-out retrieval, deltas judged by the
        significance rule against the floor and against the baseline."""
        base = self.summary(self.baseline)
        floor = Summary((self.floor.dev_average,))
        rows = []
        for v in self.variants:
            s = self.summary(v.name)
            runs = [r for r in self.runs if r.variant == v.name]
            vs_floor, vs_base = difference(s, floor), difference(s, base)
            row = {**v.to_dict(), "pairs": min((r.pairs for r in runs), default=0), "seeds": s.n,
                   "dev_mean": s.mean, "dev_sd": s.sd, "vs_floor": asdict(vs_floor),
                   "vs_baseline": asdict(vs_base) if v.name != self.baseline else None,
                   "tasks": {t: float(np.mean([r.scores[t] for r in runs])) for t in (runs[0].scores if runs else {})}}
            if runs and HOLDOUT_TASK in runs[0].scores:
                h = self.summary(v.name, HOLDOUT_TASK)
                row.update(holdout_mean=h.mean, holdout_sd=h.sd)
            rows.append(row)
        return rows

    def _arm(self, name: str) -> Arm:
        return Arm(name, self.summary(name), min((r.pairs for r in self.runs if r.variant == name), default=0))

    def verdict(self) -> str:
        budget = self.config.get("steps", 0) * self.config.get("batch_size", 0)
        cuts = [v for v in self.variants if v.kind == "threshold"]
        if not cuts:
            return ablation_verdict([self._arm(v.name) for v in self.variants], self._arm(self.baseline))
        controls = {v.threshold: v.name for v in self.variants if v.kind == "random"}
        return verdict([(self._arm(v.name), self._arm(controls[v.threshold]) if v.threshold in controls else None)
                        for v in cuts], self._arm(self.baseline), budget)

    def to_dict(self) -> dict:
        return {"config": self.config, "floor": asdict(self.floor), "rows": self.rows(), "verdict": self.verdict(),
                "runs": [asdict(r) for r in self.runs], "seconds": round(self.seconds, 1)}


def _cut_names(threshold: float, share: float, by_rate: float | None) -> tuple[str, str]:
    """(the cut's name, its random control's name): "keep 0.80 (>= 0.8919)" / "random, size of keep 0.80"."""
    short = f"keep {by_rate:.2f}" if by_rate is not None else f">= {threshold:.4f}"
    long = f"{short} (>= {threshold:.4f})" if by_rate is not None else f"{short} (keeps {share:.1%})"
    return long, f"random, size of {short}"


def plan_variants(dataset, config: ProxyConfig, held: set[str]) -> list[Variant]:
    """No filter, each cut with its random same-size control, and the named inputs (training examples twice: with
    their mined negatives and with in-batch negatives alone); without cuts, the inputs alone."""
    from .stats import collect

    inputs = [v for name, _, path in (spec.partition("=") for spec in config.inputs)
              for v in input_variants(name, path, held, twin=config.twins is None or name in config.twins)]
    if not config.cuts:
        return _checked(inputs)
    cuts: list[tuple[float, float | None]] = [(float(t), None) for t in config.thresholds]
    if config.keep_rates:
        stats = collect(dataset, np.array([0.0], np.float32))["(all)"]
        cuts += [(stats.threshold_for_keep_rate(r), r) for r in config.keep_rates]
    total, kept = count_available(dataset, [t for t, _ in cuts], held)
    if total < config.batch_size:
        raise CmtpError(f"only {total} scored pairs outside the held-out slice ({len(held):,} pairs): fewer than one "
                        f"batch ({config.batch_size}); lower --proxy-holdout or --proxy-batch-size")
    variants = [Variant(NO_FILTER, "all", total, keep_rate=1.0)]
    seen: set[float] = set()
    for (t, by_rate), k in sorted(zip(cuts, kept, strict=True), key=lambda c: c[0][0]):
        if t in seen:  # the same cut asked twice (a rate and a threshold that coincide)
            continue
        seen.add(t)
        name, control = _cut_names(t, k / total, by_rate)
        if k < config.batch_size:
            raise CmtpError(f"the cut {name} keeps {k} pairs: fewer than one batch of {config.batch_size}")
        variants.append(Variant(name, "threshold", k, threshold=t, keep_rate=k / total))
        if config.controls:
            variants.append(Variant(control, "random", k, threshold=t, keep_rate=k / total))
    return _checked(variants + inputs)  # read first: a NAME=PATH that matches nothing is named before the cuts'


def _checked(variants: list[Variant]) -> list[Variant]:
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise CmtpError(f"two variants share a name: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return variants


def _holdout_task(table):
    from cmtp.trainer.evaluation import EvalTask
    from cmtp.trainer.evaluation.task_data import retrieval_data

    pairs = zip(table.column("title").to_pylist(), table.column("passage").to_pylist(), strict=True)
    return EvalTask(HOLDOUT_TASK, "retrieval", retrieval_data([(t, [p], []) for t, p in pairs]),
                    "held-out unfiltered pairs")


class ProxyAudit:
    """One audit's work folder, tasks and runs."""

    def __init__(self, dataset, config: ProxyConfig, work: str | Path, log=print):
        from cmtp.pipelines.evaluate import eval_task_paths
        from cmtp.trainer.evaluation import load_tasks
        from cmtp.transforms.embedding import resolve_model

        self.dataset, self.config, self.work, self.log = dataset, config, Path(work), log
        held = holdout_table(dataset, config.holdout) if config.holdout else None
        self.held_ids = set(held.column("pair_id").to_pylist()) if held is not None else set()
        self.held_texts = set(held.column("passage").to_pylist()) if held is not None else set()
        paths = eval_task_paths(config.tasks, config.suite)
        self.tasks = load_tasks(paths, config.max_per_task, 0) if paths else []
        if held is not None and held.num_rows:
            self.tasks.append(_holdout_task(held))
        self.model_path = str(resolve_model(config.model).path)
        self.eval_key = _digest(paths, config.max_per_task, content_key(held) if held is not None else None,
                                config.eval_max_len)
        self.base_key = _digest(CACHE_VERSION, _model_key(self.model_path), config.recipe(), self.eval_key)
        self.variants = plan_variants(dataset, config, self.held_ids)
        self.work.mkdir(parents=True, exist_ok=True)  # once the plan holds: a mistake leaves no folder behind

    # --- evaluation and training of one run -------------------------------------------------------------------
    def _evaluate(self, model) -> tuple[dict[str, float], float, float]:
        from cmtp.trainer.evaluation import EvalOptions, evaluate

        options = EvalOptions(batch_size=self.config.eval_batch_size, max_seq_length=self.config.eval_max_len,
                              progress=False, device=self.config.device)
        report = evaluate(model, self.tasks, options)
        scores = {t.name: 100 * t.main_score for t in report.tasks}
        dev = [v for k, v in scores.items() if k != HOLDOUT_TASK] or list(scores.values())
        return scores, float(np.mean(dev)), report.seconds

    def floor(self) -> RunResult:
        model_key = _digest(CACHE_VERSION, _model_key(self.model_path), self.eval_key)
        path = self.work / "runs" / f"floor-{model_key}.json"  # the untrained proxy: no training recipe in its key
        if path.exists():
            return RunResult(**{**json.loads(path.read_text(encoding="utf-8")), "cached": True})
        scores, dev, seconds = self._evaluate(self.model_path)
        result = RunResult("untrained proxy", -1, 0, scores, dev, 0.0, seconds, 0.0)
        _write_json(path, asdict(result))
        return result

    def _train(self, data: Path, out: Path, seed: int, group: int = 1) -> dict:
        """``group`` > 1: training examples with mined negatives, stage 3's loss with that many passages a query."""
        from cmtp.trainer.config import TrainConfig
        from cmtp.trainer.loop import train

        c = self.config
        stage = {"stage": "finetune", "train_group_size": group} if group > 1 else {"stage": "contrastive"}
        config = TrainConfig(**stage, model=self.model_path, data=[{"name": "proxy", "paths": [str(data)]}],
                             output_dir=str(out), max_steps=c.steps, batch_size=c.batch_size,
                             learning_rate=c.learning_rate, temperature=c.temperature, query_max_len=c.query_max_len,
                             passage_max_len=c.passage_max_len, freeze_embeddings=True, save_steps=0, seed=seed,
                             logging_steps=max(1, c.steps // 5), resume=False, device=c.device, warmup_ratio=0.1)
        return train(config)

    def run(self, variant: Variant, seed: int, table) -> RunResult:
        """Train and evaluate one variant x seed, or return its cached result."""
        data_key = content_key(table)
        group = self.config.train_group_size if variant.negatives else 1
        key = _digest(self.base_key, data_key, seed, group)
        path = self.work / "runs" / f"{key}.json"
        if path.exists():
            return RunResult(**{**json.loads(path.read_text(encoding="utf-8")), "variant": variant.name,
                                "cached": True})
        data = self.work / "data" / f"{data_key}.parquet"
        if not data.exists():
            write_pairs(table, data)
        out = self.work / "runs" / f".{key}.training"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        try:
            summary = self._train(data, out, seed, group)
            trained = time.perf_counter() - started
            scores, dev, eval_seconds = self._evaluate(str(Path(summary["model"])))
        finally:
            shutil.rmtree(out, ignore_errors=True)  # a 2-layer model is still a 390 MB token table: results only
        result = RunResult(variant.name, seed, table.num_rows, scores, dev, round(trained, 1), round(eval_seconds, 1),
                           round(summary["samples_per_second"], 2), summary["final_loss"])
        _write_json(path, asdict(result))
        return result

    def samples(self, seed: int) -> dict:
        tables = sample_variants(self.dataset, self.variants, self.config.pairs, seed, self.held_ids)
        for v in self.variants:
            if v.kind == "input":
                tables[v.name] = sample_input(v, self.config.pairs, seed, self.held_ids, self.held_texts)
        return tables


def _model_key(path: str) -> str:
    """The proxy's weights and its configuration (dropout, pooling, prompts: they change training, not weights)."""
    from cmtp.transforms.embedding import weights_fingerprint

    configs = sorted(p for p in Path(path).rglob("*.json") if p.name != "cmtp_model.json")  # that one: a record
    return _digest(weights_fingerprint(path), [(str(p.relative_to(path)), p.read_text(encoding="utf-8"))
                                               for p in configs])


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def run_proxy_audit(dataset, config: ProxyConfig, work: str | Path, log=print) -> ProxyReport:
    """Every variant x seed (cached ones reused), the untrained floor once; returns the report."""
    from ..locking import hold

    started = time.perf_counter()
    audit = ProxyAudit(dataset, config, work, log)
    with hold(audit.work, own=True, log=log):  # a second audit on this folder would delete this one's training
        return _run_all(audit, config, log, started)


def _run_all(audit: ProxyAudit, config: ProxyConfig, log, started: float) -> ProxyReport:
    total = len(audit.variants) * config.seeds
    log(f"proxy audit: {len(audit.variants)} variants x {config.seeds} seeds = {total} runs of {config.steps} steps x "
        f"{config.batch_size} pairs on {config.model}; evaluated on {len(audit.tasks)} tasks; work folder {audit.work}")
    floor = audit.floor()
    budget = config.steps * config.batch_size
    estimate = total * (budget / PRIOR_SAMPLES_PER_SECOND + floor.eval_seconds)
    log(f"untrained proxy: dev average {floor.dev_average:.2f}; estimated {estimate / 60:.0f} min for {total} runs "
        "before cached runs are counted (refined after each run)")
    runs: list[RunResult] = []
    spent, trained = 0.0, 0
    for seed in range(config.seeds):
        tables = audit.samples(seed)
        for variant in audit.variants:
            result = audit.run(variant, seed, tables[variant.name])
            runs.append(result)
            if not result.cached:
                spent += result.train_seconds + result.eval_seconds
                trained += 1
            left = total - len(runs)
            eta = f", about {left * spent / trained / 60:.0f} min left" if trained and left else ""
            log(f"[{len(runs)}/{total}] {variant.name}, seed {seed}: dev average {result.dev_average:.2f}"
                + (" (cached)" if result.cached else
                   f" ({result.pairs:,} pairs, {result.samples_per_second:.1f} samples/s, "
                   f"{result.train_seconds + result.eval_seconds:.0f} s){eta}"))
    return ProxyReport({**asdict(config), "work": str(audit.work)}, audit.variants, floor, runs,
                       time.perf_counter() - started)
