"""Merchandising rules: the pure step over ranked lists, the rule store's contract on SQLite and a
real PostgreSQL server, and the rules inside every pipeline on the demo catalog."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ranker import widgets
from ranker.pipeline import PipelineConfig, recommend_users, search, similar
from ranker.rules import Rule, RuleBook, matches, reorder
from ranker.rulestore import PostgresRuleStore, SQLiteRuleStore, open_rule_store

RECORDS = [
    {"item_id": "a", "brand": "Ionique Pro", "categories": ["Beauty", "Hair Care"], "attributes": {"Colour": "Black"},
     "price": 59.0},
    {"item_id": "b", "brand": "Silkstrand", "categories": ["Beauty", "Hair Care"], "attributes": {}, "price": 14.0},
    {"item_id": "c", "brand": "Rouge", "categories": ["Beauty", "Makeup"], "attributes": {}, "price": None},
    {"item_id": "d", "brand": "Ionique Pro", "categories": ["Beauty", "Hair Care"], "attributes": {}, "price": 329.0},
    {"item_id": "e", "brand": "Petalwise", "categories": ["Beauty", "Makeup"], "attributes": {}, "price": 20.0},
]
LABELS = np.arange(5, dtype=np.int64)
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5], dtype=np.float32)


def ids(ranked) -> list[str]:
    return [RECORDS[lab]["item_id"] for lab in ranked.labels if lab >= 0]


def test_conditions_all_hold_case_insensitively_and_unknown_prices_are_in_no_band():
    assert matches(Rule("block", ("home",), brand="ionique pro"), RECORDS[0])
    assert matches(Rule("block", ("home",), category="hair care", max_price=100), RECORDS[0])
    assert not matches(Rule("block", ("home",), category="hair care", max_price=50), RECORDS[0])
    assert matches(Rule("block", ("home",), attribute=("colour", "black")), RECORDS[0])
    assert not matches(Rule("block", ("home",), attribute=("colour", "white")), RECORDS[0])
    assert not matches(Rule("block", ("home",), min_price=0), RECORDS[2])
    assert matches(Rule("block", ("home",), item_ids=("c", "x")), RECORDS[2])


def test_boost_bury_block_and_pin_on_one_list():
    boost = Rule("boost", ("home",), id=1, brand="Ionique Pro", strength=1.0)
    assert ids(reorder(LABELS, SCORES, RECORDS, [boost], 5)) == ["a", "d", "b", "c", "e"]
    half = Rule("boost", ("home",), id=1, item_ids=("e",), strength=0.5)  # from 1 - 4/5 = 0.2 to 0.7: past c and d
    got = reorder(LABELS, SCORES, RECORDS, [half], 5)
    assert ids(got) == ["a", "b", "e", "c", "d"] and got.rules == [[], [], [1], [], []]
    assert got.scores.tolist() == pytest.approx([0.9, 0.8, 0.5, 0.7, 0.6])  # scores stay the ranking's
    bury = Rule("bury", ("home",), id=2, category="Makeup", strength=1.0)
    assert ids(reorder(LABELS, SCORES, RECORDS, [bury], 5)) == ["a", "b", "d", "c", "e"]
    block = Rule("block", ("home",), id=3, max_price=20)
    assert ids(reorder(LABELS, SCORES, RECORDS, [block], 3)) == ["a", "c", "d"]  # b, e blocked; the list stays full
    pin = Rule("pin", ("home",), id=4, item_ids=("e",), slot=1)
    got = reorder(LABELS, SCORES, RECORDS, [pin, block], 5, pins={4: (4, RECORDS[4])})
    assert ids(got) == ["a", "c", "d"]  # a block wins over a pin
    got = reorder(LABELS[:3], SCORES[:3], RECORDS[:3], [pin], 3, pins={4: (4, RECORDS[4])})
    assert ids(got) == ["e", "a", "b"] and got.rules[0] == [4]
    assert got.scores[0] == pytest.approx(0.9)  # a pinned item the ranking did not have takes its slot's score
    late = Rule("pin", ("home",), id=5, item_ids=("a",), slot=9)
    assert ids(reorder(LABELS[:3], SCORES[:3], RECORDS[:3], [late], 3, pins={5: (0, RECORDS[0])})) == ["b", "c", "a"]


def test_a_rule_is_live_in_its_placements_window_and_variants():
    r = Rule("boost", ("home", "search"), brand="x", start=100.0, end=200.0, variants=("b",))
    assert r.live("home", 150.0, "b") and r.live("search", 100.0, "b")
    assert not r.live("similar", 150.0, "b") and not r.live("home", 200.0, "b") and not r.live("home", 99.0, "b")
    assert not r.live("home", 150.0, "a")
    assert Rule("boost", ("home",), brand="x").live("home", 0.0, "")
    assert not Rule("boost", ("home",), brand="x", enabled=False).live("home", 0.0, "")


@pytest.mark.parametrize("bad, field", [
    (dict(action="promote", placements=("home",)), "action"),
    (dict(action="boost", placements=("checkout",), brand="x"), "placements"),
    (dict(action="pin", placements=("home",), item_ids=("a", "b")), "item_ids"),
    (dict(action="boost", placements=("home",)), "conditions: a boost, bury or block needs one"),
    (dict(action="bury", placements=("home",), brand="x", strength=2.0), "strength"),
    (dict(action="block", placements=("home",), brand="x", start=10.0, end=5.0), "end"),
])
def test_a_bad_rule_says_what_to_fix(bad, field):
    with pytest.raises(ValueError, match=field):
        Rule(**bad)


# ----------------------------------------------------------------------------- the store's contract
@pytest.fixture(params=["sqlite", "postgres"])
def rule_store_url(request, tmp_path):
    return str(tmp_path / "events.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


class TestRuleStoreContract:
    def test_rules_round_trip_durably_with_their_audit_trail(self, rule_store_url):
        store = open_rule_store(rule_store_url)
        assert store.rules() == [] and store.version() == 0
        pin = store.create(Rule("pin", ("home", "search"), name="Dryer week", item_ids=("D0005",), slot=2,
                                start=1.0, end=2e9, variants=("control",)), "ana (key admin)")
        boost = store.create(Rule("boost", ("similar",), brand="Silkstrand", attribute=("hair type", "dry"),
                                  min_price=5.0, max_price=50.0, strength=0.3), "ben (no key)")
        assert pin.id != boost.id and pin.id > 0
        v1 = store.version()
        changed = store.update(boost.id, Rule("bury", ("similar",), brand="Silkstrand", strength=0.3), "ana")
        assert changed.action == "bury" and changed.id == boost.id and store.version() > v1
        assert store.update(10_000, changed, "ana") is None and store.delete(10_000, "ana") is False
        store.close()
        store = open_rule_store(rule_store_url)  # reopened: everything is still there
        assert store.rules() == [pin, changed]
        assert store.delete(pin.id, "cleo") is True and store.rules() == [changed]
        log = store.audit()
        assert [(e.action, e.rule_id, e.actor) for e in log] == [
            ("delete", pin.id, "cleo"), ("update", boost.id, "ana"), ("create", boost.id, "ben (no key)"),
            ("create", pin.id, "ana (key admin)")]
        assert log[0].before == pin and log[0].after is None
        assert log[1].before == boost and log[1].after == changed
        assert [e.action for e in store.audit(rule_id=pin.id)] == ["delete", "create"]
        assert len(store.audit(limit=1)) == 1
        store.close()

    def test_two_workers_see_each_others_changes_through_the_version(self, rule_store_url):
        a, b = open_rule_store(rule_store_url), open_rule_store(rule_store_url)
        book = RuleBook(b.rules(), b.version())
        rule = a.create(Rule("block", ("home",), brand="Rouge"), "ana")
        assert b.version() != book.version
        book.replace(b.rules(), b.version())
        assert book.live("home", 0.0, "") == [rule]
        a.close()
        b.close()

    def test_concurrent_writers_lose_nothing(self, rule_store_url):
        store = open_rule_store(rule_store_url)
        errors = []

        def write(n):
            try:
                for j in range(5):
                    store.create(Rule("block", ("home",), item_ids=(f"i{n}-{j}",)), f"w{n}")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(store.rules()) == 20 and len(store.audit(limit=100)) == 20
        assert store.version() == max(e.seq for e in store.audit())
        store.close()


def test_open_rule_store_picks_the_backend(tmp_path):
    assert isinstance(open_rule_store(tmp_path / "x.db"), SQLiteRuleStore)
    assert isinstance(open_rule_store(f"sqlite:///{tmp_path}/y.db"), SQLiteRuleStore)
    with pytest.raises(ValueError, match="unsupported"):
        open_rule_store("mysql://x")
    assert PostgresRuleStore  # the PostgreSQL backend runs in the contract class above


# ----------------------------------------------------------------------------- inside the pipelines
@pytest.fixture
def merch(demo_services):
    demo_services.rules = RuleBook()
    yield demo_services
    demo_services.rules = None


def set_rules(svc, *rules):
    svc.rules.replace([Rule(**{**vars(r), "id": n}) for n, r in enumerate(rules, 1)], len(rules))


def item_ids(svc, labels):
    return [svc.index.table.records[lab]["item_id"] for lab in labels if lab >= 0]


def test_the_home_feed_applies_pins_blocks_and_boosts_and_says_so(merch):
    cfg = PipelineConfig()
    before = recommend_users(merch, cfg, ["U020"], 10)
    plain = item_ids(merch, before.labels[0])
    set_rules(merch, Rule("pin", ("home",), item_ids=("D0053",), slot=2),  # an espresso machine for a runner
              Rule("block", ("home",), item_ids=(plain[0],)),
              Rule("boost", ("home",), brand="Pacecraft", strength=1.0))
    after = recommend_users(merch, cfg, ["U020"], 10)
    got = item_ids(merch, after.labels[0])
    assert len(got) == 10 and got[1] == "D0053" and plain[0] not in got
    assert after.sources[0][1] == ["pinned"] and after.reasons[0][1].text == "featured by the shop"
    assert after.rules[0][1] == [1] and "rules" in after.stages[0]
    pace = [j for j, i in enumerate(got) if merch.index.table.get(i)["brand"] == "Pacecraft"]
    assert pace and all(3 in after.rules[0][j] for j in pace)
    others = [j for j in range(10) if j not in pace and j != 1]
    assert max(pace) < min(others)  # strength 1: every boosted item above every other one
    held_out = recommend_users(merch, PipelineConfig(merchandising=False), ["U020"], 10)
    assert item_ids(merch, held_out.labels[0]) == plain  # a variant without merchandising: the ranking alone
    scoped = PipelineConfig(variant="treatment")
    set_rules(merch, Rule("pin", ("home",), item_ids=("D0053",), slot=1, variants=("control",)))
    assert item_ids(merch, recommend_users(merch, scoped, ["U020"], 10).labels[0]) == plain


def test_rules_reach_similar_search_and_the_widgets(merch):
    cfg = PipelineConfig()
    plain = similar(merch, cfg, "D0005", 5)
    set_rules(merch, Rule("block", ("similar", "search", "also_bought", "trending"), brand="Ionique Pro"),
              Rule("pin", ("similar", "search", "also_bought", "trending"), item_ids=("D0297",), slot=1))
    ruled = similar(merch, cfg, "D0005", 5)
    got = item_ids(merch, ruled.labels)
    assert got[0] == "D0297" and ruled.rules[0] == [2] and len(got) == 5
    assert not any(merch.index.table.get(i)["brand"] == "Ionique Pro" for i in got)
    assert any(merch.index.table.get(i)["brand"] == "Ionique Pro" for i in item_ids(merch, plain.labels))
    assert item_ids(merch, similar(merch, cfg, "D0297", 5).labels)[0] != "D0297"  # never the item itself
    also = widgets.also_bought(merch, cfg, "D0005", 4)
    assert item_ids(merch, also.labels)[0] == "D0297"
    assert item_ids(merch, widgets.trending(merch, cfg, 5, "Beauty").labels)[0] == "D0297"
    assert item_ids(merch, widgets.trending(merch, cfg, 5, "Kitchen").labels)[0] != "D0297"  # not in the filter
    from ranker.services import build_search
    from retriever.search import SearchConfig

    merch.search = build_search(merch.index, merch.embedder, SearchConfig())
    res, _ = search(merch, cfg, "hair dryer", 5)
    found = item_ids(merch, res.labels)
    # the relevance cut-off leaves few hair dryers that are not Ionique Pro: the list is short, not padded
    assert found[0] == "D0297" and res.rules[0] == [2] and 3 <= len(found) == len(res.evidence) <= 5
    assert np.isnan(res.relevance[0]) or res.relevance[0] > 0  # the pin keeps its own relevance when it had one
    assert not any(merch.index.table.get(i)["brand"] == "Ionique Pro" for i in found)
    merch.search = None


# ----------------------------------------------------------------------------- the editor's routes
ADMIN, SHOP = "sk_rules_admin", "sk_rules_shop"


@pytest.fixture
def app_settings(tiny_index, tmp_path):
    from api.experiments import Variant
    from api.security import ApiKey, digest
    from api.settings import Settings

    return Settings(index_dir=tmp_path / "ix", db_path=tmp_path / "events.db", follow_seconds=0.05,
                    api_keys=[ApiKey(name="merch-team", role="admin", sha256=digest(ADMIN)),
                              ApiKey(name="storefront", role="backend", sha256=digest(SHOP))],
                    variants=[Variant(name="control", share=0.5), Variant(name="no-rules", share=0.5,
                                                                          merchandising=False)])


def client_for(settings, index, embedder):
    from fastapi.testclient import TestClient

    from .conftest import make_app, open_events_for

    store, state = open_events_for(settings)
    return TestClient(make_app(settings, index, embedder, store, state))


def test_rules_are_edited_with_an_admin_key_and_audited(app_settings, tiny_index, embedder):
    admin = {"X-API-Key": ADMIN}
    pin = {"name": "Grinder first", "action": "pin", "placements": ["similar", "search"], "item_ids": ["grinder"],
           "slot": 1, "editor": "Ana"}
    with client_for(app_settings, tiny_index, embedder) as c:
        assert c.get("/rules").status_code == 401
        assert c.post("/rules", json=pin, headers={"X-API-Key": SHOP}).status_code == 403
        r = c.post("/rules", json=pin, headers=admin)
        assert r.status_code == 201 and r.json()["live"] is True
        rid = r.json()["id"]
        hits = c.get("/search", params={"q": "hair dryer", "k": 3}).json()["results"]
        assert hits[0]["item_id"] == "grinder" and hits[0]["rules"] == [rid]  # applied at once, and said so
        sim = c.get("/items/dryer/similar", params={"k": 3}).json()["results"]
        assert sim[0]["item_id"] == "grinder" and sim[0]["rules"] == [rid] and not sim[1]["rules"]
        off = {**pin, "enabled": False, "editor": "Ben"}
        assert c.put(f"/rules/{rid}", json=off, headers=admin).json()["live"] is False
        assert c.get("/items/dryer/similar", params={"k": 3}).json()["results"][0]["item_id"] != "grinder"
        assert c.put("/rules/999", json=off, headers=admin).status_code == 404
        listed = c.get("/rules", headers=admin).json()
        assert [x["id"] for x in listed["rules"]] == [rid] and listed["variants"] == ["control", "no-rules"]
        assert c.delete(f"/rules/{rid}", params={"editor": "Cleo"}, headers=admin).status_code == 204
        assert c.delete(f"/rules/{rid}", headers=admin).status_code == 404
        log = c.get("/rules/audit", headers=admin).json()["entries"]
        assert [(e["action"], e["actor"]) for e in log] == [("delete", "Cleo (key merch-team)"),
                                                            ("update", "Ben (key merch-team)"),
                                                            ("create", "Ana (key merch-team)")]
        assert log[1]["before"]["enabled"] is True and log[1]["after"]["enabled"] is False


@pytest.mark.parametrize("change, field", [
    ({"action": "promote"}, "action"),
    ({"placements": []}, "placements"),
    ({"placements": ["checkout"]}, "placements"),
    ({"item_ids": ["nope"]}, "item_ids"),
    ({"item_ids": ["dryer", "grinder"]}, "item_ids"),
    ({"variants": ["treatment"]}, "variants"),
    ({"slot": 0}, "slot"),
    ({"action": "boost", "item_ids": []}, "conditions"),
    ({"action": "boost", "brand": "Breeze", "strength": 1.5}, "strength"),
    ({"start": 200, "end": 100}, "end"),
    ({"min_price": 50, "max_price": 10, "action": "block", "item_ids": []}, "max_price"),
    ({"colour": "red"}, "colour"),
])
def test_a_bad_rule_is_a_422_naming_the_field(app_settings, tiny_index, embedder, change, field):
    body = {"action": "pin", "placements": ["home"], "item_ids": ["dryer"], **change}
    with client_for(app_settings, tiny_index, embedder) as c:
        r = c.post("/rules", json=body, headers={"X-API-Key": ADMIN})
        assert r.status_code == 422, r.text
        assert field in {str(p) for d in r.json()["detail"] for p in d["loc"]}, r.json()


def test_a_variant_without_merchandising_and_a_second_worker(app_settings, tiny_index, embedder):
    import time

    pin = {"action": "pin", "placements": ["home"], "item_ids": ["tent"], "slot": 1}
    with client_for(app_settings, tiny_index, embedder) as a, client_for(app_settings, tiny_index, embedder) as b:
        a.post("/events", json={"events": [{"event_id": "e1", "user_id": "u1", "item_id": "dryer", "type": "view"}]},
               headers={"X-API-Key": SHOP})
        rid = a.post("/rules", json=pin, headers={"X-API-Key": ADMIN}).json()["id"]
        control = a.get("/users/u1/recommendations", params={"k": 3, "variant": "control"},
                    headers={"X-API-Key": SHOP}).json()
        assert control["results"][0]["item_id"] == "tent" and control["results"][0]["rules"] == [rid]
        assert "rules" in control["stages"] and control["results"][0]["reason_kind"] in ("featured", "popular",
                                                                                         "personal", "new")
        held_out = a.get("/users/u1/recommendations", params={"k": 3, "variant": "no-rules"},
                    headers={"X-API-Key": SHOP}).json()
        assert all(not r["rules"] for r in held_out["results"]) and "rules" not in held_out["stages"]
        deadline = time.monotonic() + 10  # the other worker follows the store within follow_seconds
        while time.monotonic() < deadline:
            got = b.get("/users/u1/recommendations", params={"k": 3, "variant": "control"},
                    headers={"X-API-Key": SHOP}).json()["results"]
            if got[0]["rules"] == [rid]:
                break
            time.sleep(0.05)
        assert got[0]["item_id"] == "tent"


def test_merchandising_holds_only_the_places_exploration_filled(tiny_index):
    """With two exploration slots, a new item the ranking placed just before the explored one is
    still the ranking's: a rule applies to it (it was held at the tail, exempt, when the slots were
    guessed by counting trailing new items)."""
    from dataclasses import replace

    from ranker.pipeline import Recommendations, merchandise
    from ranker.services import Services

    labels = np.arange(4, dtype=np.int64)
    ranked_new, explored = (tiny_index.table.records[lab]["item_id"] for lab in (2, 3))
    recs = Recommendations(labels[None], np.array([[0.9, 0.8, 0.7, 0.1]], np.float32),
                           [[["dense"], ["dense"], ["dense", "new"], ["new"]]], [[]], [("learned", "explore")],
                           explored=[1])
    cfg = replace(PipelineConfig(), candidates=replace(PipelineConfig().candidates, explore_slots=2))
    out = merchandise(Services(tiny_index, None), cfg, recs, [Rule("block", ("home",), id=1, item_ids=(ranked_new,))],
                      4, None, [frozenset()])
    shown = [tiny_index.table.records[lab]["item_id"] for lab in out.labels[0] if lab >= 0]
    assert ranked_new not in shown and shown[-1] == explored and out.explored == [1]
