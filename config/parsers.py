"""The JSON parser every API view uses.

Standard JSON allows things the rest of the stack cannot store or survive:
`\\u0000` inside strings (PostgreSQL text and jsonb refuse NUL), unpaired
surrogates like `\\ud800` (not encodable as UTF-8, so no database driver takes
them), numbers too large for a float (Python reads `1e999` as infinity, which
PostgreSQL's jsonb refuses), and nesting deep enough to exhaust Python's
recursion limit. They are refused here with a 400, before any view sees the
data. The literals NaN and Infinity are already refused by DRF's strict parsing.
"""

from __future__ import annotations

import math
import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(self._too_deep()) from None
        check_storable(data, settings.MAX_JSON_DEPTH)
        return data

    @staticmethod
    def _too_deep() -> str:
        return f"JSON parse error - nested deeper than {settings.MAX_JSON_DEPTH} levels."


def check_storable(data, max_depth: int) -> None:
    """Raise ParseError for NUL characters, unpaired surrogates, infinite
    numbers or nesting over `max_depth`. Iterative, so hostile input cannot
    exhaust the stack here."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if UNSTORABLE.search(value):
                raise ParseError(
                    "JSON parse error - strings may not contain NUL characters (\\u0000) "
                    "or unpaired surrogates."
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ParseError("JSON parse error - a number is too large.")
        elif isinstance(value, (dict, list)):
            if depth >= max_depth:
                raise ParseError(StrictJSONParser._too_deep())
            items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
            for key, item in items:
                if key is not None:
                    stack.append((key, depth + 1))
                stack.append((item, depth + 1))
