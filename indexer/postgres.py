"""PostgreSQL plumbing shared by the catalog feed (``indexer.feed``) and the event store
(``retriever.eventstore.postgres``): a pool of autocommit connections, numbered migrations under
an advisory lock (workers that start together migrate once), URLs without passwords in messages.

psycopg is imported inside the functions: only deployments that use PostgreSQL need it.
"""

from __future__ import annotations

MIGRATION_LOCK = 7_301_000  # pg_advisory_xact_lock key; the stores' own locks are 7_301_001 and up


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except ProgrammingError:
        return "<unparsable PostgreSQL URL>"
    return " ".join(f"{k}={v}" for k, v in info.items() if k != "password")


def connect_pool(url: str, max_size: int, name: str, timeout_s: float = 10.0):
    """An open psycopg pool of autocommit connections; a server that cannot be reached is a clear
    ``ConnectionError`` here, at start-up."""
    from psycopg_pool import ConnectionPool, PoolTimeout

    pool = ConnectionPool(url, min_size=1, max_size=max_size, kwargs={"autocommit": True}, name=name,
                          open=False)
    try:
        pool.open(wait=True, timeout=timeout_s)
    except PoolTimeout as e:
        pool.close()
        raise ConnectionError(f"cannot connect to PostgreSQL ({redact(url)}) within {timeout_s:g} s") from e
    return pool


def migrate(pool, migrations: list[str], version_key: str, what: str) -> None:
    """Apply the migrations a database has not seen, in one transaction under an advisory lock."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = conn.execute("SELECT value FROM meta WHERE key = %s", (version_key,)).fetchone()
        version = int(row[0]) if row else 0
        if version > len(migrations):
            raise RuntimeError(f"the {what} in PostgreSQL has schema version {version}, newer than this semrec "
                               f"({len(migrations)}); upgrade semrec")
        for number in range(version + 1, len(migrations) + 1):
            conn.execute(migrations[number - 1])
            conn.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                         (version_key, str(number)))
