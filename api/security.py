"""Access control: API keys with roles, compared in constant time and stored hashed; shopper
tokens; rate limits.

Roles, each including the ones below it::

    admin    catalog writes (PUT/DELETE /items), DELETE /users, the shopper list, admin routes
    backend  any shopper's personal data: their recommendations (whose reasons quote their history
             and onboarding answers), history and onboarding (a key for the shop's own servers)
    ingest   POST /events for any user (a low-privilege key, fit to ship in a storefront's browser
             code: it opens no one's personal data)
    read     read routes, when ``public_reads`` is off

Keys are configured as their SHA-256 hex digests (``semrec keygen`` prints a new key and its digest),
so the settings never hold a usable secret. A presented key is hashed and compared against every
configured digest with ``hmac.compare_digest``, so timing says nothing about which digest nearly
matched.

Shopper tokens: the shop's backend, which knows who is logged in, signs a short-lived token for one
shopper (``semrec token USER_ID``, or :func:`mint_token` with the same ``token_secret``) and hands
it to that shopper's browser, which sends it as ``X-Shopper-Token``. A token opens that shopper's
personal routes and lets them post their own events, nothing else. It reads
``st1.<payload>.<signature>``: the payload is base64url JSON ``{"sub": user id, "exp": unix
seconds}``, the signature base64url HMAC-SHA256 of ``st1.<payload>`` under the secret, compared in
constant time; an expired token is refused.

Rate limits are token buckets per key (per shopper for a token, per client address otherwise):
``rate_per_minute`` tokens refill continuously up to a burst of ``burst``; an empty bucket answers
429 with Retry-After. A request with an unknown key or a bad token is counted against its client
address before it is refused, so guessing keys is rate-limited like everything else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, Field

Role = Literal["read", "ingest", "backend", "admin"]
RANK = {"read": 0, "ingest": 1, "backend": 2, "admin": 3}
TOKEN_PREFIX = "st1"
MAX_TOKEN_CHARS = 1024   # a longer token is refused before any work
MAX_BUCKETS = 100_000    # rate-limit identities kept before full buckets are forgotten


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


# ---- shopper tokens ------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(payload: str, secret: str) -> str:
    return _b64(hmac.new(secret.encode(), f"{TOKEN_PREFIX}.{payload}".encode(), hashlib.sha256).digest())


def mint_token(user_id: str, secret: str, ttl_s: float, now: float | None = None) -> tuple[str, int]:
    """A token opening ``user_id``'s data for ``ttl_s`` seconds: ``(token, expires_at unix s)``."""
    expires = int((time.time() if now is None else now) + ttl_s)
    payload = _b64(json.dumps({"sub": user_id, "exp": expires}, separators=(",", ":")).encode())
    return f"{TOKEN_PREFIX}.{payload}.{_signature(payload, secret)}", expires


def verify_token(token: str, secret: str, now: float | None = None) -> str | None:
    """The shopper id a valid, unexpired ``token`` opens, else None (the signature is compared in
    constant time before the payload is read)."""
    parts = token.split(".") if len(token) <= MAX_TOKEN_CHARS else []
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    if not hmac.compare_digest(parts[2].encode(), _signature(parts[1], secret).encode()):
        return None
    try:
        claims = json.loads(_unb64(parts[1]))
        sub, exp = claims["sub"], claims["exp"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(sub, str) or not isinstance(exp, int) or exp <= (time.time() if now is None else now):
        return None
    return sub


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
            if identity not in self._state and len(self._state) >= MAX_BUCKETS:
                # a bucket that has refilled holds nothing worth keeping: memory stays bounded
                self._state = {k: (t, last) for k, (t, last) in self._state.items()
                               if t + (now - last) * self.rate < self.burst}
            tokens, last = self._state.get(identity, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._state[identity] = (tokens - 1.0, now)
                return 0.0
            self._state[identity] = (tokens, now)
            return (1.0 - tokens) / self.rate if self.rate > 0 else math.inf


def identify(request: Request) -> None:
    """App-wide dependency: find the caller's key and shopper token, apply the rate limit, guard reads.

    401 for an unknown key or a bad or expired token (counted against the client's address first),
    or a read without a key when reads are not public; 429 over the limit. The key found (or None)
    is left in ``request.state.api_key`` for :func:`require`, the shopper a valid token opens (or
    None) in ``request.state.shopper``.
    """
    settings = request.app.state.components.settings
    presented, token = presented_key(request), request.headers.get("x-shopper-token")
    key = find_key(presented, settings.api_keys) if presented else None
    secret = settings.token_secret.get_secret_value() if settings.token_secret else None
    shopper = verify_token(token, secret) if token and secret else None
    request.state.api_key, request.state.shopper = key, shopper
    address = f"ip:{request.client.host if request.client else 'unknown'}"
    bad_key, bad_token = bool(presented and key is None), bool(token and shopper is None)
    refused = settings.auth and (bad_key or bad_token)
    identity = address if refused or not (key or shopper) else f"key:{key.name}" if key else f"shopper:{shopper}"
    wait = request.app.state.rate_limits.take(identity)
    if wait > 0:
        raise HTTPException(429, detail=f"rate limit exceeded; retry in {wait:.1f} s",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})
    if refused and bad_key:
        raise HTTPException(401, detail="unknown API key", headers={"WWW-Authenticate": "Bearer"})
    if refused:
        raise HTTPException(401, detail="invalid or expired shopper token (X-Shopper-Token)" if secret
                            else "this server accepts no shopper tokens (no token_secret is set)")
    if settings.auth and key is None and not settings.public_reads and request.method in ("GET", "HEAD"):
        raise _missing("read")


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


def public_read():
    """Route dependency for a read sent as POST (an anonymous session's inline context): open like
    the GET reads while ``public_reads`` is on, else it needs a key."""

    def check(request: Request) -> None:
        settings = request.app.state.components.settings
        if settings.auth and not settings.public_reads and getattr(request.state, "api_key", None) is None:
            raise _missing("read")

    return Depends(check)


def shopper_access(request: Request, user_id: str) -> bool:
    """Whether the caller may see ``user_id``'s personal data: keys off, a key with role
    ``backend`` or above, or a valid token for exactly that shopper."""
    if not request.app.state.components.settings.auth:
        return True
    key = getattr(request.state, "api_key", None)
    if key is not None and RANK[key.role] >= RANK["backend"]:
        return True
    shopper = getattr(request.state, "shopper", None)
    return shopper is not None and hmac.compare_digest(shopper.encode(), user_id.encode())


def check_shopper(request: Request, user_id: str) -> None:
    """Raise unless the caller may see ``user_id``'s personal data (see :func:`shopper_access`):
    401 without credentials, 403 for another shopper's token or a key below ``backend``."""
    if shopper_access(request, user_id):
        return
    key = getattr(request.state, "api_key", None)
    if key is not None:
        raise HTTPException(403, detail=f"key {key.name!r} has role {key.role!r}; a shopper's personal data "
                                        "needs their shopper token or a key with role 'backend'")
    if getattr(request.state, "shopper", None) is not None:
        raise HTTPException(403, detail="this shopper token opens only its own shopper's data")
    raise HTTPException(401, detail="this asks for one shopper's personal data: send their shopper token "
                                    "(X-Shopper-Token, signed by the shop's backend, e.g. `semrec token`) "
                                    "or a key with role 'backend' (X-API-Key)",
                        headers={"WWW-Authenticate": "Bearer"})


def require_shopper():
    """Route dependency of the personal routes under ``/users/{user_id}``: the caller must open that
    shopper (:func:`check_shopper`)."""

    def check(request: Request) -> None:
        check_shopper(request, request.path_params.get("user_id", ""))

    return Depends(check)


def event_writer(request: Request) -> str | None:
    """Dependency of POST /events, who may post for whom: None = for any user (keys off, or a key
    with role ``ingest`` or above); a shopper id = only that shopper's own events (a token, no key)."""
    if not request.app.state.components.settings.auth:
        return None
    key = getattr(request.state, "api_key", None)
    if key is not None and RANK[key.role] >= RANK["ingest"]:
        return None
    if key is not None:
        raise HTTPException(403, detail=f"key {key.name!r} has role {key.role!r}; this route needs 'ingest'")
    shopper = getattr(request.state, "shopper", None)
    if shopper is None:
        raise _missing("ingest")
    return shopper


EventWriter = Annotated[str | None, Depends(event_writer)]


def _missing(role: str) -> HTTPException:
    return HTTPException(401, detail=f"this route needs an API key with role {role!r} "
                                     "(header X-API-Key or Authorization: Bearer)",
                         headers={"WWW-Authenticate": "Bearer"})
