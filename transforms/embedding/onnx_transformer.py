"""``OnnxTransformer``: an ONNX Runtime session in the place of the Hugging Face model inside
sentence-transformers' ``Transformer`` module (see :mod:`.engines` for why and how the graph is made)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers.modeling_outputs import BaseModelOutput


class OnnxTransformer(torch.nn.Module):
    """Same inputs and the same ``last_hidden_state`` output as the model it replaces, computed by ONNX Runtime
    with the worker's torch thread budget."""

    def __init__(self, path: Path, config):
        super().__init__()
        self.config = config
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **_ignored):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        ids = input_ids.cpu().numpy()
        feed = {n: given[n].cpu().numpy().astype(np.int64) if given[n] is not None else np.zeros_like(ids, np.int64)
                for n in self.input_names}
        return BaseModelOutput(last_hidden_state=torch.from_numpy(self.session.run(None, feed)[0]))
