"""What users do with API keys: create, revoke; and what a request using one records."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from tasks.services import ServiceError

from . import selectors
from .models import APIKey

# `last_used_at` is written at most this often per key, so a busy program
# does not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TooManyAPIKeys(ServiceError):
    status = 429
    code = "cap_reached"


class InvalidAPIKey(ServiceError):
    code = "invalid"

    def __init__(self, fields: dict) -> None:
        super().__init__("Invalid input: " + ", ".join(sorted(fields)) + ".", fields=fields)


def create_api_key(*, user, name: str, expires_at: datetime | None = None) -> tuple[APIKey, str]:
    """Create a key for `user`; return it with the key itself, which is
    stored only hashed and cannot be shown again."""
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidAPIKey({"expires_at": ["Must be in the future."]})
    cap = settings.API_KEYS_MAX_PER_USER
    with transaction.atomic():
        # Two creations at once must not both pass the cap: on PostgreSQL
        # they queue on the owner's row; SQLite's write transaction (IMMEDIATE)
        # already runs them one at a time.
        if cap and connection.features.has_select_for_update:
            users = get_user_model().objects.filter(pk=user.pk)
            list(users.select_for_update(no_key=True).values_list("pk", flat=True))
        if cap and selectors.unrevoked_api_key_count(user=user) >= cap:
            raise TooManyAPIKeys(
                f"You have {cap} unrevoked API keys, the most allowed "
                "(API_KEYS_MAX_PER_USER); revoke one first."
            )
        api_key, key = APIKey.objects.create_key(user=user, name=name, expiry_date=expires_at)
    return cast(APIKey, api_key), key


def revoke_api_key(*, api_key: APIKey) -> None:
    """Revoke a key for good (revoking it again changes nothing)."""
    APIKey.objects.filter(pk=api_key.pk, revoked=False).update(revoked=True)
    api_key.revoked = True


def note_api_key_use(*, api_key: APIKey) -> None:
    now = timezone.now()
    last = api_key.last_used_at
    if last is not None and now - last < LAST_USED_RESOLUTION:
        return
    # Conditional, so requests arriving together write it once.
    APIKey.objects.filter(pk=api_key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    api_key.last_used_at = now
