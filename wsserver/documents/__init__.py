"""Live documents: rooms (one per loaded document), the manager that loads and unloads
them, and their storage (`documents.storage`)."""

from .key import DocKey

__all__ = ["DocKey"]
