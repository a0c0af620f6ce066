"""Access control: API keys with roles, compared in constant time and stored hashed; rate limits.

Roles, each including the ones below it::

    admin   catalog writes (PUT/DELETE /items), DELETE /users, training and admin routes
    ingest  POST /events (a low-privilege key, fit to ship in a storefront's browser code)
    read    read routes, when ``public_reads`` is off

Keys are configured as their SHA-256 hex digests (``semrec keygen`` prints a new key and its digest),
so the settings never hold a usable secret. A presented key is hashed and compared against every
configured digest with ``hmac.compare_digest``, so timing says nothing about which digest nearly
matched.

Rate limits are token buckets per key (per client address for anonymous reads): ``rate_per_minute``
tokens refill continuously up to a burst of ``burst``; an empty bucket answers 429 with Retry-After.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from typing import Literal

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, Field

Role = Literal["read", "ingest", "admin"]
RANK = {"read": 0, "ingest": 1, "admin": 2}


class ApiKey(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 hex digest of the key")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random key and its digest (the digest goes in the settings, the key to the client)."""
    key = "sk_" + secrets.token_urlsafe(32)
    return key, digest(key)


def find_key(presented: str, keys: list[ApiKey]) -> ApiKey | None:
    """The configured key matching ``presented``; every digest is compared, in constant time each."""
    d = digest(presented)
    match = None
    for k in keys:
        if hmac.compare_digest(d, k.sha256):
            match = k
    return match


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if key is None and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key or None


class TokenBuckets:
    """Per-identity token buckets. ``take`` returns 0 when allowed, else the seconds to wait."""

    def __init__(self, rate_per_minute: float, burst: int):
        self.rate, self.burst = rate_per_minute / 60.0, burst
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, identity: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._state.get(identity, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._state[identity] = (tokens - 1.0, now)
                return 0.0
            self._state[identity] = (tokens, now)
            return (1.0 - tokens) / self.rate if self.rate > 0 else math.inf


def identify(request: Request) -> None:
    """App-wide dependency: find the caller's key, apply the rate limit, guard reads.

    401 for an unknown key, or a read without a key when reads are not public; 429 over the limit.
    The key found (or None) is left in ``request.state.api_key`` for :func:`require`.
    """
    settings = request.app.state.components.settings
    presented = presented_key(request)
    key = find_key(presented, settings.api_keys) if presented else None
    if settings.auth and presented and key is None:
        raise HTTPException(401, detail="unknown API key", headers={"WWW-Authenticate": "Bearer"})
    if settings.auth and key is None and not settings.public_reads and request.method in ("GET", "HEAD"):
        raise _missing("read")
    request.state.api_key = key
    identity = f"key:{key.name}" if key else f"ip:{request.client.host if request.client else 'unknown'}"
    wait = request.app.state.rate_limits.take(identity)
    if wait > 0:
        raise HTTPException(429, detail=f"rate limit exceeded; retry in {wait:.1f} s",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})


def require(role: Role):
    """Route dependency: the caller's key must have ``role`` or above (403 if lower, 401 if none)."""

    def check(request: Request) -> None:
        if not request.app.state.components.settings.auth:
            return
        key = getattr(request.state, "api_key", None)
        if key is None:
            raise _missing(role)
        if RANK[key.role] < RANK[role]:
            raise HTTPException(403, detail=f"key {key.name!r} has role {key.role!r}; this route needs {role!r}")

    return Depends(check)


def _missing(role: str) -> HTTPException:
    return HTTPException(401, detail=f"this route needs an API key with role {role!r} "
                                     "(header X-API-Key or Authorization: Bearer)",
                         headers={"WWW-Authenticate": "Bearer"})
