"""The learned parts of the served pipeline as versioned artifacts (``semrec train`` writes them,
``semrec serve`` loads the newest).

    runs/models/v0003/
        mf/            item factors + item ids (retriever.mf.MFModel)
        ease/          pruned EASE item-item weights + item ids (retriever.ease.EASEModel)
        encoder/       the history encoder (retriever.encoder.HistoryEncoder)
        ranking/       the learned ranking (ranker.ltr.RankingModel)
        reranker/      the reranker whose logit the ranking reads as a feature (a copy of its
                       version directory, ranker.model.Reranker); served with the ranking
        model_card.json, MODEL_CARD.md   data, sizes, settings, validation figures, seconds

A version is written to a temporary folder and renamed when complete, so a server never loads a
half-written one. Every part is optional: what a version lacks, the pipeline runs without.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from retriever.ease import EASEModel
from retriever.encoder import HistoryEncoder
from retriever.mf import MFModel

from .ltr import RankingModel
from .model import Reranker, RerankerLoadError
from .versions import next_version, version_dirs

CARD = "model_card.json"


class ModelsLoadError(RuntimeError):
    """A models directory is missing or unusable; names the path and what is wrong."""


@dataclass
class Models:
    mf: MFModel | None = None
    encoder: HistoryEncoder | None = None
    ranking: RankingModel | None = None
    ease: EASEModel | None = None
    reranker: Reranker | None = None
    card: dict = field(default_factory=dict)
    path: Path | None = None


def newest_version(root: str | os.PathLike) -> Path:
    """``root`` itself when it holds a model card, else its newest ``vNNNN`` version."""
    p = Path(root)
    if (p / CARD).is_file():
        return p
    if not p.is_dir():
        raise ModelsLoadError(f"models at {p}: no such directory; train them with `semrec train`")
    versions = version_dirs(p)
    if not versions:
        raise ModelsLoadError(f"models at {p}: no {CARD} and no vNNNN versions inside; run `semrec train`")
    return versions[-1]


def load_models(root: str | os.PathLike) -> Models:
    path = newest_version(root)
    try:
        card = json.loads((path / CARD).read_text())
        return Models(mf=MFModel.load(path / "mf") if (path / "mf").is_dir() else None,
                      encoder=HistoryEncoder.load(path / "encoder") if (path / "encoder").is_dir() else None,
                      ranking=RankingModel.load(path / "ranking") if (path / "ranking").is_dir() else None,
                      ease=EASEModel.load(path / "ease") if (path / "ease").is_dir() else None,
                      reranker=Reranker(path / "reranker") if (path / "reranker").is_dir() else None,
                      card=card, path=path)
    except (OSError, ValueError, KeyError, RerankerLoadError) as e:
        raise ModelsLoadError(f"models at {path}: {e}") from e


def prune_versions(root: str | os.PathLike, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` versions under ``root`` (a server holds its version in
    memory, so removing its files does not disturb it). Returns the removed directories."""
    versions = version_dirs(root)
    gone = versions[:-keep] if keep > 0 else versions
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone


def save_models(models: Models, root: str | os.PathLike, card: dict) -> Path:
    """Publish ``models`` as the next version under ``root`` (atomically). Returns its directory."""
    root = Path(root)
    final = next_version(root)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, part in (("mf", models.mf), ("encoder", models.encoder), ("ease", models.ease),
                       ("ranking", models.ranking)):
        if part is not None:
            part.save(tmp / name)
    if models.reranker is not None:  # the ranking was fitted on this reranker's logits: they travel together
        shutil.copytree(models.reranker.path, tmp / "reranker", ignore=shutil.ignore_patterns(".tmp-*"))
    card = {"version": final.name, **card}
    (tmp / CARD).write_text(json.dumps(card, indent=1, default=str))
    (tmp / "MODEL_CARD.md").write_text(card_markdown(card))
    os.replace(tmp, final)
    return final


def card_markdown(card: dict) -> str:
    lines = [f"# semrec models {card.get('version', '')}", "", f"Command: `{card.get('command', '')}`", "",
             f"Data: {card.get('data', {})}", ""]
    for part in ("mf", "encoder", "ease", "reranker", "ranking"):
        if part in card.get("parts", {}):
            lines += [f"## {part}", "", "```", json.dumps(card["parts"][part], indent=1, default=str)[:4000], "```", ""]
    return "\n".join(lines)
