"""The y-websocket wire protocol, as bytes: `codec.py` (sync and awareness messages,
strict decoding; every malformed message is a ProtocolViolation or InvalidPayload) and
`update.py` (where a Yjs update ends: exactly one update, nothing after it). No sockets,
no documents.
"""
