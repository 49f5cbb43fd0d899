"""Regions: which region serves a document, and the way there. Owns the region map
(`map.py`: regions, pins, redirect URLs), the 4009 gate of a handshake (`gate.py`) and
the global document registry (`registry/`: claims per document, on the embedded SQLite,
Redis or Postgres).
"""
