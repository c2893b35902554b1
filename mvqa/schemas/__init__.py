"""Dataclass schemas for every config group, stored in Hydra's ConfigStore.

One module per group: `GROUP` names the group and `SCHEMAS` maps schema names to dataclasses. A group's YAML
options start with `defaults: [<schema name>, _self_]`, so a misspelt key fails at compose time with the key
named. Modules are discovered, so adding a group needs no edit here.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from hydra.core.config_store import ConfigStore

_registered = False


def register_configs() -> None:
    global _registered
    if _registered:
        return
    cs = ConfigStore.instance()
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, node in module.SCHEMAS.items():
            cs.store(group=module.GROUP, name=name, node=node)
    _registered = True


def schema_default(schema: type, field: str) -> Any:
    """A schema field's default, for the signature of the code its `_target_` names: the schema is the one
    home of each default. For a plain default `Schema.field` reads the same; this also serves a
    `default_factory` field, whose list comes back as a tuple (a default made once at import time must not be
    mutable)."""
    f = schema.__dataclass_fields__[field]
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if value is dataclasses.MISSING:
        raise ValueError(f"{schema.__name__}.{field} has no default")
    return tuple(value) if isinstance(value, list) else value
