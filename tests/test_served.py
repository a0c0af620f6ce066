"""What is measured is what is served: the harness's ``semrec`` system and the HTTP route return the
same list, item for item, for the same shoppers on a real Beauty slice replayed through the stores."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.settings import Settings
from evaluation.harness import SEMREC_SYSTEMS
from evaluation.protocol import leave_one_out, sequences_from_reviews
from evaluation.served import Replay
from ranker.pipeline import PipelineConfig

from .conftest import make_app


@pytest.fixture(scope="module")
def replay(beauty_small, embedder, tmp_path_factory):
    catalog, vectors = beauty_small
    sequences, item_ids, user_ids = sequences_from_reviews(catalog.reviews)
    split = leave_one_out(sequences, item_ids, user_ids, seed=0, protocol="cold")
    r = Replay.build(split, catalog.items, vectors, embedder, tmp_path_factory.mktemp("replay"), progress=False)
    yield r
    r.close()


def route_lists(client, split, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    users = split.users if rows is None else split.users[rows]
    out = np.full((len(users), k), -1, dtype=np.int64)
    index = {str(i): n for n, i in enumerate(split.item_ids)}
    for row, u in enumerate(users):
        r = client.get(f"/users/{split.user_ids[u]}/recommendations", params={"k": k})
        assert r.status_code == 200, r.text
        ids = [index[x["item_id"]] for x in r.json()["results"]]
        out[row, : len(ids)] = ids
    return out


def test_the_harness_system_is_the_served_route(replay, embedder, tmp_path):
    settings = Settings(index_dir=tmp_path / "ix", db_path=tmp_path / "unused.db", auth=False)
    # the service with no setting changed runs the config the harness calls semrec
    assert settings.pipeline_config(settings.variants[0]) == PipelineConfig() == SEMREC_SYSTEMS["semrec"]
    svc = replay.svc
    with TestClient(make_app(settings, svc.index, svc.embedder, svc.events, svc.state)) as client:
        for stage in ("valid", "test"):
            if stage == "test":
                replay.advance()
            ids, _ = replay.lists(SEMREC_SYSTEMS["semrec"], 20)
            served = route_lists(client, replay.split, 20)
            assert (ids >= 0).sum(axis=1).min() == 20  # full lists: the comparison covers every slot
            np.testing.assert_array_equal(ids, served)


def test_the_harness_reranks_with_the_served_split_path(beauty_small, embedder, trained_split, tmp_path):
    from ranker.model import Reranker

    catalog, vectors = beauty_small
    sequences, item_ids, user_ids = sequences_from_reviews(catalog.reviews)
    split = leave_one_out(sequences, item_ids, user_ids, seed=0, protocol="cold")
    rr = Reranker(trained_split[0], variant="fp32")
    r = Replay.build(split, catalog.items, vectors, embedder, tmp_path / "replay", reranker=rr, progress=False)
    try:
        assert rr.attached_to(r.svc.index) and len(rr.states) == len(r.svc.index)
        rows = np.arange(min(30, len(split.users)))
        ids, _ = r.lists(SEMREC_SYSTEMS["semrec"], 10, rows=rows)
        plain, _ = r.lists(replace(SEMREC_SYSTEMS["semrec"], use_reranker=False), 10, rows=rows)
        assert (ids != plain).any()  # the reranker ran
        assert len(rr.split._cache) == 0  # from the stored item states, as the service scores them
        settings = Settings(index_dir=tmp_path / "ix", db_path=tmp_path / "unused.db", auth=False)
        svc = r.svc
        with TestClient(make_app(settings, svc.index, svc.embedder, svc.events, svc.state, svc.reranker)) as client:
            served = route_lists(client, split, 10, rows)
        np.testing.assert_array_equal(ids, served)
    finally:
        r.close()


def test_ablations_are_configs_of_the_one_pipeline():
    for name, cfg in SEMREC_SYSTEMS.items():
        assert isinstance(cfg, PipelineConfig), name
        assert set(asdict(cfg)) == set(asdict(PipelineConfig()))
