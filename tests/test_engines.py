"""The CPU embedding engines (transforms/embedding/engines.py): ONNX fp32 equals torch up to rounding, int8 stays
within its measured agreement with torch fp32 on real pairs, the quantisation keeps down-projections in fp32, the
export is cached, and a bad engine name is one error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmtp.schemas import CmtpError
from cmtp.transforms.embedding import encode, load_embedding_model
from cmtp.transforms.embedding.engines import exported_graph, resolve_device
from tests.numerics import assert_float32_close

RAW = Path(__file__).parent / "data" / "raw"


def real_pairs() -> list[tuple[str, str]]:
    """LCSTS (summary, text) and CSL (title, abstract) pairs bundled with the tests."""
    pairs = []
    for name in ("lcsts/clge_train_head30.tsv", "csl/clge_csl_val_head20.tsv"):
        for line in (RAW / name).read_text(encoding="utf-8").splitlines():
            title, _, text = line.partition("\t")
            if title.strip() and text.strip():
                pairs.append((title.strip(), text.strip()))
    return pairs


def test_onnx_fp32_equals_torch_up_to_rounding(tiny_model_path):
    texts = [t for pair in real_pairs()[:20] for t in pair]
    torch_model = load_embedding_model(str(tiny_model_path), "cpu", 64, engine="torch")
    onnx_model = load_embedding_model(str(tiny_model_path), "cpu", 64, engine="onnx")
    want, got = encode(torch_model, texts, "", 8), encode(onnx_model, texts, "", 8)
    config = torch_model[0].model.config
    # the reductions behind one output: per layer the attention over the tokens, the projections and the FFN
    terms = config.num_hidden_layers * (64 + 4 * config.hidden_size + 2 * config.intermediate_size)
    assert_float32_close(got, want, terms, what="onnx vs torch embeddings")


def test_int8_agrees_with_torch_fp32_on_real_pairs(builtin_model_path):
    """int8 against torch fp32 on the bundled LCSTS and CSL pairs with me5-small, at the agreement measured on the
    shared data (benchmarks/engines.py: Spearman 0.995, kept 98.3%, recall@210 0.964) less a margin for the
    smaller sample. Below issue #23's targets (0.995 / 99% / 0.98), which is why int8 is not the default; this
    test catches a recipe that gets worse (all MatMuls quantised measured 0.987 / 98.0%)."""
    from scipy.stats import spearmanr

    pairs = real_pairs()
    titles, texts = [t for t, _ in pairs], [p for _, p in pairs]
    vectors = {}
    for engine in ("torch", "onnx-int8"):
        model = load_embedding_model(str(builtin_model_path), "cpu", 128, engine=engine)
        vectors[engine] = encode(model, titles, "query: ", 16), encode(model, texts, "passage: ", 16)
    (rq, rp), (q, p) = vectors["torch"], vectors["onnx-int8"]
    want, got = np.einsum("ij,ij->i", rq, rp), np.einsum("ij,ij->i", q, p)
    cut = np.quantile(want, 0.2)
    k = 10
    ref_top, top = (np.argsort(-(a @ b.T), axis=1)[:, :k] for a, b in ((rq, rp), (q, p)))
    recall = np.mean([len(set(x) & set(y)) / k for x, y in zip(ref_top, top, strict=True)])
    assert spearmanr(want, got).statistic >= 0.99  # measured 0.9963 here
    assert np.mean((want >= cut) == (got >= cut)) >= 0.94  # 50 pairs: 3 on the other side of the cut
    assert recall >= 0.90  # measured 0.942 here


def test_int8_keeps_down_projections_in_fp32_and_is_cached(tiny_model_path, monkeypatch):
    import onnx

    model = load_embedding_model(str(tiny_model_path), "cpu", 64, engine="torch")
    path = exported_graph(model, tiny_model_path, "onnx-int8")
    graph = onnx.load(str(path)).graph
    config = model[0].model.config
    kinds = [n.op_type for n in graph.node]
    assert kinds.count("MatMulInteger") + kinds.count("DynamicQuantizeMatMul") >= 1  # something was quantised
    shapes = {w.name: tuple(w.dims) for w in graph.initializer}
    fp32 = [shapes[i] for n in graph.node if n.op_type == "MatMul" for i in n.input if i in shapes]
    assert (config.intermediate_size, config.hidden_size) in fp32  # the FFN down-projection stayed fp32

    def no_export(*_args):
        raise AssertionError("exported again")

    monkeypatch.setattr("cmtp.transforms.embedding.engines._export", no_export)
    assert exported_graph(model, tiny_model_path, "onnx-int8") == path


def test_onnx_engines_run_on_the_cpu_only_and_names_are_checked():
    assert resolve_device("cpu", "onnx-int8") == "cpu" and resolve_device(None, "onnx") == "cpu"
    with pytest.raises(CmtpError, match="runs on the CPU"):
        resolve_device("cuda", "onnx")
    with pytest.raises(CmtpError, match="unknown engine 'int4'"):
        resolve_device("cpu", "int4")


def test_a_device_this_machine_lacks_is_named(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(CmtpError, match="cuda:1: this machine has 1 CUDA device"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(CmtpError, match="this machine has no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(CmtpError, match="not a device name"):
        resolve_device("tpu")


def test_a_bad_engine_is_one_error_line(tmp_path, capsys, monkeypatch):
    from cmtp.pipelines import cli

    argv = ["cmtp", "score", str(tmp_path), "--out", str(tmp_path / "out"), "--engine", "int4"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: option engine must be one of torch, onnx, onnx-int8, got 'int4'"]
    assert "Traceback" not in err
