"""Reads of API keys: by owner, or by the key a request presents."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from .models import APIKey

# The library's keys: an 8-character prefix, a dot, a 32-character secret.
MAX_KEY_LENGTH = 100


def api_keys_of(*, user) -> QuerySet[APIKey]:
    """Every key of `user`, revoked and expired ones included, newest first."""
    return APIKey.objects.filter(user=user).order_by("-created")


def api_key_of(*, user, prefix: str) -> APIKey | None:
    """`user`'s key with this prefix, or None (also for another user's)."""
    if not isinstance(prefix, str) or len(prefix) > MAX_KEY_LENGTH:
        return None
    return APIKey.objects.filter(user=user, prefix=prefix).first()


def live_api_key(raw_key: str) -> APIKey | None:
    """The unrevoked, unexpired key `raw_key` is, with its user; else None."""
    if len(raw_key) > MAX_KEY_LENGTH or "." not in raw_key:
        return None
    prefix = raw_key.partition(".")[0]
    api_key = APIKey.objects.select_related("user").filter(prefix=prefix, revoked=False).first()
    # Compared through the stored hash, in constant time (the library's check).
    if api_key is None or not api_key.is_valid(raw_key):
        return None
    if api_key.expiry_date is not None and api_key.expiry_date <= timezone.now():
        return None
    return api_key


def unrevoked_api_key_count(*, user) -> int:
    return APIKey.objects.filter(user=user, revoked=False).count()
