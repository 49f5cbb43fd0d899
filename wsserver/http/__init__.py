"""Everything plain HTTP, as Flask blueprints that `create_app` registers: `/healthz` and
the JSON error handlers (health.py), `/readyz` (probes.py), `/metrics`, `/discovery`,
the document API `/v1/documents` (documents.py), the admin console and its API
(admin/: the routes, the board, the page and its files in admin/static), and the pieces
they share (bearer.py: token comparison; cors.py).
"""
