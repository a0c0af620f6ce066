"""The learned candidate sources of a personal list (MF, the history encoder, EASE; ``semrec
train``): each one's query for a batch of profiles. Each model then answers the same two calls,
``candidates(index, query, n, allowed)`` (its run) and ``scores_of(index, query, labels)`` (its
score of given candidates, a feature of the learned ranking); callers of those hold the locks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retriever.candidates import CandidateConfig
from retriever.profiles import Profile

from .services import Services


def user_queries(svc: Services, c: CandidateConfig, profiles: Sequence[Profile]) -> list[dict[str, np.ndarray]]:
    """Per profile, the query of each learned source that is loaded and on, computed for the whole
    batch at once: ``mf`` its fold-in (f,), ``encoder`` its history state (d,), ``ease`` its item
    scores over the model's rows (r,); a source without an answer for the profile is left out."""
    out = [{} for _ in profiles]

    def put(name: str, values) -> None:
        for q, v in zip(out, values):
            if v is not None:
                q[name] = v

    if svc.mf is not None and c.mf > 0:
        put("mf", svc.mf.user_vectors([p.history for p in profiles],
                                      [[p.actions.get(i, "view") for i in p.history] for p in profiles]))
    if svc.encoder is not None and c.encoder > 0:
        with svc.index.lock:
            hist = [[svc.index.table.label_of[i] for i in p.history if i in svc.index.table.label_of]
                    for p in profiles]
        put("encoder", svc.encoder.user_vectors(hist))
    if svc.ease is not None and c.ease > 0:
        put("ease", svc.ease.user_scores([p.history for p in profiles]))
    return out

