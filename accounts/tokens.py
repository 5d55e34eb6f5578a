"""Login sessions: issuing, rotating and revoking refresh tokens.

A login starts a session; its start time travels in every refresh token of
that session (the `session_start` claim), so a refresh can never outlive
JWT_SESSION_MAX_SECONDS, however often it is rotated: each new refresh token
(and access token) expires at the latest when the session does.

Rotation is atomic. The refresh token sent is blacklisted by inserting its
blacklist row inside the transaction that issues the new pair; the row is
unique per token, so when the same token arrives several times at once,
exactly one insert succeeds (PostgreSQL makes the others wait on the unique
index and then fail; SQLite's write lock serializes them) and every other
request is refused with a 401, issuing nothing. simplejwt's own serializer
checks the blacklist, then writes it: requests arriving together all pass
the check.

Every refresh token is recorded as outstanding when issued, so revoking a
user's tokens (password change, deactivation, deletion: accounts.signals)
is blacklisting their outstanding rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import aware_utcnow, datetime_from_epoch, datetime_to_epoch

SESSION_CLAIM = "session_start"


class SessionError(Exception):
    """A refresh token that cannot be traded: the view answers 401."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str
    expires_in: int


def session_max_age() -> timedelta:
    return timedelta(seconds=settings.JWT_SESSION_MAX_SECONDS)


def start_session(user) -> TokenPair:
    """Tokens for a user who just proved who they are."""
    return _issue(user, session_start=datetime_to_epoch(aware_utcnow()))


def rotate(raw: str) -> TokenPair:
    """Trade refresh token `raw` for a new pair; it can never be used again."""
    try:
        # Checks the signature, expiry, type and the blacklist.
        old = RefreshToken(raw)  # type: ignore[arg-type]
    except TokenError as exc:
        raise SessionError(str(exc.args[0]) if exc.args else "Token is invalid.") from exc
    # Tokens issued before sessions were tracked count from their own issue time.
    session_start = old.get(SESSION_CLAIM, old.get("iat"))
    if not isinstance(session_start, int):
        raise SessionError("Token is invalid.")
    now = aware_utcnow()
    if datetime_from_epoch(session_start) + session_max_age() <= now:
        raise SessionError("The session has reached its maximum age; log in again.")
    user = (
        get_user_model()
        .objects.filter(**{jwt_settings.USER_ID_FIELD: old.get(jwt_settings.USER_ID_CLAIM)})
        .first()
    )
    if user is None or not user.is_active:
        raise SessionError("No active account found for the given token.")

    with transaction.atomic():
        outstanding, _ = OutstandingToken.objects.get_or_create(
            jti=old[jwt_settings.JTI_CLAIM],
            defaults={
                "user": user,
                "token": raw,
                "created_at": now,
                "expires_at": datetime_from_epoch(old["exp"]),
            },
        )
        try:
            # The arbiter: one blacklist row per token (a unique column).
            with transaction.atomic():
                BlacklistedToken.objects.create(token=outstanding)
        except IntegrityError:
            raise SessionError("Token is blacklisted") from None
        return _issue(user, session_start=session_start)


def revoke_all(user) -> int:
    """Blacklist every unexpired refresh token of `user`; how many."""
    live = OutstandingToken.objects.filter(
        user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    rows = [BlacklistedToken(token=token) for token in live]
    # ignore_conflicts: one being rotated or logged out right now is blacklisted already.
    BlacklistedToken.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def _issue(user, session_start: int) -> TokenPair:
    refresh = RefreshToken()
    refresh[jwt_settings.USER_ID_CLAIM] = str(getattr(user, jwt_settings.USER_ID_FIELD))
    refresh[SESSION_CLAIM] = session_start
    session_end = session_start + settings.JWT_SESSION_MAX_SECONDS
    refresh["exp"] = min(refresh["exp"], session_end)
    access = refresh.access_token
    access["exp"] = min(access["exp"], session_end)
    OutstandingToken.objects.create(
        user=user,
        jti=refresh[jwt_settings.JTI_CLAIM],
        token=str(refresh),
        created_at=refresh.current_time,
        expires_at=datetime_from_epoch(refresh["exp"]),
    )
    expires_in = access["exp"] - datetime_to_epoch(access.current_time)
    return TokenPair(access=str(access), refresh=str(refresh), expires_in=max(0, expires_in))


def flush_expired_tokens() -> int:
    """Delete the records of refresh tokens past their expiry (and their
    blacklist rows, by cascade): an expired token is refused on its own, so
    they only grow the table. What simplejwt's `flushexpiredtokens` does;
    housekeeping calls it (tasks.maintenance)."""
    deleted, _ = OutstandingToken.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
