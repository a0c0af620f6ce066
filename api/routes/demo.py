"""Demo only: ``POST /demo/token`` hands the storefront page a shopper token for any user id.

In a real shop the page never mints tokens: the shop's backend, which knows who is logged in, signs
one for that shopper with the shared ``token_secret`` (``api.security.mint_token``, or ``semrec
token USER_ID``) and passes it to their browser. This route stands in for that backend so that the
demo storefront can switch between shoppers without a login. It exists only when the setting
``demo_tokens`` is on (``semrec demo`` turns it on); anyone who can reach it can read any shopper's
data, so it must never be enabled in production.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..deps import ComponentsDep
from ..security import mint_token

router = APIRouter()


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    user_id: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")


class TokenOut(BaseModel):
    user_id: str
    token: str = Field(description="send it as X-Shopper-Token")
    expires_at: int = Field(description="unix seconds")


@router.post("/demo/token", response_model=TokenOut)
def demo_token(body: TokenIn, c: ComponentsDep) -> TokenOut:
    """A shopper token for ``user_id``, as the shop's backend would issue one after a login."""
    secret = c.settings.token_secret
    if not c.settings.demo_tokens or secret is None:
        raise HTTPException(404, detail="demo tokens are off (setting demo_tokens, with a token_secret)")
    token, expires = mint_token(body.user_id, secret.get_secret_value(), c.settings.token_ttl_s)
    return TokenOut(user_id=body.user_id, token=token, expires_at=expires)
