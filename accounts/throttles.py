"""Throttles: login per IP and per username, task creation per user.

Rates come from settings (REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], set from
the environment). They are read on every request rather than once at import,
as DRF's base class does, so a changed setting takes effect at once.
A refused request gets a 429 with a Retry-After header.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


class RateFromSettings(SimpleRateThrottle):
    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)


class LoginIPThrottle(RateFromSettings):
    """Login attempts from one client address."""

    scope = "login_ip"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginUsernameThrottle(RateFromSettings):
    """Login attempts for one username, from anywhere (slows password guessing
    spread over many addresses)."""

    scope = "login_username"

    def get_cache_key(self, request, view) -> str | None:
        data = request.data if isinstance(request.data, dict) else {}
        username = data.get("username")
        if not isinstance(username, str) or not username.strip():
            return None  # refused by the view anyway; counted by the IP throttle
        ident = username.strip().lower()[:150].encode("utf-8", "replace").hex()
        return self.cache_format % {"scope": self.scope, "ident": ident}


class TaskCreateThrottle(RateFromSettings):
    """Tasks one user may submit."""

    scope = "task_create"

    def get_cache_key(self, request, view) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
