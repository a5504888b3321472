"""CPU inference engines for an embedding model: torch fp32, ONNX Runtime fp32, or ONNX Runtime int8.

The exported graph replaces only the transformer inside the loaded ``SentenceTransformer``; tokenisation,
prompts, length sorting, pooling and normalisation stay sentence-transformers' own, so every engine embeds
the same way. sentence-transformers' ``backend="onnx"`` would be the first choice, but it needs optimum-onnx,
which cannot be installed beside transformers 5 (it pins transformers < 4.58); so the export is torch's
(``torch.onnx.export``) and the quantisation onnxruntime's (``quantize_dynamic``). Exports are cached by the
weights' fingerprint under the cmtp cache folder, beside the prepared built-in models, and made once per
machine (a file lock serialises the workers that ask at the same time).

Measured on 600 shared pairs (300 LCSTS, 300 CSL; me5-small, 128 tokens, 2-core CPU; benchmarks/engines.py)
against torch fp32, as wall time / Spearman of pair scores / kept-set agreement at the 80% keep-rate cut /
recall@210: onnx 0.96x / 1.0000 / 100% / 1.000; onnx-int8 0.75x / 0.9950 / 98.3% / 0.964. int8 misses the
agreement targets (0.995 / 99% / 0.98), so torch stays the default everywhere and the ONNX engines are a choice.
int8 recipe: per-channel weights, reduced range, MatMuls only, and the feed-forward down-projections (weight rows
> columns) left in fp32: their inputs carry the GELU outliers that per-tensor dynamic activation scales cannot
hold (on 500 LCSTS pairs all MatMuls quantised gave Spearman 0.987 / kept 98.0%; this recipe 0.996 / 99.2%).
OpenVINO was measured too (benchmarks/openvino_engines.py) and not adopted: fp32 0.90x, NNCF static int8 1.16x
at Spearman 0.9906, weight-only int8 1.01x (this CPU has no VNNI).
"""

from __future__ import annotations

import os
from pathlib import Path

ENGINES = ("torch", "onnx", "onnx-int8")
EXPORT_VERSION = 1  # raised when the export or the quantisation recipe changes, so cached graphs renew
ENGINE_HELP = "embedding engine; onnx (ONNX Runtime fp32) and onnx-int8 (0.75x the time) run on CPU"


def resolve_device(device: str | None, engine: str = "torch") -> str:
    """The device a model runs on (default: cuda when present, the CPU for the ONNX engines), checked before any
    work: a known engine, the ONNX engines on the CPU only, a device name torch knows that this machine has."""
    import torch

    from cmtp.schemas.errors import CmtpError

    if engine not in ENGINES:
        raise CmtpError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    device = device or ("cuda" if engine == "torch" and torch.cuda.is_available() else "cpu")
    if engine != "torch" and not device.startswith("cpu"):
        raise CmtpError(f"--engine {engine} runs on the CPU; use --engine torch with --device {device}")
    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError):
        raise CmtpError(f"--device {device}: not a device name (cpu, cuda, cuda:1 ...)") from None
    count = torch.cuda.device_count() if kind.type == "cuda" else 0
    if kind.type == "cuda" and (kind.index or 0) >= count:
        have = f"{count} CUDA device(s)" if count else "no CUDA device (or torch is a CPU build)"
        raise CmtpError(f"--device {device}: this machine has {have}; use --device cpu, or leave it unset")
    if kind.type not in ("cpu", "cuda", "mps") or (kind.type == "mps" and not torch.backends.mps.is_available()):
        raise CmtpError(f"--device {device}: not available here; use cpu or cuda")
    return device


def use_engine(model, model_dir: Path, engine: str) -> None:
    """Make ``model`` (a SentenceTransformer on the CPU) run its transformer on ``engine``; torch: unchanged."""
    if engine == "torch":
        return
    from .onnx_transformer import OnnxTransformer

    path = exported_graph(model, model_dir, engine)
    transformer = model[0]
    transformer.model = OnnxTransformer(path, transformer.model.config)


def exported_graph(model, model_dir: Path, engine: str) -> Path:
    """The cached ONNX graph of ``model`` for ``engine``, exported (and quantised) on first use."""
    from filelock import FileLock

    from cmtp.transforms.common.progress import bar

    from .registry import cache_dir, weights_fingerprint

    folder = cache_dir() / "onnx" / f"{weights_fingerprint(model_dir)}-v{EXPORT_VERSION}"
    fp32, int8 = folder / "model.onnx", folder / "model-int8.onnx"
    target = int8 if engine == "onnx-int8" else fp32
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    steps = [(fp32, lambda tmp: _export(model, tmp))]  # then, for int8, the quantisation of the export
    if engine == "onnx-int8":
        steps.append((int8, lambda tmp: _quantise(fp32, tmp)))
    # once per model and machine, 10-30 s on a CPU: a bar (a summary line off a terminal) says what the wait is
    with FileLock(str(folder / ".lock")), bar(f"{engine}: prepare the graph (once per model)", len(steps),
                                                "step") as progress:
        for path, write in steps:
            if not path.exists():
                _written(path, write)
            progress.update()
    return target


def _written(path: Path, write) -> None:
    """``write(tmp)`` then rename: a killed export never leaves a graph that looks finished."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _export(model, path: Path) -> None:
    import warnings

    import torch

    hf_model = model[0].model
    sample = model.preprocess(["一个 sample", "二"])
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class LastHidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = hf_model

        def forward(self, *tensors):
            return self.inner(**dict(zip(names, tensors, strict=True))).last_hidden_state

    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHidden().eval(), tuple(sample[n] for n in names), str(path), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)


def _quantise(fp32: Path, path: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32), load_external_data=False).graph
    shapes = {w.name: tuple(w.dims) for w in graph.initializer}
    kept_fp32 = [node.name for node in graph.node if node.op_type == "MatMul" and not _is_quantised(node, shapes)]
    quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=kept_fp32)


def _is_quantised(node, shapes: dict[str, tuple]) -> bool:
    """A MatMul against a weight whose rows do not outnumber its columns (so not a down-projection)."""
    weight = next((shapes[i] for i in node.input if i in shapes and len(shapes[i]) == 2), None)
    return weight is not None and weight[0] <= weight[1]
