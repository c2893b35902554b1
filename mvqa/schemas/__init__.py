"""Dataclass schemas for every config group, stored in Hydra's ConfigStore.

One module per group: `GROUP` names the group and `SCHEMAS` maps schema names to dataclasses. A group's YAML
options start with `defaults: [<schema name>, _self_]`, so a misspelt key fails at compose time with the key
named. Modules are discovered, so adding a group needs no edit here.
"""

from __future__ import annotations

import importlib
import pkgutil

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
