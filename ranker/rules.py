"""Merchandising rules: the last step of every pipeline, after ranking.

A rule belongs to one or more placements (``PLACEMENTS``) and does one thing:

    pin    put one item at a slot (1-based) of the list
    boost  move items matching its conditions up: each item's position score 1 - i/n (i = 0 for the
           first of n) gains ``strength``, so 1.0 puts every match above every other item, 0.25
           moves a match about a quarter of the list up
    bury   the same, down
    block  leave matching items out

Conditions (all given ones must hold): item ids, brand, a category at any level, an attribute
``key=value``, a price band ``[min_price, max_price]`` (case-insensitive text matches). A rule is
live from ``start`` to ``end`` (unix seconds, either open), when ``enabled``, and in the A/B
variants it names (none: every variant); a variant with ``merchandising`` off gets no rules.

The list a rule works on is the ranking's, fetched ``k`` deeper when a boost, bury or block is
live (a boost can lift an item from just below the fold, a block leaves the list full). Each item
carries the ids of the rules that placed or moved it (``Ranked.rules``). The scores stay the
ranking's: a pinned item the ranking did not retrieve takes the score of the slot it fills.
Everything but :func:`live_rules` and :func:`apply_to` is a pure function of lists.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.results import empty
from indexer.store import ItemIndex

PLACEMENTS = ("home", "similar", "search", "also_bought", "bought_together", "trending")
ACTIONS = ("pin", "boost", "bury", "block")


@dataclass(frozen=True)
class Rule:
    """One merchandising rule (see the module docstring). ``id`` is the store's (0: not stored yet)."""

    action: str
    placements: tuple[str, ...]
    id: int = 0
    name: str = ""
    item_ids: tuple[str, ...] = ()     # pin: the pinned item (exactly one); else a condition
    slot: int = 1                      # pin: 1-based slot
    brand: str | None = None
    category: str | None = None
    attribute: tuple[str, str] | None = None
    min_price: float | None = None
    max_price: float | None = None
    strength: float = 0.5              # boost / bury, in (0, 1]
    start: float | None = None
    end: float | None = None
    variants: tuple[str, ...] = ()
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action: unknown action {self.action!r}; use one of {list(ACTIONS)}")
        unknown = set(self.placements) - set(PLACEMENTS)
        if not self.placements or unknown:
            raise ValueError(f"placements: {sorted(unknown) or 'none given'}; use some of {list(PLACEMENTS)}")
        if self.action == "pin" and (len(self.item_ids) != 1 or self.slot < 1):
            raise ValueError("item_ids: a pin names exactly one item, and its slot is 1 or more")
        if self.action != "pin" and not self.has_condition():
            raise ValueError("conditions: a boost, bury or block needs one (item_ids, brand, category, attribute "
                             "or a price band)")
        if self.action in ("boost", "bury") and not 0 < self.strength <= 1:
            raise ValueError(f"strength: must be in (0, 1], got {self.strength}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end: must be after start")

    def has_condition(self) -> bool:
        return bool(self.item_ids) or any(v is not None for v in (self.brand, self.category, self.attribute,
                                                                  self.min_price, self.max_price))

    def live(self, placement: str, now: float, variant: str) -> bool:
        return (self.enabled and placement in self.placements and (self.start is None or self.start <= now)
                and (self.end is None or now < self.end) and (not self.variants or variant in self.variants))


def matches(rule: Rule, record: Mapping) -> bool:
    """Whether an item record (``ItemTable`` row) meets every condition of ``rule``."""
    if rule.item_ids and record["item_id"] not in rule.item_ids:
        return False
    if rule.brand is not None and (record.get("brand") or "").casefold() != rule.brand.casefold():
        return False
    if rule.category is not None and rule.category.casefold() not in {c.casefold() for c in record.get("categories")
                                                                      or []}:
        return False
    if rule.attribute is not None:
        key, value = (s.casefold() for s in rule.attribute)
        attrs = {str(k).casefold(): str(v).casefold() for k, v in (record.get("attributes") or {}).items()}
        if attrs.get(key) != value:
            return False
    price = record.get("price")
    price = math.nan if price is None else float(price)
    if rule.min_price is not None and not price >= rule.min_price:  # an unknown price is in no band
        return False
    return not (rule.max_price is not None and not price <= rule.max_price)


@dataclass
class Ranked:
    """A placement's list: ``labels`` int64 / ``scores`` float32 ``(k,)`` (-1 / -inf padding) and,
    per live slot, the ids of the rules applied to it."""

    labels: np.ndarray
    scores: np.ndarray
    rules: list[list[int]] = field(default_factory=list)


def depths(rules: Sequence[Rule], k: int, most: int = 8):
    """The depths to rank at for ``rules``, shallowest first: ``k`` when no rule removes or lifts
    items (pins only), else 2k, 4k, ... up to ``most * k``. The caller stops at the first depth
    whose ruled list is full, or whose ranking ran out (:func:`enough`)."""
    if not any(r.action != "pin" for r in rules):
        yield k
        return
    depth = 2 * k
    while depth <= most * k:
        yield depth
        depth *= 2


def enough(ruled: np.ndarray, k: int, ranked: np.ndarray, depth: int) -> bool:
    """Whether the ruled list's labels hold ``k`` items, or the ranking's (``ranked``, asked for
    ``depth``) had fewer than asked: deeper holds no more."""
    return int((np.asarray(ruled) >= 0).sum()) >= k or int((np.asarray(ranked) >= 0).sum()) < depth


def reorder(labels: np.ndarray, scores: np.ndarray, records: Sequence[Mapping], rules: Sequence[Rule], k: int,
            pins: Mapping[int, tuple[int, Mapping]] | None = None) -> Ranked:
    """Apply ``rules`` to one ranked list -> the first ``k``.

    labels (m,) int64 best first (-1 padding ignored), scores (m,) float32, ``records[i]`` the item
    of ``labels[i]``; ``pins``: rule id -> (label, record) of the pinned item, for the pins whose
    item may be shown here (the caller checks it is live and passes the request's filters). A block
    wins over a pin.
    """
    pins = pins or {}
    live = [i for i, lab in enumerate(labels.tolist()) if lab >= 0]
    blocks = [r for r in rules if r.action == "block"]
    moves = [r for r in rules if r.action in ("boost", "bury")]
    keep = [i for i in live if not any(matches(r, records[i]) for r in blocks)]
    n = max(len(keep), 1)
    position, applied = {}, {}
    for rank, i in enumerate(keep):
        hit = [r for r in moves if matches(r, records[i])]
        position[i] = 1.0 - rank / n + sum(r.strength if r.action == "boost" else -r.strength for r in hit)
        applied[int(labels[i])] = [r.id for r in hit]
    order = sorted(keep, key=lambda i: -position[i])  # stable: ties keep the ranking's order
    out_l = [int(labels[i]) for i in order]
    out_s = [float(scores[i]) for i in order]
    for rule in sorted((r for r in rules if r.action == "pin" and r.id in pins), key=lambda r: (r.slot, r.id)):
        lab, record = pins[rule.id]
        if any(matches(r, record) for r in blocks):
            continue
        if lab in out_l:
            j = out_l.index(lab)
            out_l.pop(j)
            score = out_s.pop(j)
        else:
            slot = min(rule.slot, len(out_s)) - 1
            score = out_s[slot] if slot >= 0 else 0.0
        at = min(rule.slot - 1, len(out_l))
        out_l.insert(at, lab)
        out_s.insert(at, score)
        applied[lab] = [*applied.get(lab, []), rule.id]
    labels_k, scores_k = (a[0] for a in empty(1, k))
    labels_k[: min(k, len(out_l))], scores_k[: min(k, len(out_l))] = out_l[:k], out_s[:k]
    return Ranked(labels_k, scores_k, [applied.get(lab, []) for lab in out_l[:k]])


class RuleBook:
    """The rules in force, as last read from the rule store (``ranker.rulestore``); each worker
    re-reads them when the store's version moves (``refresh``)."""

    def __init__(self, rules: Sequence[Rule] = (), version: int = 0):
        self._lock = threading.Lock()
        self.rules, self.version = list(rules), version

    def replace(self, rules: Sequence[Rule], version: int) -> None:
        with self._lock:
            self.rules, self.version = list(rules), version

    def live(self, placement: str, now: float, variant: str) -> list[Rule]:
        with self._lock:
            return [r for r in self.rules if r.live(placement, now, variant)]


def live_rules(book: RuleBook | None, placement: str, variant: str, enabled: bool, now: float) -> list[Rule]:
    """The rules of ``placement`` in force for ``variant`` at ``now`` (none when ``enabled`` is off)."""
    if book is None or not enabled:
        return []
    return book.live(placement, now, variant)


def carry(before: np.ndarray, after: np.ndarray, values: Sequence, filler) -> list:
    """``values`` aligned with the live labels of ``before`` re-aligned with the live labels of
    ``after`` (a reordered list); labels new to ``after`` (pinned) get ``filler``."""
    at = {int(lab): j for j, lab in enumerate(before.tolist()) if lab >= 0}
    return [values[at[lab]] if lab in at and at[lab] < len(values) else filler for lab in after.tolist() if lab >= 0]


def apply_to(index: ItemIndex, labels: np.ndarray, scores: np.ndarray, rules: Sequence[Rule], k: int,
             allowed: np.ndarray | None = None) -> Ranked:
    """:func:`reorder` over the index's records; a pin's item takes its slot when it is live and
    ``allowed`` (bool ``(n_labels,)``: the request's filters, minus what this list must not show)."""
    with index.lock:
        records = [index.table.records[lab] if lab >= 0 else {} for lab in labels.tolist()]
        pins = {}
        for r in rules:
            lab = index.table.label_of.get(r.item_ids[0]) if r.action == "pin" else None
            if lab is not None and (allowed[lab] if allowed is not None else index.table.alive.view[lab]):
                pins[r.id] = (lab, index.table.records[lab])
    return reorder(labels, scores, records, rules, k, pins)
