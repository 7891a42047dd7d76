"""What every simulated endpoint shares: error answers, query parameters, page tokens."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from urllib.parse import parse_qs


class ApiError(Exception):
    """An error answer: HTTP status, error type and message (the API's error shape)."""

    def __init__(
        self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


def invalid_request(message: str) -> ApiError:
    """Return a 400 ``invalid_request_error`` answer with ``message``."""
    return ApiError(400, "invalid_request_error", message)


class Query:
    """Query parameters, with arrays sent as ``name[]=a&name[]=b``."""

    def __init__(self, raw: str) -> None:
        self.raw = parse_qs(raw, keep_blank_values=True)

    def one(self, name: str) -> str | None:
        values = self.raw.get(name)
        return values[-1] if values else None

    def many(self, name: str) -> list[str]:
        return [*self.raw.get(f"{name}[]", []), *self.raw.get(name, [])]

    def has(self, name: str) -> bool:
        return f"{name}[]" in self.raw or name in self.raw

    def names(self) -> set[str]:
        return {k[:-2] if k.endswith("[]") else k for k in self.raw}

    def time(self, name: str, *, required: bool = False) -> datetime | None:
        value = self.one(name)
        if value is None or value == "":
            if required:
                raise invalid_request(f"{name}: Field required")
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise invalid_request(f"{name}: Input should be a valid RFC 3339 datetime") from None
        if parsed.tzinfo is None:
            raise invalid_request(f"{name}: Input should have timezone info")
        return parsed.astimezone(UTC)

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.one(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise invalid_request(f"{name}: Input should be a valid integer") from None
        if not lo <= number <= hi:
            raise invalid_request(f"{name}: Input should be between {lo} and {hi}")
        return number


def page_token(offset: int, at: datetime | None = None) -> str:
    """Return the cursor of the page at ``offset`` (of a listing as it was at ``at``)."""
    raw = str(offset) if at is None else f"{offset}@{at.isoformat()}"
    return "page_" + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _page_parts(token: str) -> tuple[int, datetime | None]:
    try:
        raw = token.removeprefix("page_")
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        offset, _, at = text.partition("@")
        return int(offset), (datetime.fromisoformat(at) if at else None)
    except (ValueError, UnicodeDecodeError):
        raise invalid_request("page: invalid page token") from None


def page_offset(token: str | None) -> int:
    """Return the offset a page cursor points at (0 without one)."""
    return _page_parts(token)[0] if token else 0


def page_time(token: str | None) -> datetime | None:
    """Return the time of the listing a cursor belongs to (None: the first page, or no time).

    A listing ordered by amounts reorders itself as usage arrives; the real API's cursors are
    a snapshot, so the simulator serves every later page as of the first page's time.
    """
    return _page_parts(token)[1] if token else None
