"""One WebSocket, below any document: RFC 6455 framing (`frames.py`), a connection's
outbox and its close (`connection.py`), the pywsgi request handler with its header
timeout (`handler.py`) and refusals that wait without a greenlet (`delayed_close.py`).
What a connection is *for* (the handshake, the room) is endpoint.py's, a floor above.
"""
