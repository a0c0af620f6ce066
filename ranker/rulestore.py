"""Where merchandising rules (``ranker.rules``) are kept: durably, with an audit trail of who changed
what, behind one contract (:class:`RuleStore`) on SQLite and PostgreSQL, in the event log's database.

Every write (create, update, delete) is one transaction that changes the rule and appends an audit
entry (the rule before and after, the actor, the time); the store's ``version`` is the latest audit
entry's number, so a worker re-reads the rules only when it moved. On PostgreSQL writers take an
advisory lock, so audit numbers commit in order and a version once seen covers every change below it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

from .rules import Rule

RULES_LOCK = 7_301_010  # pg_advisory_xact_lock key of rule writes


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: float
    actor: str
    action: str            # "create" | "update" | "delete"
    rule_id: int
    before: Rule | None
    after: Rule | None


def rule_json(rule: Rule) -> str:
    body = asdict(rule)
    body.pop("id")
    return json.dumps(body, sort_keys=True)


def rule_from_json(rule_id: int, text: str) -> Rule:
    body = json.loads(text)
    for key in ("placements", "item_ids", "variants"):
        body[key] = tuple(body[key])
    if body.get("attribute") is not None:
        body["attribute"] = tuple(body["attribute"])
    return Rule(id=rule_id, **body)


def _rule_or_none(rule_id: int, text: str | None) -> Rule | None:
    return None if text is None else rule_from_json(rule_id, text)


class RuleStore(ABC):
    """Durable rules with an audit trail. Writes are durable when the call returns."""

    @abstractmethod
    def rules(self) -> list[Rule]:
        """Every stored rule (enabled or not), by id."""

    @abstractmethod
    def version(self) -> int:
        """Moves on every write (0: never written)."""

    @abstractmethod
    def _write(self, action: str, rule_id: int | None, rule: Rule | None, actor: str) -> int:
        """Apply ``action`` (create / update / delete) and its audit entry in one transaction;
        returns the rule's id (0 when ``rule_id`` names no rule)."""

    def create(self, rule: Rule, actor: str) -> Rule:
        """Store a new rule; returns it with its id."""
        return rule_from_json(self._write("create", None, rule, actor), rule_json(rule))

    def update(self, rule_id: int, rule: Rule, actor: str) -> Rule | None:
        """Replace rule ``rule_id``; None when there is no such rule."""
        return rule_from_json(rule_id, rule_json(rule)) if self._write("update", rule_id, rule, actor) else None

    def delete(self, rule_id: int, actor: str) -> bool:
        """Remove rule ``rule_id``; False when there is no such rule."""
        return self._write("delete", rule_id, None, actor) > 0

    @abstractmethod
    def audit(self, limit: int = 100, rule_id: int | None = None) -> list[AuditEntry]:
        """The latest ``limit`` changes (of one rule when ``rule_id``), newest first."""

    @abstractmethod
    def close(self) -> None: ...


SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS merch_rules (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL,
                                        updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS merch_audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL,
                                        action TEXT NOT NULL, rule_id INTEGER NOT NULL, before TEXT, after TEXT);
"""


class SQLiteRuleStore(RuleStore):
    """Rules in a SQLite file (the event log's): one connection under a lock, WAL, FULL sync."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for statement in SQLITE_SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute("COMMIT")

    def rules(self) -> list[Rule]:
        with self._lock:
            rows = self._db.execute("SELECT id, body FROM merch_rules ORDER BY id").fetchall()
        return [rule_from_json(i, body) for i, body in rows]

    def version(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM merch_audit").fetchone()[0])

    def _write(self, action: str, rule_id: int | None, rule: Rule | None, actor: str) -> int:
        """One change and its audit entry in one transaction -> the rule's id (0: no such rule)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = None
                if rule_id is not None:
                    row = self._db.execute("SELECT body FROM merch_rules WHERE id = ?", (rule_id,)).fetchone()
                    if row is None:
                        self._db.execute("ROLLBACK")
                        return 0
                    before = row[0]
                after = None if rule is None else rule_json(rule)
                if action == "create":
                    rule_id = self._db.execute("INSERT INTO merch_rules (body, updated_at) VALUES (?, ?)",
                                               (after, now)).lastrowid
                elif action == "update":
                    self._db.execute("UPDATE merch_rules SET body = ?, updated_at = ? WHERE id = ?",
                                     (after, now, rule_id))
                else:
                    self._db.execute("DELETE FROM merch_rules WHERE id = ?", (rule_id,))
                self._db.execute("INSERT INTO merch_audit (ts, actor, action, rule_id, before, after) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", (now, actor, action, rule_id, before, after))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(rule_id)

    def audit(self, limit: int = 100, rule_id: int | None = None) -> list[AuditEntry]:
        where, args = ("WHERE rule_id = ?", (rule_id, limit)) if rule_id is not None else ("", (limit,))
        with self._lock:
            rows = self._db.execute(f"SELECT seq, ts, actor, action, rule_id, before, after FROM merch_audit {where} "
                                    "ORDER BY seq DESC LIMIT ?", args).fetchall()
        return [AuditEntry(seq, ts, actor, action, rid, _rule_or_none(rid, before), _rule_or_none(rid, after))
                for seq, ts, actor, action, rid, before, after in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


PG_MIGRATIONS = ["""
    CREATE TABLE merch_rules (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE merch_audit (seq BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL,
                              action TEXT NOT NULL, rule_id BIGINT NOT NULL, before TEXT, after TEXT);
    CREATE INDEX merch_audit_by_rule ON merch_audit (rule_id, seq);
"""]


class PostgresRuleStore(RuleStore):
    """Rules in PostgreSQL (the event log's database; psycopg pool), shared by every worker."""

    def __init__(self, url: str, pool_size: int = 2, timeout_s: float = 10.0):
        from indexer.postgres import connect_pool, migrate

        self._pool = connect_pool(url, pool_size, "semrec-rules", timeout_s)
        migrate(self._pool, PG_MIGRATIONS, "merch_rules_version", "merchandising rules")

    def rules(self) -> list[Rule]:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT id, body FROM merch_rules ORDER BY id").fetchall()
        return [rule_from_json(int(i), body) for i, body in rows]

    def version(self) -> int:
        with self._pool.connection() as conn:
            return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM merch_audit").fetchone()[0])

    def _write(self, action: str, rule_id: int | None, rule: Rule | None, actor: str) -> int:
        now, after = time.time(), None if rule is None else rule_json(rule)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (RULES_LOCK,))
            before = None
            if rule_id is not None:
                row = conn.execute("SELECT body FROM merch_rules WHERE id = %s FOR UPDATE", (rule_id,)).fetchone()
                if row is None:
                    return 0
                before = row[0]
            if action == "create":
                rule_id = conn.execute("INSERT INTO merch_rules (body, updated_at) VALUES (%s, %s) RETURNING id",
                                       (after, now)).fetchone()[0]
            elif action == "update":
                conn.execute("UPDATE merch_rules SET body = %s, updated_at = %s WHERE id = %s", (after, now, rule_id))
            else:
                conn.execute("DELETE FROM merch_rules WHERE id = %s", (rule_id,))
            conn.execute("INSERT INTO merch_audit (ts, actor, action, rule_id, before, after) "
                         "VALUES (%s, %s, %s, %s, %s, %s)", (now, actor, action, rule_id, before, after))
        return int(rule_id)

    def audit(self, limit: int = 100, rule_id: int | None = None) -> list[AuditEntry]:
        where, args = ("WHERE rule_id = %s", (rule_id, limit)) if rule_id is not None else ("", (limit,))
        with self._pool.connection() as conn:
            rows = conn.execute(f"SELECT seq, ts, actor, action, rule_id, before, after FROM merch_audit {where} "
                                "ORDER BY seq DESC LIMIT %s", args).fetchall()
        return [AuditEntry(int(seq), ts, actor, action, int(rid), _rule_or_none(int(rid), before),
                           _rule_or_none(int(rid), after)) for seq, ts, actor, action, rid, before, after in rows]

    def close(self) -> None:
        self._pool.close()


def open_rule_store(where: str | Path) -> RuleStore:
    """The rule store beside the event log at ``where``: a file path (or ``sqlite:///path``) or a
    ``postgresql://`` URL."""
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresRuleStore(text)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///"):]
    elif "://" in text:
        raise ValueError(f"unsupported rule store URL {text!r}; use a file path, sqlite:///path or postgresql://…")
    return SQLiteRuleStore(Path(text))
