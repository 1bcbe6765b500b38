"""What the client raises when the gateway says no."""

from __future__ import annotations

from typing import Any


class VardeHTTPError(Exception):
    """The gateway said no: ``status``, machine ``code``, human ``detail``, per-site ``sites``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.code = str(body.get("error", "http_error"))
        raw = body.get("detail", body)
        self.detail = raw if isinstance(raw, str) else str(raw)
        self.sites: list[dict[str, Any]] = list(body.get("sites", []))
        super().__init__(f"{status} {self.code}: {self.detail}")
