"""Embedder backends (ONNX Runtime, OpenVINO; fp32 / int8): the packaged MiniLM exported offline gives
the vectors the torch model gives, on real Beauty documents; exports are cached; bad names fail."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.documents import documents
from indexer.embed import load_embedder
from indexer.loaders import load_dataset
from indexer.schema import UnknownNameError

from .conftest import shared_data


@pytest.fixture(scope="module")
def beauty_docs(tiny_catalog):
    items = load_dataset("beauty", shared_data("amazon-beauty-2014")).items
    return documents(items.iloc[:48].reset_index(drop=True)) + documents(tiny_catalog.items)


@pytest.fixture(scope="module")
def reference(embedder, beauty_docs):
    return embedder.encode(beauty_docs)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("backends")


@pytest.mark.parametrize("backend,min_cos", [("onnx", 0.9999), ("onnx-int8", 0.97), ("openvino", 0.999)])
def test_backend_vectors_match_torch(backend, min_cos, beauty_docs, reference, cache, one_thread):
    e = load_embedder("minilm", backend=backend, threads=1, cache_dir=cache)
    assert (e.name, e.backend, e.dim) == ("minilm", backend, 384)  # the index manifest sees the same model
    v = e.encode(beauty_docs, batch_size=16)
    assert v.shape == reference.shape and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    cos = (v * reference).sum(1)
    assert cos.min() > min_cos  # per text, against sentence-transformers on torch
    # the same nearest documents for each document (what retrieval reads)
    assert np.mean((v @ v.T).argsort(1)[:, -2] == (reference @ reference.T).argsort(1)[:, -2]) > 0.9
    assert e.encode([]).shape == (0, 384)


def test_exports_are_cached_and_made_offline(cache, one_thread):
    load_embedder("minilm", backend="onnx", threads=1, cache_dir=cache)
    onnx = list(cache.glob("*/onnx/model.onnx"))
    assert len(onnx) == 1
    before = onnx[0].stat().st_mtime_ns
    load_embedder("minilm", backend="onnx", threads=1, cache_dir=cache)
    assert onnx[0].stat().st_mtime_ns == before and not list(cache.glob("*/.tmp-*"))


def test_unknown_backend_or_model_is_a_clear_error(cache):
    with pytest.raises(UnknownNameError, match="unknown backend 'tpu'.*known: torch, onnx"):
        load_embedder("minilm", backend="tpu")
    with pytest.raises(UnknownNameError, match=r"model 'use-multilingual'; known: minilm \(what backend 'onnx'"):
        load_embedder("use-multilingual", backend="onnx", cache_dir=cache)


@pytest.mark.slow
def test_openvino_int8_calibrated_on_demo_documents(beauty_docs, reference, cache, one_thread):
    e = load_embedder("minilm", backend="openvino-int8", threads=1, cache_dir=cache)
    cos = (e.encode(beauty_docs) * reference).sum(1)
    assert cos.min() > 0.97  # 0.993 when written
