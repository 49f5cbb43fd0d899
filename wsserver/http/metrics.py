"""GET /metrics: the Prometheus text exposition (wsserver/metrics.py), optionally
behind `metrics: {token: ...}` (Authorization: Bearer)."""

from typing import Any

from flask import Blueprint, Response

from .. import metrics
from .bearer import require_bearer


def blueprint(settings: dict[str, Any] | None) -> Blueprint:
    """`settings`: the `metrics` config section, or None (open)."""
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    def exposition() -> Response:
        if settings is not None:
            require_bearer(settings["token"])
        body, content_type = metrics.render()
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    return bp
