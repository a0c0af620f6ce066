"""The project's own catalog format: CSV / TSV / JSONL / Parquet files whose columns are named as in
the schema (:mod:`indexer.schema`); only ``item_id`` (items) and ``item_id``/``user_id`` (reviews) are
required. In CSV, ``categories`` is a JSON list or ``"A|B|C"`` and ``attributes`` a JSON object
string; times may be unix seconds or ISO dates. :func:`write_items` / :func:`write_reviews` are the
inverse, so own-format files round-trip. A bad value raises :class:`CatalogFormatError` naming the
file, the line and the column.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .readers import (
    iter_json_lines,
    read_text,
    to_count,
    to_float,
)
from .schema import Catalog, CatalogFormatError, empty_reviews, make_items, make_reviews

OWN_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}

# ----------------------------------------------------------------------------- value converters
# Each takes a raw value (a string from CSV, a JSON/Arrow value otherwise) and raises ValueError(reason).


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _id(v: Any) -> str:
    if _missing(v):
        raise ValueError("missing required field")
    if isinstance(v, float) and v == int(v):  # an integer id that went through a float column
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, str | int | np.integer):
        raise ValueError(f"not an id: {v!r}")
    return str(v).strip()


def _str(v: Any) -> str:
    return "" if _missing(v) else str(v)


def _cats(v: Any) -> list[str]:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, list | tuple):
        return [str(x).strip() for x in v if not _missing(x)]
    if _missing(v):
        return []
    if not isinstance(v, str):
        raise ValueError(f"expected a list of categories, got {v!r}")
    s = v.strip()
    if s.startswith("["):
        try:
            out = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed JSON list: {e.msg}") from None
        if not isinstance(out, list):
            raise ValueError("expected a JSON list")
        return [str(x).strip() for x in out if not _missing(x)]
    return [x.strip() for x in s.split("|") if x.strip()]


def _attrs(v: Any) -> dict[str, str]:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, list):  # Arrow map type: [(key, value), ...]
        v = dict(v)
    if _missing(v):
        return {}
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed JSON object: {e.msg}") from None
    if not isinstance(v, dict):
        raise ValueError(f"expected a JSON object, got {type(v).__name__}")
    return {str(k): (x if isinstance(x, str) else json.dumps(x, ensure_ascii=False))
            for k, x in v.items() if x is not None}


def _float(v: Any) -> float:
    try:
        return to_float(v, "", 0, "")
    except CatalogFormatError as e:
        raise ValueError(e.reason) from None


def _time(v: Any) -> float:
    """Unix seconds, or an ISO date/time string."""
    try:
        return _float(v)
    except ValueError:
        try:
            ts = pd.Timestamp(v)
        except (ValueError, TypeError):
            raise ValueError(f"not a time (unix seconds or ISO date): {str(v)[:40]!r}") from None
        return (ts if ts.tzinfo else ts.tz_localize("UTC")).timestamp()


def _count(v: Any) -> int:
    try:
        return to_count(v, "", 0, "")
    except CatalogFormatError as e:
        raise ValueError(e.reason) from None


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _bool(v: Any) -> bool:
    if _missing(v):
        return True
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    s = str(v).strip().lower()
    if s in _TRUE or s in _FALSE:
        return s in _TRUE
    raise ValueError(f"not a boolean: {v!r}")


_ITEM_FIELDS: dict[str, Callable[[Any], Any]] = {
    "item_id": _id, "title": _str, "description": _str, "brand": _str, "categories": _cats,
    "price": _float, "attributes": _attrs, "in_stock": _bool, "created_at": _time,
}
_REVIEW_FIELDS: dict[str, Callable[[Any], Any]] = {
    "review_id": _str, "item_id": _id, "user_id": _id, "rating": _float, "title": _str, "text": _str,
    "timestamp": _time, "helpful_votes": _count,
}

# ----------------------------------------------------------------------------- own formats


def _format_of(path: Path) -> str:
    fmt = OWN_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise CatalogFormatError(str(path), None, None,
                                 f"unknown extension {path.suffix!r} (expected {', '.join(OWN_EXTENSIONS)})")
    return fmt


def _csv_line_of(text: str, sep: str) -> Callable[[int], int]:
    """Row index -> 1-based line where that data row starts (exact, quoted newlines included)."""
    starts: list[int] = []

    def line_of(i: int) -> int:
        if not starts:
            reader, prev = csv.reader(io.StringIO(text), delimiter=sep), 0
            for row in reader:
                if row:
                    starts.append(prev + 1)
                prev = reader.line_num
        return starts[i + 1] if i + 1 < len(starts) else i + 2

    return line_of


def _read_raw(path: Path, required: Sequence[str]) -> tuple[pd.DataFrame, Callable[[int], int | None]]:
    """Raw values of an own-format file plus a row -> line (or row number) mapping."""
    fmt = _format_of(path)
    if fmt == "csv":
        text = read_text(path)
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        try:
            df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise CatalogFormatError(str(path), None, None, f"unreadable CSV: {e}") from None
        df.columns = [str(c).strip() for c in df.columns]
        for col in required:
            if col not in df.columns:
                raise CatalogFormatError(str(path), 1, col, "missing column")
        return df, _csv_line_of(text, sep)
    if fmt == "parquet":
        if not path.is_file():
            raise CatalogFormatError(str(path), None, None, "no such file")
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several unrelated types
            raise CatalogFormatError(str(path), None, None, f"unreadable Parquet: {e}") from None
        for col in required:
            if col not in df.columns:
                raise CatalogFormatError(str(path), None, col, "missing column")
        return df.astype(object).where(df.notna(), None), lambda i: i + 1
    head = read_text(path).lstrip()[:1] if path.suffix.lower() == ".json" else ""
    if head == "[":  # a JSON array instead of JSON lines: no line numbers, records are numbered
        try:
            recs = json.loads(read_text(path))
        except json.JSONDecodeError as e:
            raise CatalogFormatError(str(path), e.lineno, None, f"malformed JSON: {e.msg}") from None
        if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
            raise CatalogFormatError(str(path), None, None, "expected a list of JSON objects")
        lines: list[int | None] = [None] * len(recs)
    else:
        pairs = list(iter_json_lines(path))
        recs, lines = [r for _, r in pairs], [n for n, _ in pairs]
    df = pd.DataFrame.from_records(recs) if recs else pd.DataFrame(columns=list(required))
    df = df.astype(object).where(df.notna(), None)
    return df, lambda i: lines[i]


def _convert(df: pd.DataFrame, fields: dict[str, Callable], path: Path, line_of: Callable) -> pd.DataFrame:
    out = {}
    for col, fn in fields.items():
        if col not in df.columns:
            if col in ("item_id", "user_id"):
                line = line_of(0) if len(df) else None
                raise CatalogFormatError(str(path), line, col, "missing required field")
            continue
        values, conv = df[col].tolist(), []
        for i, v in enumerate(values):
            try:
                conv.append(fn(v))
            except ValueError as e:
                raise CatalogFormatError(str(path), line_of(i), col, str(e)) from None
        out[col] = conv
    return pd.DataFrame(out, index=range(len(df)))


def read_items(path: str | Path) -> pd.DataFrame:
    """An own-format items file (.csv/.tsv, .jsonl/.json, .parquet) as a schema items frame."""
    path = Path(path)
    df, line_of = _read_raw(path, ["item_id"])
    return make_items(_convert(df, _ITEM_FIELDS, path, line_of))


def read_reviews(path: str | Path) -> pd.DataFrame:
    """An own-format reviews file as a schema reviews frame (``review_id`` derived where missing)."""
    path = Path(path)
    df, line_of = _read_raw(path, ["item_id", "user_id"])
    out = _convert(df, _REVIEW_FIELDS, path, line_of)
    if "review_id" in out:
        pairs = zip(out["user_id"], out["item_id"], strict=True)
        derived = [f"{u}:{i}:{n}" for n, (u, i) in enumerate(pairs)]
        out["review_id"] = [r or d for r, d in zip(out["review_id"], derived, strict=True)]
    return make_reviews(out)


def load_own(items_path: str | Path, reviews_path: str | Path | None = None) -> Catalog:
    """The project's own format: an items file and, optionally, a reviews file."""
    path = Path(items_path)
    df, line_of = _read_raw(path, ["item_id"])
    items = _convert(df, _ITEM_FIELDS, path, line_of)
    reviews = read_reviews(reviews_path) if reviews_path is not None else empty_reviews()
    where = f"items={items_path}" + (f" reviews={reviews_path}" if reviews_path is not None else "")
    return Catalog(make_items(items), reviews, f"own: {where}", stock_known="in_stock" in items.columns)


def _write(df: pd.DataFrame, path: Path) -> None:
    fmt = _format_of(path)
    df = df.copy()
    if fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for rec in df.to_dict("records"):
                rec = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return
    if "attributes" in df:  # dicts with varying keys: JSON strings (Arrow structs would merge the keys)
        df["attributes"] = [json.dumps(a, ensure_ascii=False) for a in df["attributes"]]
    if fmt == "parquet":
        df.to_parquet(path, index=False)
        return
    if "categories" in df:
        df["categories"] = [json.dumps(c, ensure_ascii=False) for c in df["categories"]]
    df.to_csv(path, index=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")


def write_items(items: pd.DataFrame, path: str | Path) -> None:
    """Write an items frame in the own format chosen by the extension (readable by :func:`read_items`)."""
    _write(make_items(items), Path(path))


def write_reviews(reviews: pd.DataFrame, path: str | Path) -> None:
    """Write a reviews frame in the own format chosen by the extension."""
    _write(make_reviews(reviews), Path(path))
