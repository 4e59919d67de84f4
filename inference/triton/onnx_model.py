"""Triton python-backend model that serves an ONNX file with onnxruntime.

Copied as ``model.py`` into each version of the *runtime* repository that the local launcher
builds, because the tritonserver bundled with nvidia-pytriton carries only the python
backend. It serves the same ``model.onnx``, with the same inputs, outputs and dims, as the
stock image's onnxruntime backend does from the canonical repository. Triton's dynamic batcher
hands ``execute`` several requests at once: they are concatenated into one onnxruntime call,
which is where batching pays.

This file runs inside the backend's stub process, not in Cascade's: it imports only numpy,
onnxruntime and Triton's ``triton_python_backend_utils``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return str(value) if value else default


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "intra_op_thread_count", "1"))
        options.inter_op_num_threads = int(_parameter(config, "inter_op_thread_count", "1"))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [spec["name"] for spec in config["input"]]
        self.outputs = [spec["name"] for spec in config["output"]]
        # A model that does not batch (its inputs have lengths of their own, as the one-call
        # ranking model's users and candidates) runs each request on its own.
        self.batching = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests: list[Any]) -> list[Any]:
        if not self.batching:
            return [self._run_one(request) for request in requests]
        arrays = [
            [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs]
            for request in requests
        ]
        sizes = [request_arrays[0].shape[0] for request_arrays in arrays]
        feed = {
            name: np.concatenate([request_arrays[k] for request_arrays in arrays])
            for k, name in enumerate(self.inputs)
        }
        try:
            results = self.session.run(self.outputs, feed)
        except Exception as e:  # onnxruntime raises its own types; report, don't crash the stub
            error = pb_utils.TritonError(f"onnxruntime failed: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(result[start : start + size]))
                for name, result in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def _run_one(self, request: Any) -> Any:
        feed = {
            name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            for name in self.inputs
        }
        try:
            results = self.session.run(self.outputs, feed)
        except Exception as e:  # as in execute: report, don't crash the stub
            return pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(f"onnxruntime failed: {e}")
            )
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(name, np.ascontiguousarray(result))
                for name, result in zip(self.outputs, results, strict=True)
            ]
        )
