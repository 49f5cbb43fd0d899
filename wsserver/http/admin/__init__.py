"""The admin console: a JSON API over the live documents, and one page that uses it.

Enabled by `admin: {token: ...}`; without it every route here answers 404. Every API
route requires `Authorization: Bearer <admin token>` (401 without, 403 wrong; JSON).

    GET    /admin                                   the page (static/admin.html; asks for the token)
    GET    /admin/api/documents                     {"documents": [summary, ...]}: live ones
    GET    /admin/api/documents/T/A/NAME            summary + "content" (stored ones too)
    GET    /admin/api/documents/T/A/NAME/events     server-sent events: that detail again
                                                    each time it changes
    DELETE /admin/api/documents/T/A/NAME            close its connections (4404), move it
                                                    to the trash (http/versions.py)
    DELETE /admin/api/documents/T/A/NAME/purge      the same, then delete it from storage
                                                    (versions and trash entry too)

A summary is {"tenant", "app", "name", "connections", "users" (distinct `sub`s),
"awareness" ({client id: state}), "bytes" (stored size), "updated" (ISO 8601 of the
last change stored by a process, null when unknown)}. "content" is every root type as
JSON (wsserver/documents/content.py), from a live copy here, else from storage.

With `redis`, every process publishes its live documents on a board in Redis
(`RedisBoard`), so any process answers for all of them: the figures are summed over
processes, and a delete reaches every process's connections.
"""

from pathlib import Path

PAGE = Path(__file__).parent / "static" / "admin.html"

from .api import blueprint  # noqa: E402  (api reads PAGE)
from .audit import AuditTrail, Guard  # noqa: E402
from .board import RedisBoard  # noqa: E402
from .cluster import Cluster  # noqa: E402
from .inspector import Inspector  # noqa: E402
from .wiring import console  # noqa: E402

__all__ = [
    "PAGE",
    "AuditTrail",
    "Cluster",
    "Guard",
    "Inspector",
    "RedisBoard",
    "blueprint",
    "console",
]
