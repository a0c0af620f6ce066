"""Clean a loaded :class:`Catalog` and count every change.

:func:`clean_catalog` returns the cleaned catalog and a :class:`CleaningReport`. Nothing is dropped
without being counted: ``items_out == items_in - sum(items_dropped) + sum(items_added)`` and
``reviews_out == reviews_in - sum(reviews_dropped)`` (checked when the report is built).

Steps, in order (a row is counted under the first reason that drops it):

items
  * ``duplicate_id`` - a repeated ``item_id``; the first row is kept (dropped)
  * HTML fragments in title / description / brand / categories / attributes: tags stripped (script and
    style with their contents, unclosed trailing tags too), entities unescaped (counted per field, kept)
  * whitespace collapsed to single spaces in every text field (not counted)
  * an empty title is recovered from the other fields (counted by source, kept): the description's
    first sentence (cut at ``TITLE_CHARS``), else brand and the most specific category. Magazine 2018's
    metadata titles are HTML fragments with no text (93% empty after cleaning): without this its
    lists would show bare ids, and editions of one magazine could not be told as one title
  * ``stub`` - with ``unknown_items="stub"``, an empty item for each unknown ``item_id`` in the reviews
    (added, so its reviews can give it text)
  * ``no_text`` - no title, description, brand or categories and no review with a text or headline
    (dropped; its reviews are dropped as ``item_dropped``)
  * missing title / description / brand / price / categories, counted over the output (kept)

reviews
  * HTML in title / text, cleaned as for items (kept)
  * ``duplicate_review_id`` - a repeated ``review_id`` (later rows dropped)
  * ``duplicate_content`` - same user, item, text and timestamp (later rows dropped; only for rows with
    a known timestamp, since repeated bare interactions without time are legitimate repeat purchases)
  * ``unknown_item`` - ``item_id`` not among the items (dropped), or ``unknown_item_stubbed`` (kept)
  * ``item_dropped`` - the review's item was dropped for having no text
  * ``empty_text`` - an empty body: a bare interaction, kept and counted over the output
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import pandas as pd

from .schema import Catalog, make_items, make_reviews

__all__ = ["CleaningReport", "clean_catalog", "clean_text"]

ITEM_DROP_REASONS = ("duplicate_id", "no_text")
ITEM_ADD_REASONS = ("stub",)
ITEM_HTML_FIELDS = ("title", "description", "brand", "categories", "attributes")
ITEM_MISSING_FIELDS = ("title", "description", "brand", "price", "categories")
REVIEW_DROP_REASONS = ("duplicate_review_id", "duplicate_content", "unknown_item", "item_dropped")
REVIEW_HTML_FIELDS = ("title", "text")
REVIEW_FLAGS = ("empty_text", "unknown_item_stubbed")
N_EXAMPLES = 5
TITLE_CHARS = 80  # a recovered title is cut at a word boundary within this many characters
TITLE_SOURCES = ("description", "brand_category")

_LABELS = {
    "duplicate_id": "duplicate item id (first kept)",
    "no_text": "no usable text at all",
    "stub": "stub item for an unknown item id",
    "duplicate_review_id": "duplicate review id",
    "duplicate_content": "duplicate user+item+text+time",
    "unknown_item": "item id not in items",
    "item_dropped": "item dropped (no text)",
    "empty_text": "empty text (bare interaction)",
    "unknown_item_stubbed": "item id not in items (stubbed)",
    "description": "from the description's first sentence",
    "brand_category": "from brand and category",
}

# ----------------------------------------------------------------------------- text cleaning

_BLOCK = r"br|p|div|li|ul|ol|dl|dt|dd|tr|td|th|table|tbody|thead|tfoot|h[1-6]|hr|section|article|header|" \
         r"footer|blockquote|pre|form|iframe|noscript|html|head|body|title|meta|link"
_INLINE = r"a|b|i|u|s|em|strong|span|font|small|big|sub|sup|img|abbr|cite|code|strike|mark|label|center|" \
          r"wbr|nobr|input|button|select|option"
_TAGS = re.compile(
    r"<!--.*?(?:-->|\Z)"  # comments
    r"|<(script|style)\b.*?(?:</\1\s*>|\Z)"  # script / style with their contents
    rf"|<(/?)({_BLOCK})\b[^<>]*(?:>|\Z)"  # block tags -> a space; an unclosed trailing tag too
    rf"|</?(?:{_INLINE})\b[^<>]*(?:>|\Z)",  # inline tags -> nothing
    re.IGNORECASE | re.DOTALL,
)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-f]{1,6}|[a-z][a-z0-9]{1,31});", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def _tag(m: re.Match) -> str:
    return " " if m.group(1) or m.group(3) else ""


def clean_text(s: str) -> tuple[str, bool]:
    """``(cleaned, had_html)``: tags stripped, entities unescaped, whitespace collapsed."""
    had = False
    if "<" in s:
        t = _TAGS.sub(_tag, s)
        had, s = t != s, t
    if "&" in s and _ENTITY.search(s):
        for _ in range(2):  # "&amp;quot;" is double-escaped
            s = html.unescape(s)
            if not _ENTITY.search(s):
                break
        had = True
        if "<" in s:
            s = _TAGS.sub(_tag, s)
    return _SPACE.sub(" ", s).strip(), had


def _clean_column(values: Iterable[str]) -> tuple[list[str], list[bool]]:
    out, flags = [], []
    for v in values:
        c, h = clean_text(v) if v else ("", False)
        out.append(c)
        flags.append(h)
    return out, flags


def _clean_list(values: list[str]) -> tuple[list[str], bool]:
    out, had = [], False
    for v in values:
        c, h = clean_text(str(v))
        had |= h
        if c:
            out.append(c)
    return out, had


def _clean_dict(d: dict[str, str]) -> tuple[dict[str, str], bool]:
    out, had = {}, False
    for k, v in d.items():
        ck, hk = clean_text(str(k))
        cv, hv = clean_text(str(v))
        had |= hk or hv
        if ck and cv:
            out[ck] = cv
    return out, had


_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\"'])[.!?](?=\s+[A-Z0-9\"'(]|\s*$)")


def title_from(description: str, brand: str, categories: list[str]) -> tuple[str, str | None]:
    """``(title, source)`` for an item without one: the description's first sentence (cut at a word
    boundary within ``TITLE_CHARS``, with an ellipsis), else brand and last category; ``("", None)``."""
    if description:
        end = _SENTENCE_END.search(description)
        first = (description[: end.start()] if end else description).strip()
        if len(first) > TITLE_CHARS:
            cut = first[:TITLE_CHARS].rsplit(" ", 1)[0].rstrip(",;:-– ")
            first = cut + "…"
        if first:
            return first, "description"
    parts = [p for p in (brand, categories[-1] if categories else "") if p]
    if parts:
        return " – ".join(dict.fromkeys(parts)), "brand_category"
    return "", None


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True)
class CleaningReport:
    """What :func:`clean_catalog` changed: counts by reason and a few example ids per reason.

    ``examples`` keys are ``"items.<reason>"`` / ``"reviews.<reason>"``; review examples are review ids,
    except ``unknown_item`` / ``unknown_item_stubbed`` which list the unknown item ids.
    """

    source: str
    items_in: int
    items_out: int
    reviews_in: int
    reviews_out: int
    items_dropped: dict[str, int] = field(default_factory=dict)
    items_added: dict[str, int] = field(default_factory=dict)
    items_html: dict[str, int] = field(default_factory=dict)
    items_titled: dict[str, int] = field(default_factory=dict)
    items_missing: dict[str, int] = field(default_factory=dict)
    reviews_dropped: dict[str, int] = field(default_factory=dict)
    reviews_html: dict[str, int] = field(default_factory=dict)
    reviews_flagged: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    unknown_items: str = "drop"

    def __post_init__(self) -> None:
        items = self.items_in - sum(self.items_dropped.values()) + sum(self.items_added.values())
        reviews = self.reviews_in - sum(self.reviews_dropped.values())
        if items != self.items_out or reviews != self.reviews_out:
            raise ValueError(f"cleaning counts do not add up: items {items} != {self.items_out} "
                             f"or reviews {reviews} != {self.reviews_out}")

    @property
    def items_dropped_total(self) -> int:
        return sum(self.items_dropped.values())

    @property
    def reviews_dropped_total(self) -> int:
        return sum(self.reviews_dropped.values())

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        d = asdict(self)
        d["items_dropped_total"] = self.items_dropped_total
        d["reviews_dropped_total"] = self.reviews_dropped_total
        return d

    def to_text(self) -> str:
        """A human-readable multi-line report."""

        def row(kind: str, label: str, n: int, key: str | None = None, of: int | None = None) -> str:
            share = f" ({100 * n / of:.1f}%)" if of else ""
            eg = self.examples.get(key or "", [])
            eg_text = f"  e.g. {', '.join(eg[:3])}" if eg and n else ""
            return f"  {kind:<8} {label:<34} {n:>9,}{share}{eg_text}"

        name = self.source or "(unnamed catalog)"
        lines = [f"Cleaning report: {name}  [unknown_items={self.unknown_items}]",
                 f"items    {self.items_in:>9,} in -> {self.items_out:>9,} out  "
                 f"(dropped {self.items_dropped_total:,}, added {sum(self.items_added.values()):,})"]
        lines += [row("dropped", _LABELS[k], n, f"items.{k}") for k, n in self.items_dropped.items()]
        lines += [row("added", _LABELS[k], n, f"items.{k}") for k, n in self.items_added.items()]
        lines += [row("cleaned", f"HTML in {k}", n, f"items.html_{k}") for k, n in self.items_html.items()]
        lines += [row("titled", _LABELS[k], n, f"items.title_{k}") for k, n in self.items_titled.items()]
        lines += [row("missing", k, n, None, self.items_out) for k, n in self.items_missing.items()]
        lines.append(f"reviews  {self.reviews_in:>9,} in -> {self.reviews_out:>9,} out  "
                     f"(dropped {self.reviews_dropped_total:,})")
        lines += [row("dropped", _LABELS[k], n, f"reviews.{k}") for k, n in self.reviews_dropped.items()]
        lines += [row("cleaned", f"HTML in {k}", n, f"reviews.html_{k}")
                  for k, n in self.reviews_html.items()]
        lines += [row("kept", _LABELS[k], n, f"reviews.{k}", self.reviews_out if k == "empty_text" else None)
                  for k, n in self.reviews_flagged.items()]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- cleaning


def _examples(values: Iterable) -> list[str]:
    return [str(v) for v in list(dict.fromkeys(values))[:N_EXAMPLES]]


def clean_catalog(catalog: Catalog, *, unknown_items: str = "drop") -> tuple[Catalog, CleaningReport]:
    """Clean ``catalog`` (see the module docstring) and report every change.

    ``unknown_items``: ``"drop"`` drops reviews of items not in ``catalog.items``; ``"stub"`` adds an
    empty item for each instead (kept if its reviews give it text).
    """
    if unknown_items not in ("drop", "stub"):
        raise ValueError(f"unknown_items must be 'drop' or 'stub', not {unknown_items!r}")
    items, reviews = make_items(catalog.items), make_reviews(catalog.reviews)
    n_items, n_reviews = len(items), len(reviews)
    i_drop = dict.fromkeys(ITEM_DROP_REASONS, 0)
    i_add = dict.fromkeys(ITEM_ADD_REASONS, 0)
    i_html = dict.fromkeys(ITEM_HTML_FIELDS, 0)
    r_drop = dict.fromkeys(REVIEW_DROP_REASONS, 0)
    r_html = dict.fromkeys(REVIEW_HTML_FIELDS, 0)
    r_flag = dict.fromkeys(REVIEW_FLAGS, 0)
    examples: dict[str, list[str]] = {}

    # items: duplicates, then text
    dup = items["item_id"].duplicated(keep="first")
    i_drop["duplicate_id"] = int(dup.sum())
    examples["items.duplicate_id"] = _examples(items.loc[dup, "item_id"])
    items = items.loc[~dup].reset_index(drop=True)
    for col in ("title", "description", "brand"):
        items[col], flags = _clean_column(items[col])
        i_html[col] = sum(flags)
        examples[f"items.html_{col}"] = _examples(items["item_id"][flags])
    for col, fn in (("categories", _clean_list), ("attributes", _clean_dict)):
        pairs = [fn(v) for v in items[col]]
        items[col] = [p[0] for p in pairs]
        flags = [p[1] for p in pairs]
        i_html[col] = sum(flags)
        examples[f"items.html_{col}"] = _examples(items["item_id"][flags])

    # items without a title: recover one from the other fields
    i_title = dict.fromkeys(TITLE_SOURCES, 0)
    untitled = items.index[items["title"] == ""]
    for row in untitled:
        title, source = title_from(items.at[row, "description"], items.at[row, "brand"], items.at[row, "categories"])
        if source is not None:
            items.at[row, "title"] = title
            i_title[source] += 1
            examples.setdefault(f"items.title_{source}", []).append(items.at[row, "item_id"])
    for source in TITLE_SOURCES:
        examples[f"items.title_{source}"] = examples.get(f"items.title_{source}", [])[:N_EXAMPLES]

    # reviews: text, duplicates, unknown items
    for col in REVIEW_HTML_FIELDS:
        reviews[col], flags = _clean_column(reviews[col])
        r_html[col] = sum(flags)
        examples[f"reviews.html_{col}"] = _examples(reviews["review_id"][flags])

    def drop_reviews(mask: pd.Series, reason: str, example_col: str = "review_id") -> pd.DataFrame:
        r_drop[reason] = int(mask.sum())
        examples[f"reviews.{reason}"] = _examples(reviews.loc[mask, example_col])
        return reviews.loc[~mask].reset_index(drop=True)

    reviews = drop_reviews(reviews["review_id"].duplicated(keep="first"), "duplicate_review_id")
    timed = reviews["timestamp"].notna()
    content = reviews[["user_id", "item_id", "text", "timestamp"]].duplicated(keep="first") & timed
    reviews = drop_reviews(content, "duplicate_content")
    unknown = ~reviews["item_id"].isin(set(items["item_id"]))
    if unknown_items == "drop":
        reviews = drop_reviews(unknown, "unknown_item", "item_id")
    else:
        stubs = pd.unique(reviews.loc[unknown, "item_id"])
        i_add["stub"] = len(stubs)
        r_flag["unknown_item_stubbed"] = int(unknown.sum())
        examples["items.stub"] = examples["reviews.unknown_item_stubbed"] = _examples(stubs)
        items = pd.concat([items, make_items(pd.DataFrame({"item_id": stubs}))], ignore_index=True)

    # items with no usable text at all (and their reviews)
    own = ((items["title"] != "") | (items["description"] != "") | (items["brand"] != "")
           | items["categories"].map(bool))
    voiced = set(reviews.loc[(reviews["text"] != "") | (reviews["title"] != ""), "item_id"])
    mute = ~(own | items["item_id"].isin(voiced))
    i_drop["no_text"] = int(mute.sum())
    examples["items.no_text"] = _examples(items.loc[mute, "item_id"])
    reviews = drop_reviews(reviews["item_id"].isin(set(items.loc[mute, "item_id"])), "item_dropped")
    items = items.loc[~mute].reset_index(drop=True)

    # what is still missing in the output (kept)
    i_missing = {col: int((items[col] == "").sum()) for col in ("title", "description", "brand")}
    i_missing["price"] = int(items["price"].isna().sum())
    i_missing["categories"] = int((~items["categories"].map(bool)).sum())
    i_missing = {k: i_missing[k] for k in ITEM_MISSING_FIELDS}
    empty = reviews["text"] == ""
    r_flag["empty_text"] = int(empty.sum())
    examples["reviews.empty_text"] = _examples(reviews.loc[empty, "review_id"])

    out = Catalog(make_items(items), make_reviews(reviews), catalog.source, catalog.stock_known)
    report = CleaningReport(
        source=catalog.source, items_in=n_items, items_out=len(out.items), reviews_in=n_reviews,
        reviews_out=len(out.reviews), items_dropped=i_drop, items_added=i_add, items_html=i_html, items_titled=i_title,
        items_missing=i_missing, reviews_dropped=r_drop, reviews_html=r_html, reviews_flagged=r_flag,
        examples={k: v for k, v in examples.items() if v}, unknown_items=unknown_items,
    )
    return out, report
