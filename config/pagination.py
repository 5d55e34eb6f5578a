"""What every list and detail view shares: ids from paths, and cursor pages
whose cursor a client cannot turn into a database error."""

from __future__ import annotations

from datetime import UTC

from django.utils.dateparse import parse_datetime
from rest_framework import exceptions
from rest_framework.pagination import CursorPagination

# Ids are bigints; a larger number cannot name a row, so it is simply not found.
MAX_ID = 2**63 - 1


def parse_id(raw: str, noun: str) -> int:
    """A path's id as an integer; a 400 naming `noun` when it is not one."""
    if not isinstance(raw, str) or not raw.isascii() or not raw.lstrip("-").isdigit():
        raise exceptions.ValidationError({"id": [f"A {noun} id is an integer."]})
    return int(raw)


def _valid_position(field: str, position: str) -> bool:
    if field == "id":
        return position.isascii() and position.isdigit() and int(position) <= MAX_ID
    try:
        moment = parse_datetime(position)
        return moment is not None and moment.astimezone(UTC) is not None
    except (ValueError, OverflowError):
        return False


class NewestFirst(CursorPagination):
    """Newest first by id (or by the time field a subclass orders on)."""

    ordering: str | tuple[str, ...] = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def decode_cursor(self, request):
        # A cursor is only base64 the client can forge: its position goes
        # into the query as is, so one that is not a value of the ordering
        # field would fail in the database (a 500). A bad cursor is a bad
        # query parameter: a 400, where DRF answers 404.
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound:
            cursor = None
        else:
            if cursor is None or cursor.position is None:
                return cursor
            first = self.ordering if isinstance(self.ordering, str) else self.ordering[0]
            if _valid_position(first.lstrip("-"), cursor.position):
                return cursor
        raise exceptions.ValidationError(
            {self.cursor_query_param: ["Not a cursor of this list: follow next or previous."]}
        )

    def get_page_size(self, request):
        # DRF falls back to the default on a value that is no page size; a
        # client should hear that it asked for nonsense. Above the most, DRF
        # gives the most, as documented.
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit() and len(raw) < 10) or int(raw) < 1:
            raise exceptions.ValidationError(
                {
                    self.page_size_query_param: [
                        f"A positive integer (at most {self.max_page_size} are given)."
                    ]
                }
            )
        return min(int(raw), self.max_page_size)
