"""GET /discovery?documentName=NAME: where a document lives, answerable by any node.

    200 {"region": ..., "url": "<base URL>/<name>", "isNew": bool, "access": "read"|"write"}

`access` is the token's (its `access` claim): an app can make its editor read-only
before connecting.

The request passes exactly the WebSocket handshake's checks (Handshake.authenticate:
the gates' check_request, hence the per-IP rate limit, then name, token, tenant/app/
origin, the token's `documents` claim), and errors answer `{"error", "code"}` with the
close code the WebSocket would have got: 400/4007, 401/4001 or 4002, 403/4003, 429/4006
(with Retry-After), 503/1013 when the registry cannot be reached. The token comes from
`Authorization: Bearer` (recommended: it stays out of access logs) or `?token=`.
Discovery never claims.

CORS: as wsserver/http/cors.py says (preflight and errors for every configured origin,
a 200 for the origins of the token's app).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, jsonify, request

from ..errors import WsServerError
from ..handshake.claims import ACCESS_READ, ACCESS_WRITE
from .cors import Cors

if TYPE_CHECKING:
    from ..handshake.handshake import Handshake
    from ..regions.gate import RegionGate


def blueprint(handshake: Handshake, region_gate: RegionGate) -> Blueprint:
    """The /discovery route, answering with `handshake`'s checks and `region_gate`."""
    bp = Blueprint("discovery", __name__)
    cors = Cors(handshake.authenticator, ("GET", "OPTIONS"))

    @bp.route("/discovery", methods=["GET", "OPTIONS"], provide_automatic_options=False)
    def discovery():
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS":
            return cors.preflight(origin)
        try:
            # A missing name fails the name check (4007) after the rate check, exactly as
            # the WebSocket handshake would.
            name = request.args.get("documentName", "")
            key, principal, app = handshake.authenticate(request.environ, "/" + name)
            found = region_gate.discover(key)
            found["access"] = ACCESS_READ if principal.read_only else ACCESS_WRITE
            return cors.answer(jsonify(found), origin, app)
        except WsServerError as error:
            return cors.error(error, origin)

    return bp
