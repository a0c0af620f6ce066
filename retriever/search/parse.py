"""Understood queries: price, brand, category, size / quantity and negations read out of what a
shopper typed, as hard filters and soft boosts.

    "quietwave headphones under $80"   -> text "headphones", brand Quietwave (hard), max_price 80
    "yoga mat 50-100 not lotus ground" -> text "yoga mat", price 50..100, exclude brand Lotus Ground
    "dog shampoo 500 ml without oatmeal" -> text "dog shampoo", size 500 ml (boost), no "oatmeal" in titles

Rules (deterministic; a constructed set with known answers checks them, ``evaluation.parse_eval``):

- price: "under / below / less than / cheaper than / up to / at most / max $X", "$X or less",
  "over / above / more than / at least / from $X", "$X+", "$X and up", "A-B", "$A to $B",
  "between A and B", "around / about $X" (0.8X..1.2X); a bare "$X" / "X dollars" means "up to X".
  A number followed by a unit ("10-12 inch") is a size, never a price. Price bounds are hard filters.
- brand: the longest run of query words equal to a catalog brand's words. It is a hard filter when
  asked for explicitly ("by / from / brand X") or when the brand is distinctive (at least half of
  the items whose title or brand holds those words are that brand's); otherwise a boost. "not /
  without / except / -X" before a brand excludes it (hard).
- category: the longest run equal to a catalog category's words is a boost; "in X" makes it a
  hard filter.
- size / quantity: a number with a unit (ml, l, oz, g, kg, lb, inch, cm, mm, pack, count, pieces,
  W, V, mAh, GB ...) or "pack of N" / "set of N" / "size X": a boost for items whose title or
  attributes state the same quantity; its words stay in the searched text (removing them cost
  MRR@10 on review-headline queries: "9v adapter").
- negation: "not / without / no / except / excluding / -" before a word: items whose title holds the
  word are left out (hard), unless the title itself says the word is absent ("sulfate-free").

The words a hard constraint used are taken out of the searched text; if nothing else is left (e.g. the
query is only "quietwave"), the brand or category words stay in the text.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from indexer.store import ItemIndex
from indexer.table import Filters

from .tokens import fold

_NUM = r"(\d+(?:[.,]\d+)?)"
_CUR = r"(?:\$|usd\s*|€|£|eur\s*)"
_CUR_AFTER = r"(?:\s*(?:dollars?|bucks|usd|eur|euros?))"
UNITS = {"ml": "ml", "milliliter": "ml", "millilitre": "ml", "l": "l", "liter": "l", "litre": "l", "liters": "l",
         "litres": "l", "oz": "oz", "ounce": "oz", "ounces": "oz", "fl oz": "oz", "g": "g", "gram": "g",
         "grams": "g", "kg": "kg", "kilo": "kg", "kilos": "kg", "lb": "lb", "lbs": "lb", "pound": "lb",
         "pounds": "lb", "inch": "inch", "inches": "inch", "in": "inch", "\"": "inch", "cm": "cm", "mm": "mm",
         "ft": "ft", "feet": "ft", "foot": "ft", "pack": "pack", "packs": "pack", "pk": "pack", "count": "count",
         "ct": "count", "pcs": "pieces", "pc": "pieces", "piece": "pieces", "pieces": "pieces", "w": "w",
         "watt": "w", "watts": "w", "v": "v", "volt": "v", "volts": "v", "mah": "mah", "gb": "gb", "tb": "tb",
         "cup": "cup", "cups": "cup", "qt": "qt", "quart": "qt", "person": "person", "people": "person",
         "year": "years", "years": "years", "yr": "years", "yrs": "years", "month": "months", "months": "months",
         "hour": "hours", "hours": "hours", "h": "hours", "day": "days", "days": "days", "x": "x"}
_UNIT = "|".join(sorted((re.escape(u) for u in UNITS), key=len, reverse=True))
_SIZE = re.compile(rf"(?<![\w.])(?:(\d+(?:\.\d+)?)\s*(?:-|–|to)\s*)?(\d+(?:\.\d+)?)\s*(?:-\s*)?({_UNIT})(?![\w])",
                   re.IGNORECASE)
_PACK_OF = re.compile(r"\b(pack|set|box|case)\s+of\s+(\d+)\b", re.IGNORECASE)
_SIZE_WORD = re.compile(r"\bsize\s+(\d+(?:\.\d+)?|xxs|xs|s|m|l|xl|xxl|xxxl|small|medium|large)\b", re.IGNORECASE)
_RANGE = re.compile(rf"(?:between\s+)?{_CUR}?\s*{_NUM}\s*(?:-|–|to|and)\s*{_CUR}?\s*{_NUM}{_CUR_AFTER}?"
                    rf"(?!\s*(?:{_UNIT})\b)(?![\w%])", re.IGNORECASE)
_MAX = re.compile(rf"\b(?:under|below|less\s+than|cheaper\s+than|up\s+to|at\s+most|max(?:imum)?|no\s+more\s+than|"
                  rf"within)\s*{_CUR}?\s*{_NUM}{_CUR_AFTER}?(?!\s*(?:{_UNIT})\b)(?![\w%])", re.IGNORECASE)
_MAX_AFTER = re.compile(rf"{_CUR}?\s*{_NUM}{_CUR_AFTER}?\s+(?:or\s+less|or\s+under|or\s+below|max)\b", re.IGNORECASE)
_MIN = re.compile(rf"\b(?:over|above|more\s+than|at\s+least|from|min(?:imum)?|starting\s+at)\s*{_CUR}?\s*{_NUM}"
                  rf"{_CUR_AFTER}?(?!\s*(?:{_UNIT})\b)(?![\w%])", re.IGNORECASE)
_MIN_AFTER = re.compile(rf"{_CUR}?\s*{_NUM}{_CUR_AFTER}?\s*(?:\+|\s+(?:and|or)\s+(?:up|over|above|more))(?!\w)",
                        re.IGNORECASE)
_AROUND = re.compile(rf"\b(?:around|about|approx(?:imately)?|roughly|~)\s*{_CUR}?\s*{_NUM}{_CUR_AFTER}?"
                     rf"(?!\s*(?:{_UNIT})\b)(?![\w%])", re.IGNORECASE)
_BARE = re.compile(rf"(?:{_CUR}\s*{_NUM}|(?<![\w.]){_NUM}{_CUR_AFTER})(?![\w%])", re.IGNORECASE)
_EXPLICIT_BRAND = ("by", "from", "brand")
_EXPLICIT_CATEGORY = ("in",)
_FREE = re.compile(r"\bfree\b|\bwithout\b|\bno\b|\bnon\b")


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str  # canonical unit (UNITS values) or "size"


@dataclass(frozen=True)
class ParsedQuery:
    """What a query asked for. ``text`` is what retrieval searches; the rest are constraints."""

    query: str
    text: str
    min_price: float | None = None
    max_price: float | None = None
    brand: str | None = None               # hard (catalog spelling)
    category: str | None = None            # hard (catalog spelling)
    boost_brands: tuple[str, ...] = ()
    boost_categories: tuple[str, ...] = ()
    sizes: tuple[Quantity, ...] = ()
    exclude_brands: tuple[str, ...] = ()
    exclude_words: tuple[str, ...] = ()   # folded words no result title may hold
    spans: tuple[tuple[str, str], ...] = field(default=())  # (kind, matched text), for display

    @property
    def has_constraints(self) -> bool:
        return bool(self.spans)

    def filters(self, base: Filters | None = None) -> Filters:
        """The request's filters with the parsed hard ones added (a request's own brand / category
        wins; price bounds intersect)."""
        base = base or Filters()
        lo = [p for p in (base.min_price, self.min_price) if p is not None]
        hi = [p for p in (base.max_price, self.max_price) if p is not None]
        return replace(base, brand=base.brand if base.brand is not None else self.brand,
                       category=base.category if base.category is not None else self.category,
                       min_price=max(lo) if lo else None, max_price=min(hi) if hi else None)


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", fold(text))


def _money(s: str) -> float:
    return float(s.replace(",", "."))


class QueryParser:
    """Parses queries against a catalog's brands and categories (kept in step with its updates)."""

    def __init__(self, index: ItemIndex):
        self.index = index
        self._lock = threading.Lock()
        self._dirty = True
        self._brands: dict[tuple[str, ...], str] = {}
        self._distinct: set[str] = set()
        self._categories: dict[tuple[str, ...], str] = {}
        self._max_len = 1
        index.subscribe(lambda op, labels: setattr(self, "_dirty", True))

    def _refresh(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            with self.index.lock:
                live = [self.index.table.records[i] for i in np.flatnonzero(self.index.table.alive.view)]
            brands: dict[tuple[str, ...], str] = {}
            cats: dict[tuple[str, ...], str] = {}
            per_brand: Counter = Counter()
            for rec in live:
                if rec["brand"].strip():
                    brands.setdefault(tuple(_words(rec["brand"])), rec["brand"].strip())
                for c in rec["categories"]:
                    if c.strip():
                        cats.setdefault(tuple(_words(c)), c.strip())
            holders: Counter = Counter()
            for rec in live:  # items whose title or brand holds each brand's words
                words = set(_words(rec["title"] + " " + rec["brand"]))
                own = tuple(_words(rec["brand"]))
                for key in brands:
                    if key and set(key) <= words:
                        holders[key] += 1
                        per_brand[key] += key == own
            self._brands = {k: v for k, v in brands.items() if k}
            self._distinct = {k for k in self._brands if per_brand[k] >= 0.5 * max(holders[k], 1)}
            self._categories = {k: v for k, v in cats.items() if k}
            self._max_len = max([len(k) for k in (*self._brands, *self._categories)], default=1)

    def parse(self, query: str) -> ParsedQuery:
        """The :class:`ParsedQuery` of ``query`` (see module docstring)."""
        self._refresh()
        spans: list[tuple[str, str]] = []
        rest = " " + query + " "
        lo = hi = None

        def cut(m: re.Match, kind: str) -> None:
            nonlocal rest
            spans.append((kind, m.group(0).strip()))
            # a size stays searched ("9v adapter": "9v" is the best word there); it is masked here only
            # so that its number is not read again as a price
            keep = kind == "size"
            rest = rest[: m.start()] + (" " + "\x00" * len(m.group(0)) if keep else " ") + rest[m.end():]
            if keep:
                kept[len(rest[: m.start()].split())] = m.group(0)

        sizes: list[Quantity] = []
        kept: dict[int, str] = {}
        for m in list(_PACK_OF.finditer(rest))[::-1]:
            sizes.append(Quantity(float(m.group(2)), "pack" if m.group(1).lower() != "set" else "pieces"))
            cut(m, "size")
        for m in list(_SIZE_WORD.finditer(rest))[::-1]:
            v = m.group(1).lower()
            sizes.append(Quantity(float(v), "size") if v[0].isdigit() else Quantity(0.0, "size:" + v))
            cut(m, "size")
        for pattern, kind in ((_AROUND, "around"), (_MAX, "max"), (_MAX_AFTER, "max"), (_MIN, "min"),
                              (_MIN_AFTER, "min"), (_RANGE, "range")):
            for m in list(pattern.finditer(rest))[::-1]:
                if kind == "range":
                    a, b = _money(m.group(1)), _money(m.group(2))
                    if a >= b or (not re.search(rf"{_CUR}|{_CUR_AFTER}|between", m.group(0), re.I)
                                  and not _standalone(rest, m)):
                        continue
                    lo, hi = _tighter(lo, a, max), _tighter(hi, b, min)
                elif kind == "around":
                    v = _money(m.group(1))
                    lo, hi = _tighter(lo, round(0.8 * v, 2), max), _tighter(hi, round(1.2 * v, 2), min)
                elif kind == "max":
                    hi = _tighter(hi, _money(m.group(1)), min)
                else:
                    lo = _tighter(lo, _money(m.group(1)), max)
                cut(m, "price")
        for m in list(_SIZE.finditer(rest))[::-1]:
            unit = UNITS[m.group(3).lower()]
            sizes += [Quantity(float(v), unit) for v in (m.group(2), m.group(1)) if v is not None]
            cut(m, "size")
        for m in list(_BARE.finditer(rest))[::-1]:
            hi = _tighter(hi, _money(m.group(1) or m.group(2)), min)
            cut(m, "price")
        words = _words(rest.replace("\x00", " "))
        out = self._names(words, query)
        text_words = out.pop("text")
        if not text_words:  # the query was only a name: search for it too
            text_words = [w for w in words if w not in {"not", "without", "no", "by", "from", "brand", "in",
                                                        "except", "excluding"}]
        spans += out.pop("spans")
        cut_any = any(not kind.endswith("boost") and kind != "size" for kind, _ in spans)
        if cut_any and sizes:
            text_words += [w for size in kept.values() for w in _words(size)]
        return ParsedQuery(query=query, text=" ".join(text_words) if cut_any else query, min_price=lo, max_price=hi,
                           sizes=tuple(sizes[::-1]), spans=tuple(spans), **out)

    def _names(self, words: list[str], query: str) -> dict:
        """Brands, categories and negations among ``words`` (longest match first, left to right)."""
        text, spans = [], []
        brand = category = None
        boost_b, boost_c, excl_b, excl_w = [], [], [], []
        neg_words = {"not", "without", "no", "except", "excluding", "exclude", "minus"}
        i = 0
        while i < len(words):
            w = words[i]
            negated = (i > 0 and words[i - 1] in neg_words and self._spaced(query, words[i - 1], w)) or (
                w not in neg_words and self._dashed(query, w))
            if w in neg_words and i + 1 < len(words) and self._spaced(query, w, words[i + 1]):
                i += 1
                continue
            found = None
            for n in range(min(self._max_len, len(words) - i), 0, -1):
                key = tuple(words[i: i + n])
                if key in self._brands:
                    found = ("brand", self._brands[key], n, key)
                    break
                if key in self._categories:
                    found = ("category", self._categories[key], n, key)
                    break
            prev = words[i - 1] if i > 0 else ""
            if found and found[0] == "brand":
                _, name, n, key = found
                if negated:
                    excl_b.append(name)
                    spans.append(("not", name))
                elif brand is None and (prev in _EXPLICIT_BRAND or key in self._distinct):
                    brand = name
                    spans.append(("brand", name))
                else:
                    boost_b.append(name)
                    text.extend(words[i: i + n])
                    spans.append(("brand boost", name))
                if prev in _EXPLICIT_BRAND and text and text[-1] == prev:
                    text.pop()
                i += n
                continue
            if found and found[0] == "category" and not negated:
                _, name, n, key = found
                if prev in _EXPLICIT_CATEGORY and category is None:
                    category = name
                    spans.append(("category", name))
                    if text and text[-1] == prev:
                        text.pop()
                else:
                    boost_c.append(name)
                    text.extend(words[i: i + n])
                    spans.append(("category boost", name))
                i += n
                continue
            if negated and not w.isdigit():
                excl_w.append(w)
                spans.append(("not", w))
            else:
                text.append(w)
            i += 1
        return {"text": text, "spans": spans, "brand": brand, "category": category, "boost_brands": tuple(boost_b),
                "boost_categories": tuple(boost_c), "exclude_brands": tuple(excl_b), "exclude_words": tuple(excl_w)}

    @staticmethod
    def _spaced(query: str, neg: str, word: str) -> bool:
        """Is "neg word" written apart ("no fragrance"), not as one hyphenated word ("no-show")?"""
        return re.search(rf"\b{re.escape(neg)}\s+{re.escape(word)}", fold(query)) is not None

    @staticmethod
    def _dashed(query: str, word: str) -> bool:
        """Is ``word`` written as "-word" (a minus sign before it, not a hyphen inside a word)?"""
        return re.search(rf"(?:^|\s)-\s*{re.escape(word)}\b", fold(query)) is not None


def _standalone(text: str, m: re.Match) -> bool:
    """A bare "A-B" is a price range only when it is not glued to a word ("sm-50-100")."""
    return m.start(1) == 0 or not (text[m.start(1) - 1].isalnum() or text[m.start(1) - 1] in "-_.")


def _tighter(old: float | None, new: float, pick) -> float:
    return new if old is None else pick(old, new)


def title_violates(title: str, words: tuple[str, ...]) -> bool:
    """Does a title hold one of the negated ``words`` (not as "word-free" / "no word")?"""
    if not words:
        return False
    folded = fold(title)
    toks = _words(folded)
    for w in words:
        for j, t in enumerate(toks):
            if t in (w, w + "s", w + "es") or (t.endswith("s") and t[:-1] == w):
                around = " ".join(toks[max(0, j - 1): j + 2])
                if not _FREE.search(around):
                    return True
    return False


def size_matches(record: dict, sizes: tuple[Quantity, ...]) -> bool:
    """Does the item's title or attributes state one of ``sizes``?"""
    if not sizes:
        return False
    text = " ".join([record["title"], *(f"{k} {v}" for k, v in record["attributes"].items())])
    have = {(float(v), UNITS[m.group(3).lower()]) for m in _SIZE.finditer(text) for v in m.group(1, 2) if v}
    have |= {(float(m.group(2)), "pack") for m in _PACK_OF.finditer(text)}
    return any((q.value, q.unit) in have for q in sizes)
