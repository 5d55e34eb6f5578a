from __future__ import annotations

from django.conf import settings
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class APIKey(AbstractAPIKey):
    """A key a program sends as `Authorization: Api-Key <key>` to act as its owner.

    Only a hash of the key is stored (rest_framework_api_key: a random
    8-character prefix, then SHA-512 of the whole key); the key itself is
    shown once, when it is created. The prefix names the key in the API.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        indexes = [models.Index(fields=["user", "-created"], name="apikey_user_created")]


class ThrottleCounter(models.Model):
    """One throttle counter (accounts.counters.DatabaseCounterCache): a window's
    count of requests under one key, until it expires."""

    key = models.CharField(max_length=255, unique=True)
    value = models.BigIntegerField()
    # Seconds since the epoch; rows past it are dead and deleted as new ones come.
    expires = models.FloatField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key} = {self.value}"
