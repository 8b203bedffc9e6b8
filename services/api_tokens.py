"""API tokens: created and revoked by the operator, stored hashed, checked on every request."""
from __future__ import annotations

import dataclasses
import hashlib
import secrets

from models import ApiToken
from parley.errors import InvalidInput
from parley.timestamps import now_ms

# Each scope includes the ones before it: a write token can read, an admin token can do everything.
SCOPES = ("read", "write", "admin")
TOKEN_PREFIX = "parley_"


class TokenError(InvalidInput):
    """A token request the operator has to correct (unknown scope, unknown token, empty name)."""


@dataclasses.dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at_ms: int
    last_used_at_ms: int | None
    revoked_at_ms: int | None

    def allows(self, required: str) -> bool:
        return any(SCOPES.index(s) >= SCOPES.index(required) for s in self.scopes)


def _hash(token: str) -> str:
    # Tokens are 256 random bits, so a fast unsalted hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(id=row.id, name=row.name, prefix=row.prefix, scopes=tuple(row.scopes.split(",")),
                     created_at_ms=row.created_at_ms, last_used_at_ms=row.last_used_at_ms,
                     revoked_at_ms=row.revoked_at_ms)


def create(name: str, scopes: list[str] | tuple[str, ...]) -> tuple[str, TokenInfo]:
    """Make a token; returns the token itself (never stored, shown once) and its record."""
    name = name.strip()
    if not name:
        raise TokenError("a token needs a name")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise TokenError(f"scopes must be among {', '.join(SCOPES)} (got {', '.join(unknown) or 'none'})")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ordered = ",".join(s for s in SCOPES if s in scopes)
    row = ApiToken.create(name=name, token_hash=_hash(token), prefix=token[:len(TOKEN_PREFIX) + 6], scopes=ordered)
    return token, _info(row)


def list_tokens(*, include_revoked: bool = False) -> list[TokenInfo]:
    query = ApiToken.select().order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at_ms.is_null())
    return [_info(row) for row in query]


def revoke(id_or_name: str) -> list[TokenInfo]:
    """Revoke the token with this id, or every live token with this name; returns what was revoked."""
    live = ApiToken.revoked_at_ms.is_null()
    match = (ApiToken.id == int(id_or_name)) if id_or_name.isdigit() else (ApiToken.name == id_or_name)
    rows = list(ApiToken.select().where(live & match))
    if not rows:
        raise TokenError(f"no live token with id or name {id_or_name!r}")
    ApiToken.update(revoked_at_ms=now_ms()).where(ApiToken.id.in_([r.id for r in rows])).execute()
    return [_info(r) for r in rows]


def any_configured() -> bool:
    # Asked on every request without a token: plain SQL, because building the query in peewee costs
    # more than running it.
    table = ApiToken._meta.table_name
    cursor = ApiToken._meta.database.execute_sql(f"SELECT 1 FROM {table} WHERE revoked_at_ms IS NULL LIMIT 1")
    return cursor.fetchone() is not None


def verify(token: str) -> TokenInfo | None:
    """The live token's record, or None; marks it used (at most once a minute, to keep writes rare)."""
    row = ApiToken.get_or_none((ApiToken.token_hash == _hash(token)) & ApiToken.revoked_at_ms.is_null())
    if row is None:
        return None
    now = now_ms()
    if row.last_used_at_ms is None or now - row.last_used_at_ms > 60_000:
        ApiToken.update(last_used_at_ms=now).where(ApiToken.id == row.id).execute()
    return _info(row)
