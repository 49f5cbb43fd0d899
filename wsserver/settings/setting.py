"""One setting of the table (table.py): its name, default, validator and doc, declared
once (gunicorn's way)."""

from __future__ import annotations

from typing import Any

from ..support.validators import Validator


class Setting:
    __slots__ = ("name", "default", "validate", "doc")

    def __init__(self, name: str, default: Any, validate: Validator, doc: str) -> None:
        self.name, self.default, self.validate, self.doc = name, default, validate, doc
