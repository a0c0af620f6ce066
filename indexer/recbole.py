"""Readers for RecBole-style atomic files, each returning a schema-coerced :class:`Catalog`.

* :func:`load_beauty`  - ``item_description.csv`` + ``Beauty.txt`` sequences (Amazon Beauty 2014)
* :func:`load_unisrec` - UniSRec-processed ``X.text`` / ``X.*.inter`` / ``X.item2index`` / ``X.user2index``
"""

from __future__ import annotations

import ast
import math
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from .amazon import _source
from .readers import (
    read_text,
)
from .schema import Catalog, CatalogFormatError, make_items, make_reviews


def _recbole_header(line: str) -> list[str]:
    """``item_id:token\\ttitle:token_seq`` -> ``["item_id", "title"]``."""
    return [c.split(":", 1)[0].strip() for c in line.split("\t")]


def _token_seq(v: str) -> list[str]:
    """RecBole token_seq of quoted names (``'Beauty', "Women's"``) or a plain comma list."""
    if not v.strip():
        return []
    try:
        out = ast.literal_eval(f"[{v}]")
        if all(isinstance(x, str) for x in out):
            return [x.strip() for x in out if x.strip()]
    except (ValueError, SyntaxError):
        pass
    return [x.strip().strip("'\"") for x in v.split(",") if x.strip()]


def _read_recbole_items(path: Path) -> pd.DataFrame:
    text = read_text(path)
    first = text.split("\n", 1)[0]
    cols = _recbole_header(first)
    if "item_id" not in cols:
        raise CatalogFormatError(str(path), 1, "item_id", f"missing column (header: {first[:120]!r})")
    df = pd.read_csv(StringIO(text), sep="\t", dtype=str, keep_default_na=False, header=0, names=cols)
    empty = df.index[df["item_id"].str.strip() == ""]
    if len(empty):
        raise CatalogFormatError(str(path), int(empty[0]) + 2, "item_id", "missing required field")
    price = pd.to_numeric(df["price"], errors="coerce") if "price" in df else pd.Series(np.nan, df.index)
    if "price" in df and (bad := df.index[price.isna() & (df["price"].str.strip() != "")]).size:
        reason = f"not a number: {df['price'][bad[0]]!r}"
        raise CatalogFormatError(str(path), int(bad[0]) + 2, "price", reason)
    extra = [c for c in ("sales_type", "sales_rank") if c in df]
    attrs = [{c: (str(int(float(r[c]))) if c == "sales_rank" and _isnum(r[c]) else r[c])
              for c in extra if r[c].strip()} for r in df[extra].to_dict("records")]
    return make_items(pd.DataFrame({
        "item_id": df["item_id"].str.strip(),
        "title": df.get("title", ""),
        "brand": df.get("brand", ""),
        "categories": [_token_seq(v) for v in df["categories"]] if "categories" in df else None,
        "price": price,
        "attributes": attrs,
    }))


def _isnum(v: str) -> bool:
    try:
        return math.isfinite(float(v))
    except ValueError:
        return False


def load_beauty(path: str | Path) -> Catalog:
    """Folder with ``item_description.csv`` (RecBole, tab-separated) and ``Beauty.txt`` (``user item``
    per line, chronological per user). Reviews keep the file order; no timestamps, no text."""
    folder = Path(path)
    items = _read_recbole_items(folder / "item_description.csv")
    seq = folder / "Beauty.txt"
    if not seq.is_file():
        txts = sorted(p for p in folder.glob("*.txt"))
        if len(txts) != 1:
            raise CatalogFormatError(str(seq), None, None, "no interaction file (user item per line)")
        seq = txts[0]
    users, item_ids = [], []
    for n, line in enumerate(read_text(seq).split("\n"), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise CatalogFormatError(str(seq), n, "item_id" if len(parts) == 1 else None,
                                     f"expected 'user item', got {line[:80]!r}")
        users.append(parts[0])
        item_ids.append(parts[1])
    reviews = make_reviews(pd.DataFrame({"user_id": users, "item_id": item_ids}))
    return Catalog(items, reviews, _source("beauty", "bare interactions in file order, no timestamps",
                                           dir=folder), stock_known=False)


def _read_index(path: Path) -> dict[str, str]:
    """``X.item2index`` / ``X.user2index``: ``id \\t index`` -> {index: id}."""
    out: dict[str, str] = {}
    for n, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].strip().isdigit():
            raise CatalogFormatError(str(path), n, None, f"expected 'id<TAB>index', got {line[:80]!r}")
        out[parts[1].strip()] = parts[0].strip()
    return out


def _read_inter(path: Path) -> dict[str, list[tuple[list[str], str, int]]]:
    """RecBole ``.inter`` with ``user_id, item_id_list, item_id`` -> {user: [(history, target, line)]}."""
    rows: dict[str, list[tuple[list[str], str, int]]] = {}
    lines = read_text(path).split("\n")
    cols = _recbole_header(lines[0])
    for need in ("user_id", "item_id_list", "item_id"):
        if need not in cols:
            raise CatalogFormatError(str(path), 1, need, "missing column")
    iu, ih, it = cols.index("user_id"), cols.index("item_id_list"), cols.index("item_id")
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(cols):
            raise CatalogFormatError(str(path), n, None, f"expected {len(cols)} tab-separated fields")
        rows.setdefault(parts[iu].strip(), []).append((parts[ih].split(), parts[it].strip(), n))
    return rows


def _sequence(rows: dict[str, list], user: str) -> list[tuple[str, str, int]]:
    """One user's full sequence as ``(item_index, file, line)`` from train prefixes + valid + test targets.

    Histories are truncated (to 50 in UniSRec), so the test row alone loses the oldest items of long
    sequences; the train rows hold every prefix, so first history + all targets is the whole sequence.
    """
    train = rows["train"].get(user, [])
    if len(train) > 1 and len(train[0][0]) > len(train[-1][0]):
        train = train[::-1]  # stored longest prefix first
    ordered = [("train", r) for r in train]
    ordered += [(s, r) for s in ("valid", "test") for r in rows[s].get(user, [])]
    if not ordered:
        return []
    split0, (hist0, _, line0) = ordered[0]
    seq = [(i, split0, line0) for i in hist0] + [(r[1], s, r[2]) for s, r in ordered]
    last_split, (hist, target, line) = ordered[-1]
    ids = [x[0] for x in seq]
    if ids[len(ids) - 1 - len(hist):] != hist + [target]:  # inconsistent split files: trust the last row
        seq = [(i, last_split, line) for i in hist + [target]]
    return seq


def load_unisrec(path: str | Path, name: str | None = None) -> Catalog:
    """UniSRec folder: ``X.text``, ``X.item2index``, ``X.user2index``, ``X.{train,valid,test}.inter``.

    Items: ``item_id`` = ASIN, ``title`` = the ``.text`` text. Reviews: each user's full chronological
    sequence as bare interactions (``text`` empty, timestamp NaN), users in order of first appearance.
    """
    folder = Path(path)
    if name is None:
        texts = sorted(folder.glob("*.text"))
        if len(texts) != 1:
            raise CatalogFormatError(str(folder), None, None, f"expected one *.text file, found {len(texts)}")
        name = texts[0].stem
    f = {k: folder / f"{name}.{k}" for k in ("text", "item2index", "user2index",
                                             "train.inter", "valid.inter", "test.inter")}
    ids, titles = [], []
    lines = read_text(f["text"]).split("\n")
    start = 1 if ":token" in lines[0] else 0
    for n, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        item, _, text = line.partition("\t")
        if not item.strip():
            raise CatalogFormatError(str(f["text"]), n, "item_id", "missing required field")
        ids.append(item.strip())
        titles.append(text)
    items = make_items(pd.DataFrame({"item_id": ids, "title": titles}))
    item_of, user_of = _read_index(f["item2index"]), _read_index(f["user2index"])
    rows = {s: _read_inter(f[f"{s}.inter"]) for s in ("train", "valid", "test")}
    users = list(dict.fromkeys([*rows["train"], *rows["valid"], *rows["test"]]))
    out_users, out_items = [], []
    for u in users:
        if u not in user_of:
            split, line = next((s, rows[s][u][0][2]) for s in rows if u in rows[s])
            raise CatalogFormatError(str(f[f"{split}.inter"]), line, "user_id", f"{u} not in user2index")
        for idx, split, line in _sequence(rows, u):
            if idx not in item_of:
                reason = f"{idx} not in item2index"
                raise CatalogFormatError(str(f[f"{split}.inter"]), line, "item_id", reason)
            out_users.append(user_of[u])
            out_items.append(item_of[idx])
    reviews = make_reviews(pd.DataFrame({"user_id": out_users, "item_id": out_items}))
    return Catalog(items, reviews, _source("unisrec", "bare interactions, sequences rebuilt from the splits",
                                           dir=folder, name=name), stock_known=False)
