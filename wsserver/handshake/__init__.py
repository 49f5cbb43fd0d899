"""Who may open which document: tokens and the ordered checks of a WebSocket handshake.

Owns `tenants.py` (the `auth.tenants` setting: tenants, apps and their keys),
`auth.py` (a token verified against those keys, 4001/4002; development tokens),
`claims.py` (the claims' types, the documents/access claims, the `Principal` a verified
token speaks for: 4002/4003) and `handshake.py` (the checks in order, the `Session` a
passed handshake holds, the `Gate` interface the limits and the regions plug into).
Refuses with the close codes of wsserver/errors.py; opens nothing.
"""
