"""A/B buckets: deterministic assignment by salted hash, and the per-variant report with intervals.

A user lands in a variant by ``u = sha256(salt + ":" + user_id) / 2**256`` (uniform on [0, 1)), and
variants own consecutive slices of [0, 1) by their traffic shares. The same user, salt and shares
give the same variant on every worker and after every restart; changing the salt reshuffles.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields, replace

from pydantic import BaseModel, Field, field_validator

from retriever.candidates import CandidateConfig
from retriever.search import SearchConfig

_TUNABLE = {f.name for f in fields(CandidateConfig)}
# search settings a variant may change: the numbers and switches of SearchConfig
_SEARCH_TUNABLE = {f.name for f in fields(SearchConfig) if f.type in ("float", "int", "bool", float, int, bool)}


class Variant(BaseModel):
    """A named configuration: candidate settings (CandidateConfig fields, popularity half-lives
    included), whether to run the reranking stage, whether merchandising rules apply (off: a
    hold-out that measures what the rules do), and search settings (SearchConfig numbers and
    switches, e.g. ``{"personal_weight": 0.0}`` to compare personalised search with plain)."""

    name: str = Field(min_length=1, max_length=50)
    share: float = Field(gt=0, le=1)
    candidates: dict[str, float] = Field(default_factory=dict)
    rerank: bool = True
    merchandising: bool = True
    search: dict[str, float | bool] = Field(default_factory=dict)

    @field_validator("search")
    @classmethod
    def _known_search_fields(cls, v: dict[str, float | bool]) -> dict[str, float | bool]:
        unknown = set(v) - _SEARCH_TUNABLE
        if unknown:
            raise ValueError(f"unknown search settings {sorted(unknown)}; known: {sorted(_SEARCH_TUNABLE)}")
        return v

    def search_changes(self) -> tuple[tuple[str, float | bool], ...]:
        """The search settings as the pipeline config holds them (typed as SearchConfig's fields)."""
        types = {f.name: f.type for f in fields(SearchConfig)}
        cast = {"int": int, "float": float, "bool": bool, int: int, float: float, bool: bool}
        return tuple(sorted((k, cast[types[k]](v)) for k, v in self.search.items()))

    @field_validator("candidates")
    @classmethod
    def _known_fields(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - _TUNABLE
        if unknown:
            raise ValueError(f"unknown candidate settings {sorted(unknown)}; known: {sorted(_TUNABLE)}")
        return v

    def candidate_config(self, base: CandidateConfig = CandidateConfig()) -> CandidateConfig:
        ints = {f.name for f in fields(CandidateConfig) if f.type in ("int", int)}
        return replace(base, **{k: int(v) if k in ints else v for k, v in self.candidates.items()})


def check_shares(variants: list[Variant]) -> list[Variant]:
    if not variants:
        raise ValueError("at least one variant is needed")
    if abs(sum(v.share for v in variants) - 1.0) > 1e-6:
        raise ValueError(f"variant shares must sum to 1, got {sum(v.share for v in variants):.4f}")
    if len({v.name for v in variants}) != len(variants):
        raise ValueError("variant names must be unique")
    return variants


def bucket(user_id: str, salt: str) -> float:
    """The user's point in [0, 1), uniform over users, fixed for a salt."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(user_id: str, variants: list[Variant], salt: str) -> Variant:
    u, edge = bucket(user_id, salt), 0.0
    for v in variants:
        edge += v.share
        if u < edge:
            return v
    return variants[-1]  # u within rounding of 1.0


@dataclass(frozen=True)
class Rate:
    successes: int
    trials: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.successes / self.trials if self.trials else 0.0


def wilson(successes: int, trials: int, z: float = 1.96) -> Rate:
    """Proportion with its Wilson score interval (95% for z = 1.96); sound for small counts."""
    if trials == 0:
        return Rate(0, 0, 0.0, 1.0)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return Rate(successes, trials, max(0.0, centre - half), min(1.0, centre + half))


def difference(a: Rate, b: Rate, z: float = 1.96) -> tuple[float, float, float]:
    """``b - a`` with a normal-approximation interval (Newcombe's hybrid from the Wilson limits)."""
    d = b.value - a.value
    low = d - z * math.sqrt(((b.value - b.low) / z) ** 2 + ((a.high - a.value) / z) ** 2)
    high = d + z * math.sqrt(((b.high - b.value) / z) ** 2 + ((a.value - a.low) / z) ** 2)
    return d, low, high


OUTCOMES = ("click", "add_to_cart", "purchase")


def ab_report(outcomes: list[tuple[str, str, int, int, int]]) -> dict[str, dict[str, Rate]]:
    """Rows (variant, request_id, clicked, carted, purchased) -> {variant: {outcome: Rate per impression}}."""
    per: dict[str, list[tuple[int, int, int]]] = {}
    for variant, _, *flags in outcomes:
        per.setdefault(variant, []).append(tuple(flags))
    return {v: {o: wilson(sum(r[i] for r in rows), len(rows)) for i, o in enumerate(OUTCOMES)}
            for v, rows in per.items()}


def format_report(report: dict[str, dict[str, Rate]]) -> str:
    """Text table: per variant the rates with 95% CIs, then each variant's difference from the first."""
    if not report:
        return "no impressions logged yet"
    names = sorted(report)
    lines = [f"{'variant':<14}{'impressions':>12}  " + "  ".join(f"{o + ' rate':>26}" for o in OUTCOMES)]
    for v in names:
        cells = [f"{r.value:8.2%} [{r.low:6.2%}, {r.high:6.2%}]" for r in report[v].values()]
        lines.append(f"{v:<14}{report[v]['click'].trials:>12}  " + "  ".join(f"{c:>26}" for c in cells))
    base = names[0]
    for v in names[1:]:
        diffs = [difference(report[base][o], report[v][o]) for o in OUTCOMES]
        cells = [f"{d:+8.2%} [{lo:+6.2%}, {hi:+6.2%}]" for d, lo, hi in diffs]
        lines.append(f"{v + ' - ' + base:<26}  " + "  ".join(f"{c:>26}" for c in cells))
    return "\n".join(lines)
