"""CORS for the HTTP routes browsers call with a token in a header (/discovery, the
document API).

Such a request is preceded by a preflight (OPTIONS) that carries no token: which app
is asking is unknown then. So:

- preflight, and error answers (the app may be unknown): allowed for the union of
  every configured app's `allowed_origins`, or for any origin when some app sets no
  list. Errors tell nothing about any document.
- a successful answer: allowed only for the origins of the token's app (any origin
  when it sets no list); another origin is refused 403/4003 by the origin check itself.

Allowed origins are echoed in Access-Control-Allow-Origin with `Vary: Origin`; others
get no CORS header at all (the browser then blocks the response). No credentials mode:
the token is a header, not a cookie.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeGuard

from flask import Response, jsonify

if TYPE_CHECKING:
    from ..errors import WsServerError
    from ..handshake.auth import Authenticator
    from ..handshake.tenants import App

PREFLIGHT_MAX_AGE = 600


def origins_union(authenticator: Authenticator) -> set[str] | None:
    """Every configured app's allowed origins, or None when some app allows any."""
    union: set[str] = set()
    for tenant in authenticator.tenants.values():
        for app in tenant.apps.values():
            if app.allowed_origins is None:
                return None
            union.update(app.allowed_origins)
    return union


class Cors:
    """The CORS headers of one set of routes: `methods` and `headers` are what a
    preflight allows, `expose` the response headers a page may read."""

    def __init__(
        self,
        authenticator: Authenticator,
        methods: Iterable[str],
        headers: Iterable[str] = ("Authorization",),
        expose: Iterable[str] = ("Retry-After",),
    ) -> None:
        self.union = origins_union(authenticator)
        self.methods = ", ".join(methods)
        self.headers = ", ".join(headers)
        self.expose = ", ".join(expose)

    def _allow(self, response: Response, origin: str) -> None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = self.expose

    def _preflight_allows(self, origin: str | None) -> TypeGuard[str]:
        return origin is not None and (self.union is None or origin in self.union)

    def preflight(self, origin: str | None) -> Response:
        """The 204 answer to an OPTIONS request from `origin`."""
        response = Response(status=204)
        del response.headers["Content-Type"]
        if self._preflight_allows(origin):
            self._allow(response, origin)
            response.headers["Access-Control-Allow-Methods"] = self.methods
            response.headers["Access-Control-Allow-Headers"] = self.headers
            response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
        response.headers["Vary"] = "Origin"
        return response

    def answer(self, response: Response, origin: str | None, app: App) -> Response:
        """A successful `response` for the token's `app`, seen from `origin`."""
        if origin is not None and app.allows_origin(origin):
            self._allow(response, origin)
        return self._finish(response)

    def error(
        self, error: WsServerError, origin: str | None, body: dict[str, Any] | None = None
    ) -> Response:
        """The JSON answer `{"error", "code"}` (or `body`) of a WsServerError."""
        response = jsonify(error.to_json() if body is None else body)
        response.status_code = error.http_status
        response.headers.update(error.http_headers())
        if self._preflight_allows(origin):
            self._allow(response, origin)
        return self._finish(response)

    @staticmethod
    def _finish(response: Response) -> Response:
        response.headers["Vary"] = "Origin"
        response.headers["Cache-Control"] = "no-store"
        return response
