"""The merchandising rule editor's routes (``ranker.rules``, kept in ``ranker.rulestore``): list,
create, replace and delete rules, and read the audit trail. Every route needs an admin key (when
the service requires keys); each change is recorded with the key's name and the editor the body
names. A change applies at once on this worker and within ``follow_seconds`` on the others."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ranker.rules import ACTIONS, PLACEMENTS, Rule
from ranker.rulestore import AuditEntry, RuleStore

from ..deps import Components, ComponentsDep, unprocessable
from ..models import ShortText
from ..security import require

router = APIRouter(dependencies=[require("admin")])
RuleId = Annotated[int, Path(ge=1, le=2**62)]
Action = Literal[ACTIONS]  # type: ignore[valid-type]
Placement = Literal[PLACEMENTS]  # type: ignore[valid-type]
ItemText = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class AttributeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=200)
    value: str = Field(min_length=1, max_length=1000)


class RuleIn(BaseModel):
    """One rule (see ``ranker.rules``): pin an item to a slot, or boost / bury / block the items
    meeting every condition given, in some placements, optionally from ``start`` to ``end``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=100)
    action: Action
    placements: list[Placement] = Field(min_length=1, max_length=len(PLACEMENTS))
    item_ids: list[ItemText] = Field(default_factory=list, max_length=200,
                                     description="pin: the one item; else: a condition (any of these items)")
    slot: int = Field(1, ge=1, le=100, description="pin: the 1-based slot")
    brand: ShortText | None = None
    category: ShortText | None = Field(None, description="any level of the category path")
    attribute: AttributeIn | None = None
    min_price: float | None = Field(None, ge=0, le=1e9)
    max_price: float | None = Field(None, ge=0, le=1e9)
    strength: float = Field(0.5, gt=0, le=1, description="boost / bury: 1 moves every match past every other item")
    start: float | None = Field(None, ge=0, le=1e11, description="unix seconds; none: from now")
    end: float | None = Field(None, ge=0, le=1e11, description="unix seconds; none: until removed")
    variants: list[ShortText] = Field(default_factory=list, max_length=20,
                                      description="A/B variants it applies in; none: every variant")
    enabled: bool = True
    editor: str = Field("", max_length=100, description="who is editing, for the audit trail (the API key's "
                                                       "name is recorded too)")


class RuleOut(BaseModel):
    id: int
    name: str
    action: str
    placements: list[str]
    item_ids: list[str]
    slot: int
    brand: str | None
    category: str | None
    attribute: AttributeIn | None
    min_price: float | None
    max_price: float | None
    strength: float
    start: float | None
    end: float | None
    variants: list[str]
    enabled: bool
    live: bool = Field(description="enabled and within its start and end now")

    @classmethod
    def of(cls, rule: Rule, now: float) -> RuleOut:
        attr = None if rule.attribute is None else AttributeIn(key=rule.attribute[0], value=rule.attribute[1])
        live = rule.enabled and (rule.start is None or rule.start <= now) and (rule.end is None or now < rule.end)
        return cls(**{**vars(rule), "attribute": attr, "placements": list(rule.placements),
                      "item_ids": list(rule.item_ids), "variants": list(rule.variants)}, live=live)


class RulesOut(BaseModel):
    rules: list[RuleOut]
    version: int = Field(description="moves with every change")
    placements: list[str]
    variants: list[str] = Field(description="the configured A/B variants")


class AuditOut(BaseModel):
    seq: int
    ts: float
    actor: str = Field(description="the editor named in the change and the API key it came with")
    action: Literal["create", "update", "delete"]
    rule_id: int
    before: RuleOut | None
    after: RuleOut | None


class AuditLogOut(BaseModel):
    entries: list[AuditOut] = Field(description="newest first")


def _store(c: Components) -> RuleStore:
    if c.rule_store is None:
        raise HTTPException(503, detail="this server runs without a rule store (it needs an event log)")
    return c.rule_store


def _rule(body: RuleIn, c: Components) -> Rule:
    """The rule of ``body``, or a 422 naming the field."""
    unknown = sorted(set(body.variants) - {v.name for v in c.settings.variants})
    if unknown:
        raise unprocessable("body", "variants", f"unknown variants {unknown}; configured: "
                                                f"{[v.name for v in c.settings.variants]}")
    missing = [i for i in body.item_ids if c.svc.index.table.get(i) is None]
    if body.action == "pin" and missing:
        raise unprocessable("body", "item_ids", f"unknown item ids: {missing[:10]}")
    if body.min_price is not None and body.max_price is not None and body.min_price > body.max_price:
        raise unprocessable("body", "max_price", "max_price is below min_price")
    fields = body.model_dump(exclude={"editor", "attribute"})
    try:
        return Rule(**{**fields, "placements": tuple(body.placements), "item_ids": tuple(body.item_ids),
                       "variants": tuple(body.variants),
                       "attribute": None if body.attribute is None else (body.attribute.key, body.attribute.value)})
    except ValueError as e:
        field, _, msg = str(e).partition(": ")
        raise unprocessable("body", field if msg else "rule", msg or str(e)) from None


def _actor(request: Request, editor: str) -> str:
    key = getattr(request.state, "api_key", None)
    who = f"key {key.name}" if key is not None else "no key"
    return f"{editor.strip()} ({who})" if editor.strip() else who


def _changed(c: Components) -> None:
    c.refresh_rules()  # this worker at once; the others at their next follow


@router.get("/rules", response_model=RulesOut)
def list_rules(c: ComponentsDep) -> RulesOut:
    """Every rule, enabled or not, with whether it is live now."""
    store, now = _store(c), time.time()
    return RulesOut(rules=[RuleOut.of(r, now) for r in store.rules()], version=store.version(),
                    placements=list(PLACEMENTS), variants=[v.name for v in c.settings.variants])


@router.post("/rules", response_model=RuleOut, status_code=201)
def create_rule(body: RuleIn, c: ComponentsDep, request: Request) -> RuleOut:
    rule = _store(c).create(_rule(body, c), _actor(request, body.editor))
    _changed(c)
    return RuleOut.of(rule, time.time())


@router.put("/rules/{rule_id:int}", response_model=RuleOut)
def replace_rule(rule_id: RuleId, body: RuleIn, c: ComponentsDep, request: Request) -> RuleOut:
    rule = _store(c).update(rule_id, _rule(body, c), _actor(request, body.editor))
    if rule is None:
        raise HTTPException(404, detail=f"rule {rule_id} not found")
    _changed(c)
    return RuleOut.of(rule, time.time())


@router.delete("/rules/{rule_id:int}", status_code=204)
def delete_rule(rule_id: RuleId, c: ComponentsDep, request: Request,
                editor: Annotated[str, Query(max_length=100, description="who is deleting it")] = "") -> Response:
    if not _store(c).delete(rule_id, _actor(request, editor)):
        raise HTTPException(404, detail=f"rule {rule_id} not found")
    _changed(c)
    return Response(status_code=204)


@router.get("/rules/audit", response_model=AuditLogOut)
def audit(c: ComponentsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
          rule_id: Annotated[int | None, Query(ge=1, le=2**62)] = None) -> AuditLogOut:
    """Who changed what: every create, update and delete, newest first (of one rule with ``rule_id``)."""
    now = time.time()

    def out(e: AuditEntry) -> AuditOut:
        return AuditOut(seq=e.seq, ts=e.ts, actor=e.actor, action=e.action, rule_id=e.rule_id,
                        before=None if e.before is None else RuleOut.of(e.before, now),
                        after=None if e.after is None else RuleOut.of(e.after, now))

    return AuditLogOut(entries=[out(e) for e in _store(c).audit(limit, rule_id)])
