"""Low-level readers shared by the catalog loaders: byte streams (plain or gzip), decoded lines and
JSON lines with 1-based line numbers, and value parsers (ids, floats, counts, prices, dates, string
lists and dicts) that raise :class:`CatalogFormatError` naming the file, the line and the field."""

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
from pathlib import Path
from typing import IO, Any

import numpy as np

from .schema import CatalogFormatError


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
