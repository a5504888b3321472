"""OpenVINO on CPU against torch fp32: NNCF static int8 and weight-only int8 of the same exported graph.

Not a cmtp engine: this measures whether OpenVINO would earn a place beside ``--engine onnx-int8`` (it did not on
the 2-core AVX2 machine without VNNI these numbers come from; see docs/stages/score.md, "Engines on CPU"). It needs
two packages that cmtp does not install:

    pip install openvino==2026.4.1 nncf==3.4.0
    python benchmarks/openvino_engines.py [--mode static|weights|fp32] [--pairs 600] [--rounds 3]

``static``: ``nncf.quantize`` (transformer preset with SmoothQuant) calibrated on 300 LCSTS + CSL pairs that are
not among the measured ones; ``weights``: ``nncf.compress_weights`` int8 (activations stay fp32). Same agreement
measures and interleaved timing as benchmarks/engines.py.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import SHARED, csl_pairs, lcsts_pairs, tsv_pairs
from engines import compare
from transformers.modeling_outputs import BaseModelOutput

from cmtp.transforms.embedding import encode, load_embedding_model, resolve_prompts
from cmtp.transforms.embedding.engines import exported_graph
from cmtp.transforms.embedding.registry import resolve_model

MODEL = "builtin:me5-small"


def calibration_feeds(model, names: list[str], query: str, passage: str) -> list[dict[str, np.ndarray]]:
    """Batches of 16 prompted titles and of 16 prompted passages from rows 1000-1149 of each TSV."""
    rows = (tsv_pairs(SHARED / "raw" / "lcsts" / "clge_train.tsv", 1150)[1000:]
            + tsv_pairs(SHARED / "raw" / "csl" / "clge_csl_val.tsv", 1150)[1000:])
    feeds = []
    for start in range(0, len(rows), 16):
        chunk = rows[start:start + 16]
        for strings in ([query + t for t, _ in chunk], [passage + p for _, p in chunk]):
            tokens = model.preprocess(strings)
            feeds.append({n: tokens[n].numpy().astype(np.int64) for n in names})
    return feeds


class OpenVinoTransformer(torch.nn.Module):
    """The compiled OpenVINO model in the place of the Hugging Face model (as OnnxTransformer does for ORT)."""

    def __init__(self, compiled, names: list[str], config):
        super().__init__()
        self.config, self.compiled, self.names = config, compiled, names

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **_ignored):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {n: (given[n] if given[n] is not None else torch.zeros_like(input_ids)).numpy() for n in self.names}
        return BaseModelOutput(last_hidden_state=torch.from_numpy(self.compiled(feed)[0].copy()))


def openvino_model(mode: str):
    import nncf
    import openvino as ov

    model = load_embedding_model(MODEL, "cpu", 128)
    query, passage = resolve_prompts(model)
    graph = ov.Core().read_model(str(exported_graph(model, resolve_model(MODEL, False).path, "onnx")))
    names = [i.get_any_name() for i in graph.inputs]
    if mode == "static":
        feeds = calibration_feeds(model, names, query, passage)
        graph = nncf.quantize(graph, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds))
    elif mode == "weights":
        graph = nncf.compress_weights(graph, mode=nncf.CompressWeightsMode.INT8_ASYM)
    compiled = ov.Core().compile_model(graph, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                      "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    model[0].model = OpenVinoTransformer(compiled, names, model[0].model.config)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("static", "weights", "fp32"), default="static")
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pairs = lcsts_pairs(args.pairs // 2) + csl_pairs(args.pairs - args.pairs // 2)
    titles, texts = [t for t, _ in pairs], [p for _, p in pairs]
    models = {"torch": load_embedding_model(MODEL, "cpu", 128), f"openvino {args.mode}": openvino_model(args.mode)}
    query, passage = resolve_prompts(models["torch"])
    print(f"{len(pairs)} pairs, medians of {args.rounds} interleaved rounds")
    compare({name: (lambda titles, texts, m=model: (encode(m, titles, query, 64), encode(m, texts, passage, 64)))
             for name, model in models.items()}, titles, texts, args.rounds)


if __name__ == "__main__":
    main()
