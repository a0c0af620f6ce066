"""Readers for the public Amazon review formats, each returning a schema-coerced :class:`Catalog`.

* :func:`load_amazon2014` - 2014 "5-core" review JSON lines (+ optional 2014 metadata)
* :func:`load_amazon2018` - 2018 review JSON lines + ``meta_*.json.gz``
* :func:`load_amazon2023` - 2023 review JSONL + meta JSONL, joined on ``parent_asin``
* :func:`load_beauty`     - RecBole-style ``item_description.csv`` + ``Beauty.txt`` sequences
* :func:`load_unisrec`    - UniSRec-processed ``X.text`` / ``X.*.inter`` / ``X.item2index`` / ``X.user2index``

Loaders are faithful: they keep what the source holds (duplicate metadata rows, HTML in titles,
reviews of items without metadata). :func:`indexer.clean.clean_catalog` fixes and counts all that.
Every parse problem raises :class:`CatalogFormatError` naming the file, the 1-based line and the field.
The low-level line readers at the top are shared with :mod:`indexer.loaders`.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import json
import math
import re
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from .schema import Catalog, CatalogFormatError, make_items, make_reviews

# ----------------------------------------------------------------------------- low-level readers


def open_bytes(path: str | Path) -> IO[bytes]:
    """Open a plain or gzip file (detected by magic bytes) for binary reading."""
    path = Path(path)
    if not path.is_file():
        raise CatalogFormatError(str(path), None, None, "no such file")
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _decode(raw: bytes, path: str | Path, line: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CatalogFormatError(
            str(path), line, None, f"not valid UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1}"
        ) from None
    return text.lstrip("\ufeff") if line == 1 else text


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line (newline stripped), decoding UTF-8 strictly."""
    try:
        with open_bytes(path) as f:
            for n, raw in enumerate(f, 1):
                yield n, _decode(raw, path, n).rstrip("\r\n")
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise CatalogFormatError(str(path), None, None, f"corrupt gzip file: {e}") from None


def read_text(path: str | Path) -> str:
    """The whole file as text; a non-UTF-8 byte raises with its line number."""
    with open_bytes(path) as f:
        data = f.read()
    try:
        return data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise CatalogFormatError(
            str(path), line, None, f"not valid UTF-8: byte 0x{data[e.start]:02x} at column {col}"
        ) from None


def iter_json_lines(path: str | Path, *, python_literals: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank JSON-lines record.

    ``python_literals`` also accepts Python dict literals (the 2014 metadata files are written that way).
    """
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            rec = None
            if python_literals:
                with contextlib.suppress(ValueError, SyntaxError):
                    rec = ast.literal_eval(line)
            if rec is None:
                reason = f"malformed JSON: {e.msg} at column {e.colno}"
                raise CatalogFormatError(str(path), n, None, reason) from None
        if not isinstance(rec, dict):
            raise CatalogFormatError(str(path), n, None, f"expected a JSON object, got {type(rec).__name__}")
        yield n, rec


def req_id(rec: dict, key: str, path: str | Path, line: int) -> str:
    """A required id field: a non-empty string or integer."""
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, str | int) or not str(v).strip():
        why = "missing required field" if v is None or v == "" else f"not an id: {v!r}"
        raise CatalogFormatError(str(path), line, key, why)
    return str(v).strip()


def to_float(v: Any, path: str | Path, line: int, field: str) -> float:
    """None/"" -> NaN; numbers and numeric strings (``"1,234"`` allowed) -> float; anything else raises."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return math.nan
    if isinstance(v, bool):
        raise CatalogFormatError(str(path), line, field, f"not a number: {v!r}")
    if isinstance(v, int | float | np.integer | np.floating):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip().replace(",", ""))
        except ValueError:
            pass
    raise CatalogFormatError(str(path), line, field, f"not a number: {str(v)[:60]!r}")


def to_count(v: Any, path: str | Path, line: int, field: str) -> int:
    x = to_float(v, path, line, field)
    if math.isnan(x):
        return 0
    if x < 0 or x != int(x):
        raise CatalogFormatError(str(path), line, field, f"not a vote count: {v!r}")
    return int(x)


def text_of(v: Any) -> str:
    """Free text from a string, a list of strings (joined by spaces) or None."""
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return " ".join(text_of(x) for x in v if x is not None).strip()
    return v if isinstance(v, str) else str(v)


_PRICE = re.compile(r"^\s*(?:US)?\s*\$?\s*(\d[\d,]*(?:\.\d+)?)")


def parse_price(v: Any) -> float:
    """Lenient price: ``12.99``, ``"$12.99"``, ``"$10.00 - $15.00"`` (lower bound); garbage -> NaN."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v) if v >= 0 else math.nan
    if isinstance(v, str) and len(v) < 40 and (m := _PRICE.match(v)):
        return float(m.group(1).replace(",", ""))
    return math.nan


def parse_date(v: Any) -> float:
    """Unix seconds from a date string like ``"March 3, 2020"`` or ISO; NaN when unparseable."""
    if not isinstance(v, str) or not v.strip() or len(v) > 40:
        return math.nan
    s = v.strip()
    for fmt in ("%B %d, %Y", "%b %d, %Y", "%Y-%m-%d", "%d %B %Y"):
        try:
            return datetime.strptime(s, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return math.nan


def str_dict(v: Any) -> dict[str, str]:
    """A metadata dict as ``dict[str, str]``: keys lose a trailing ``:``, empty values are dropped."""
    if not isinstance(v, dict):
        return {}
    out = {}
    for k, x in v.items():
        key = str(k).strip().rstrip(":").strip()
        if x is None or key == "":
            continue
        val = x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
        if val.strip():
            out[key] = val.strip()
    return out


def str_list(v: Any) -> list[str]:
    """A category list: strings kept in order; nested lists (2014 metadata) flattened, duplicates dropped."""
    if isinstance(v, str):
        return [v] if v.strip() else []
    if not isinstance(v, list | tuple):
        return []
    out: list[str] = []
    for x in v:
        for s in str_list(x):
            if s not in out:
                out.append(s)
    return out


def _items_from_reviews(reviews: pd.DataFrame) -> pd.DataFrame:
    return make_items(pd.DataFrame({"item_id": pd.unique(reviews["item_id"])}))


def _source(kind: str, note: str = "", **paths: Any) -> str:
    where = " ".join(f"{k}={v}" for k, v in paths.items() if v is not None)
    return f"{kind}: {where}" + (f" ({note})" if note else "")


# ----------------------------------------------------------------------------- Amazon 2014 / 2018


def _read_2014_2018_reviews(path: str | Path, year: int) -> pd.DataFrame:
    rows = []
    for n, rec in iter_json_lines(path):
        if year == 2014:
            helpful = rec.get("helpful")
            if helpful is not None and not (isinstance(helpful, list) and len(helpful) == 2):
                raise CatalogFormatError(str(path), n, "helpful", f"expected [up, total], got {helpful!r}")
            votes = to_count(helpful[0] if helpful else None, path, n, "helpful")
        else:
            votes = to_count(rec.get("vote"), path, n, "vote")
        rows.append({
            "item_id": req_id(rec, "asin", path, n),
            "user_id": req_id(rec, "reviewerID", path, n),
            "rating": to_float(rec.get("overall"), path, n, "overall"),
            "title": text_of(rec.get("summary")),
            "text": text_of(rec.get("reviewText")),
            "timestamp": to_float(rec.get("unixReviewTime"), path, n, "unixReviewTime"),
            "helpful_votes": votes,
        })
    if not rows:
        raise CatalogFormatError(str(path), None, None, "no reviews in file")
    return make_reviews(rows)


def _read_2014_2018_meta(path: str | Path) -> pd.DataFrame:
    rows = []
    for n, rec in iter_json_lines(path, python_literals=True):
        details = str_dict(rec.get("details"))
        attrs = {k: v for k, v in details.items() if k != "ASIN"}
        if isinstance(rec.get("salesRank"), dict):  # 2014: {"Beauty": 1234}
            attrs.update({f"salesRank {k}": str(v) for k, v in rec["salesRank"].items()})
        for key in ("main_cat", "tech1", "tech2"):
            if isinstance(rec.get(key), str) and rec[key].strip() and len(rec[key]) < 200:
                attrs[key] = rec[key].strip()
        rows.append({
            "item_id": req_id(rec, "asin", path, n),
            "title": text_of(rec.get("title")),
            "description": " ".join(s for s in (text_of(rec.get("description")),
                                                 text_of(rec.get("feature"))) if s),
            "brand": text_of(rec.get("brand")),
            "categories": str_list(rec.get("category", rec.get("categories"))),
            "price": parse_price(rec.get("price")),
            "attributes": attrs,
            "created_at": parse_date(rec.get("date") or details.get("Date First Available")),
        })
    return make_items(rows)


def load_amazon2014(reviews_path: str | Path, meta_path: str | Path | None = None) -> Catalog:
    """2014 5-core reviews (``reviews_X_5.json.gz``); with no metadata, items are the reviewed ASINs
    with empty text (their text has to come from the reviews)."""
    reviews = _read_2014_2018_reviews(reviews_path, 2014)
    if meta_path is None:
        return Catalog(_items_from_reviews(reviews), reviews,
                       _source("amazon2014", "no item metadata: items are the reviewed asins, text comes "
                               "from their reviews", reviews=reviews_path), stock_known=False)
    return Catalog(_read_2014_2018_meta(meta_path), reviews,
                   _source("amazon2014", reviews=reviews_path, meta=meta_path), stock_known=False)


def load_amazon2018(reviews_path: str | Path, meta_path: str | Path | None = None) -> Catalog:
    """2018 reviews (``X_5.json``) + ``meta_X.json.gz``. Items are all metadata rows as stored
    (duplicates and HTML included); without metadata, the reviewed ASINs with empty text."""
    reviews = _read_2014_2018_reviews(reviews_path, 2018)
    if meta_path is None:
        return Catalog(_items_from_reviews(reviews), reviews,
                       _source("amazon2018", "no item metadata", reviews=reviews_path), stock_known=False)
    return Catalog(_read_2014_2018_meta(meta_path), reviews,
                   _source("amazon2018", reviews=reviews_path, meta=meta_path), stock_known=False)


# ----------------------------------------------------------------------------- Amazon 2023


def load_amazon2023(reviews_path: str | Path, meta_path: str | Path | None = None) -> Catalog:
    """2023 review JSONL + meta JSONL; ``item_id`` is ``parent_asin`` (the join key), times in seconds."""
    rows = []
    for n, rec in iter_json_lines(reviews_path):
        key = "parent_asin" if rec.get("parent_asin") not in (None, "") else "asin"
        rows.append({
            "item_id": req_id(rec, key, reviews_path, n),
            "user_id": req_id(rec, "user_id", reviews_path, n),
            "rating": to_float(rec.get("rating"), reviews_path, n, "rating"),
            "title": text_of(rec.get("title")),
            "text": text_of(rec.get("text")),
            "timestamp": to_float(rec.get("timestamp"), reviews_path, n, "timestamp") / 1000.0,
            "helpful_votes": to_count(rec.get("helpful_vote"), reviews_path, n, "helpful_vote"),
        })
    if not rows:
        raise CatalogFormatError(str(reviews_path), None, None, "no reviews in file")
    reviews = make_reviews(rows)
    if meta_path is None:
        return Catalog(_items_from_reviews(reviews), reviews,
                       _source("amazon2023", "no item metadata", reviews=reviews_path), stock_known=False)
    items = []
    for n, rec in iter_json_lines(meta_path):
        details = str_dict(rec.get("details"))
        attrs = dict(details)
        if isinstance(rec.get("main_category"), str) and rec["main_category"].strip():
            attrs["main_category"] = rec["main_category"].strip()
        items.append({
            "item_id": req_id(rec, "parent_asin", meta_path, n),
            "title": text_of(rec.get("title")),
            "description": " ".join(s for s in (text_of(rec.get("description")),
                                                 text_of(rec.get("features"))) if s),
            "brand": text_of(rec.get("store")),
            "categories": str_list(rec.get("categories")),
            "price": parse_price(rec.get("price")),
            "attributes": attrs,
            "created_at": parse_date(details.get("Date First Available")),
        })
    return Catalog(make_items(items), reviews,
                   _source("amazon2023", "item_id = parent_asin", reviews=reviews_path, meta=meta_path),
                   stock_known=False)


# ----------------------------------------------------------------------------- RecBole / UniSRec


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
