"""CPU inference backends for Hugging Face BERT encoders: ONNX Runtime and OpenVINO, fp32 or int8.

    session = open_backend(model_dir, "onnx-int8", task="feature-extraction", threads=2)
    out = session.run({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})  # numpy

Backends (``BACKENDS``):

- ``onnx``: the model exported to ONNX (``torch.onnx.export``, TorchScript exporter, opset 17,
  dynamic batch and sequence axes), run by ONNX Runtime.
- ``onnx-int8``: that graph with dynamic int8 quantisation (``onnxruntime.quantization.quantize_dynamic``:
  int8 weights, activations quantised per batch at run time; no calibration data).
- ``openvino``: the ONNX graph compiled by OpenVINO.
- ``openvino-int8``: OpenVINO with static int8 quantisation by NNCF (``nncf.quantize``, transformer
  preset), calibrated on ``calibration`` feeds the caller gives (activation ranges come from them).

Exports are made offline from the local model directory (nothing is downloaded) and cached under
``cache_dir`` (default ``runs/cache/backends``, a project-written folder that git ignores), keyed by
a hash of the weights, the task, the backend and, for ``openvino-int8``, the calibration feeds.
``task``: "feature-extraction" (output: last hidden state, (n, L, d) float32) or
"sequence-classification" (output: logits, (n, num_labels) float32).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BACKENDS = ("onnx", "onnx-int8", "openvino", "openvino-int8")
TASKS = {"feature-extraction": "last_hidden_state", "sequence-classification": "logits"}
DEFAULT_CACHE = Path("runs/cache/backends")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _model_key(model_dir: Path, task: str) -> str:
    h = hashlib.sha256(task.encode())
    for f in sorted(model_dir.glob("*")):
        if f.suffix in (".json", ".safetensors", ".bin"):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _feeds_key(feeds: Sequence[dict]) -> str:
    h = hashlib.sha256()
    for f in feeds:
        for name in sorted(f):
            h.update(name.encode())
            h.update(np.ascontiguousarray(f[name]).tobytes())
    return h.hexdigest()[:12]


def _atomic_dir(final: Path, build) -> Path:
    """Run ``build(tmp_dir)`` and rename the folder to ``final`` (another process may win the race)."""
    if final.exists():
        return final
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    try:
        os.replace(tmp, final)
    except OSError:  # a concurrent export finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def export_onnx(model_dir: str | os.PathLike, task: str = "feature-extraction",
                cache_dir: str | os.PathLike = DEFAULT_CACHE) -> Path:
    """The fp32 ONNX file of the BERT model in ``model_dir`` (exported once, then cached)."""
    model_dir = Path(model_dir)
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, not {task!r}")
    folder = Path(cache_dir) / f"{model_dir.name}-{_model_key(model_dir, task)}"

    def build(tmp: Path) -> None:
        import torch
        import transformers
        from transformers import AutoModel, AutoModelForSequenceClassification

        transformers.logging.set_verbosity_error()
        cls = AutoModel if task == "feature-extraction" else AutoModelForSequenceClassification
        kwargs = {"add_pooling_layer": False} if task == "feature-extraction" else {"num_labels": 1}
        model = cls.from_pretrained(str(model_dir), attn_implementation="eager", **kwargs).eval()

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):
                out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
                return out[TASKS[task]]

        ids = torch.ones((2, 8), dtype=torch.int64)
        axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
        axes["output"] = {0: "batch", 1: "sequence"} if task == "feature-extraction" else {0: "batch"}
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(Wrapped(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(tmp / "model.onnx"),
                              input_names=list(INPUTS), output_names=["output"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)

    return _atomic_dir(folder / "onnx", build) / "model.onnx"


def quantize_onnx(fp32: Path) -> Path:
    """The dynamic-int8 version of an exported ONNX file (made once, next to it)."""
    def build(tmp: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(tmp / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)

    return _atomic_dir(fp32.parent.parent / "onnx-int8", build) / "model.onnx"


def openvino_xml(fp32: Path, calibration: Sequence[dict] | None) -> Path:
    """The OpenVINO IR of an exported ONNX file; int8 (NNCF static quantisation) with ``calibration``."""
    name = "openvino" if calibration is None else f"openvino-int8-{_feeds_key(calibration)}"

    def build(tmp: Path) -> None:
        import openvino as ov

        model = ov.convert_model(str(fp32))
        if calibration is not None:
            import logging

            import nncf

            logging.getLogger("nncf").setLevel(logging.ERROR)
            model = nncf.quantize(model, nncf.Dataset(list(calibration)), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(calibration))
        ov.save_model(model, str(tmp / "model.xml"))

    return _atomic_dir(fp32.parent.parent / name, build) / "model.xml"


class OrtSession:
    """An ONNX Runtime CPU session on ``threads`` threads; :meth:`run` -> the model's one output."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = path

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {k: np.asarray(v, dtype=np.int64) for k, v in feeds.items()})[0]


class OpenVinoSession:
    """An OpenVINO CPU compiled model on ``threads`` threads, latency hint; :meth:`run` -> its one output."""

    def __init__(self, path: Path, threads: int):
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                              "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        self.path = path

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = self.request.infer({k: np.asarray(v, dtype=np.int64) for k, v in feeds.items()})
        return np.array(out[self.compiled.output(0)])


def open_backend(model_dir: str | os.PathLike, backend: str, *, task: str = "feature-extraction", threads: int = 2,
                 cache_dir: str | os.PathLike = DEFAULT_CACHE, calibration: Sequence[dict] | None = None):
    """A session running the BERT model in ``model_dir`` on ``backend`` (module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, not {backend!r}")
    if backend == "openvino-int8" and not calibration:
        raise ValueError("openvino-int8 needs calibration feeds (tokenised sample inputs)")
    fp32 = export_onnx(model_dir, task, cache_dir)
    if backend == "onnx":
        return OrtSession(fp32, threads)
    if backend == "onnx-int8":
        return OrtSession(quantize_onnx(fp32), threads)
    return OpenVinoSession(openvino_xml(fp32, calibration if backend == "openvino-int8" else None), threads)
