"""GET /discovery?documentName=NAME: where a document lives, answerable by any node.

    200 {"region": ..., "url": "<base URL>/<name>", "isNew": bool}

The request passes exactly the WebSocket handshake's checks (Handshake.authenticate:
the gates' check_request, hence the per-IP rate limit, then name, token, tenant/app/
origin, the token's `documents` claim), and errors answer `{"error", "code"}` with the
close code the WebSocket would have got: 400/4007, 401/4001 or 4002, 403/4003, 429/4006
(with Retry-After), 503/1013 when the registry cannot be reached. The token comes from
`Authorization: Bearer` (recommended: it stays out of access logs) or `?token=`.
Discovery never claims.

CORS. Browsers call this from the app's page, with the token in a header, so they
send a preflight (OPTIONS) first, and the preflight carries no token: which app is
asking is unknown then. So:

- preflight, and error answers (the app may be unknown): allowed for the union of
  every configured app's `allowed_origins`, or for any origin when some app sets no
  list. Errors tell nothing about any document.
- a 200 answer: allowed only for the origins of the token's app (any origin when it
  sets no list); another origin is refused 403/4003 by the origin check itself.

Allowed origins are echoed in Access-Control-Allow-Origin with `Vary: Origin`; others
get no CORS header at all (the browser then blocks the response). No credentials mode:
the token is a header, not a cookie.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, jsonify, request

from ..errors import WsServerError

if TYPE_CHECKING:
    from ..handshake.auth import Authenticator
    from ..handshake.handshake import Handshake
    from ..regions.gate import RegionGate

if TYPE_CHECKING:
    from ..handshake.auth import Authenticator
    from ..handshake.handshake import Handshake
    from ..regions.gate import RegionGate

PREFLIGHT_MAX_AGE = 600


def origins_union(authenticator: Authenticator) -> set[str] | None:
    """Every configured app's allowed origins, or None when some app allows any."""
    union = set()
    for tenant in authenticator.tenants.values():
        for app in tenant.apps.values():
            if app.allowed_origins is None:
                return None
            union.update(app.allowed_origins)
    return union


def blueprint(handshake: Handshake, region_gate: RegionGate) -> Blueprint:
    """The /discovery route, answering with `handshake`'s checks and `region_gate`."""
    bp = Blueprint("discovery", __name__)
    union = origins_union(handshake.authenticator)

    def allow(response, origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"

    def preflight_allows(origin):
        return origin is not None and (union is None or origin in union)

    @bp.route("/discovery", methods=["GET", "OPTIONS"], provide_automatic_options=False)
    def discovery():
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS":
            response = Response(status=204)
            del response.headers["Content-Type"]
            if preflight_allows(origin):
                allow(response, origin)
                response.headers["Access-Control-Allow-Methods"] = "GET, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = "Authorization"
                response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
            response.headers["Vary"] = "Origin"
            return response
        try:
            # A missing name fails the name check (4007) after the rate check, exactly as
            # the WebSocket handshake would.
            name = request.args.get("documentName", "")
            key, _, app = handshake.authenticate(request.environ, "/" + name)
            response = jsonify(region_gate.discover(key))
            if origin is not None and app.allows_origin(origin):
                allow(response, origin)
        except WsServerError as error:
            response = jsonify(error.to_json())
            response.status_code = error.http_status
            response.headers.update(error.http_headers())
            if preflight_allows(origin):
                allow(response, origin)
        response.headers["Vary"] = "Origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    return bp
