"""Who may open which document: tokens and the ordered checks of a WebSocket handshake.

Owns `auth.py` (tenants, apps and their keys; a token's claims checked and typed into a
`Principal`: the documents/access claims, 4001/4002/4003) and `handshake.py` (the checks
in order, the `Session` a passed handshake holds, the `Gate` interface the limits and the
regions plug into). Refuses with the close codes of wsserver/errors.py; opens nothing.
"""
