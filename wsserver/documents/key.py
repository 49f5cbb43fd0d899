"""The name of a document: (tenant, app, name), as every layer refers to it."""

from typing import NamedTuple


class DocKey(NamedTuple):
    tenant: str
    app: str
    name: str
