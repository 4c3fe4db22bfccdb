"""Create, list, revoke and verify tokens. A token reads ``wv_<public id>_<secret>``; only the secret's
sha256 is stored, so a leaked database does not leak usable tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Literal

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.auth.models import ApiToken
from app.db.base import utcnow
from app.db.engine import begin_write
from app.db.raw_reads import ReadConnection
from app.errors import Forbidden, InvalidRequest, Unauthorized

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
_PREFIX = "wv"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(*, session: Session, scope: str, name: str | None = None) -> tuple[ApiToken, str]:
    """Returns the row and the token text, which is never shown again."""
    if scope not in SCOPES:
        raise InvalidRequest(f"scope must be one of {', '.join(SCOPES)}.")
    public_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    begin_write(session)
    token = ApiToken(public_id=public_id, secret_sha256=_hash(secret), scope=scope, name=name)
    session.add(token)
    session.commit()
    return token, f"{_PREFIX}_{public_id}_{secret}"


def list_tokens(*, session: Session) -> Sequence[ApiToken]:
    return session.scalars(select(ApiToken).order_by(ApiToken.id)).all()


def revoke_token(*, session: Session, public_id: str) -> bool:
    begin_write(session)
    token = session.scalar(select(ApiToken).where(ApiToken.public_id == public_id))
    if token is None or token.revoked_at is not None:
        session.rollback()
        return False
    token.revoked_at = utcnow()
    session.commit()
    return True


def _parse(authorization: str) -> tuple[str, str] | None:
    """``Bearer wv_<public id>_<secret>`` -> (public id, secret), or None."""
    kind, _, value = authorization.partition(" ")
    parts = value.strip().split("_", 2)
    if kind.lower() != "bearer" or len(parts) != 3 or parts[0] != _PREFIX:
        return None
    return parts[1][:16], parts[2]


_TOKEN_GRANT = select(ApiToken.secret_sha256, ApiToken.scope).where(
    ApiToken.public_id == bindparam("public_id"), ApiToken.revoked_at.is_(None)
)


def allows(*, conn: ReadConnection, authorization: str | None, needed: Scope) -> bool:
    """Whether the header names a valid, unrevoked token with at least ``needed``: one indexed statement,
    no session (for ``app.api.fast_reads``, which leaves every refusal to ``verify``'s error messages).

    Nothing is cached, so a revoked token is refused by the next request, whichever process answers it.
    """
    parsed = _parse(authorization) if authorization else None
    if parsed is None:
        return False
    public_id, secret = parsed
    row = conn.execute(_TOKEN_GRANT, {"public_id": public_id}).first()
    return (
        row is not None
        and hmac.compare_digest(row.secret_sha256, _hash(secret))
        and row.scope in SCOPES
        and SCOPES.index(row.scope) >= SCOPES.index(needed)
    )


def verify(*, session: Session, authorization: str | None) -> ApiToken:
    """The token named by an ``Authorization: Bearer`` header, or ``Unauthorized``."""
    if not authorization:
        raise Unauthorized("This server requires a token: send 'Authorization: Bearer <token>'.")
    parsed = _parse(authorization)
    if parsed is None:
        raise Unauthorized(
            "The Authorization header must be 'Bearer wv_...' with a token from 'weightvault token create'."
        )
    public_id, secret = parsed
    token = session.scalar(select(ApiToken).where(ApiToken.public_id == public_id))
    if token is None or not hmac.compare_digest(token.secret_sha256, _hash(secret)):
        raise Unauthorized("The token is not valid; ask an admin for a new one.")
    if token.revoked_at is not None:
        raise Unauthorized("The token was revoked; ask an admin for a new one.")
    return token


def require_scope(token: ApiToken, needed: Scope) -> None:
    if SCOPES.index(token.scope) < SCOPES.index(needed):  # type: ignore[arg-type,unused-ignore]
        raise Forbidden(
            f"This needs a token with the '{needed}' scope; yours has '{token.scope}'.",
            {"needed": needed, "scope": token.scope},
        )
