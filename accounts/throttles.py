"""Throttles: login per IP and per username, task creation per user.

Rates come from settings (REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], set from
the environment). They are read on every request rather than once at import,
as DRF's base class does, so a changed setting takes effect at once.
A refused request gets a 429 with a Retry-After header.

Requests are counted in fixed windows of the rate's period (a minute for
"10/min"), with one atomic increment in the cache per request. DRF's own
throttle keeps a list of timestamps that it reads, changes and writes back:
requests arriving together (threads, processes, hosts sharing a Redis cache)
all read the same list, and all of them pass. A counter cannot be raced that
way, and costs the same at any rate. The price: up to twice the rate can pass
around a window's edge.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


class RateFromSettings(SimpleRateThrottle):
    period: int = 1

    def get_rate(self) -> str | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope or "")
        return str(rate) if rate is not None else None

    def allow_request(self, request, view) -> bool:
        return self.allow_key(self.get_cache_key(request, view))

    def allow_key(self, key: str | None) -> bool:
        """Count one request under `key` (None: not counted); False once over the rate."""
        self.rate = self.get_rate()
        if self.rate is None or key is None:
            return True
        num_requests, duration = self.parse_rate(self.rate)
        if num_requests is None or duration is None:
            return True
        self.num_requests, self.duration, self.period = num_requests, duration, duration
        self.now = self.timer()
        window = int(self.now // self.period)
        # The window is part of the key, so a counter never has to be reset:
        # a new window starts a new key, and the old one expires.
        ends_in = (window + 1) * self.period - self.now
        return self._count(f"{key}_{window}", timeout=int(ends_in) + 1) <= num_requests

    def _count(self, key: str, timeout: int) -> int:
        """This request's number in its window, counted atomically."""
        try:
            return self.cache.incr(key)
        except ValueError:  # the first request of the window (or its key expired)
            if self.cache.add(key, 1, timeout):
                return 1
            return self.cache.incr(key)  # another request created it just now

    def wait(self) -> float:
        """Seconds until the current window ends (Retry-After, rounded up)."""
        window_end = (int(self.now // self.period) + 1) * self.period
        return window_end - self.now


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
        return self.key_for(data.get("username"))

    def key_for(self, username) -> str | None:
        if not isinstance(username, str) or not username.strip():
            return None  # refused by the view anyway; counted by the IP throttle
        ident = username.strip().lower()[:150].encode("utf-8", "replace").hex()
        return self.cache_format % {"scope": self.scope, "ident": ident}


def login_attempt_wait(request, username) -> float | None:
    """Count a login attempt made outside the API (the admin's form) on the
    very counters of `/login`, per client address, then per username, so
    neither door adds to the other's budget. None if it may go ahead, else
    the seconds until it may."""
    by_ip = LoginIPThrottle()
    if not by_ip.allow_key(by_ip.get_cache_key(request, None)):
        return by_ip.wait()
    by_username = LoginUsernameThrottle()
    if not by_username.allow_key(by_username.key_for(username)):
        return by_username.wait()
    return None


class TaskCreateThrottle(RateFromSettings):
    """Tasks one user may submit."""

    scope = "task_create"

    def get_cache_key(self, request, view) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
