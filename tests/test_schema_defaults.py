"""One home for each default: a schema and the constructor its `_target_` names never disagree.

For every config-group schema whose `_target_` is this project's code, each field that both the schema and the
target's signature give a default must give the same one. What is not compared, and why:
- a schema default that is an interpolation (`${seed}`): it comes from the config, not from a literal;
- a target outside mvqa (pytorch_lightning.Trainer): the schema sets the project's choices over the library's;
- a field a schema subclass overrides from a parent with the same target (curated's `name` over pmc_vqa's):
  the subclass specialises the reader on purpose; the fields it inherits are still compared.
Tuples and lists compare equal, a nested schema whose values are all None equals a None default ("nothing
overridden"), and a `name=None` default stands for the class's own `name`. A nested schema whose target
defaults to None (it builds the nested defaults itself) is compared with the class that holds those (NESTED).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest
from hydra.utils import get_object

import mvqa.schemas


def _schemas() -> list[tuple[str, type]]:
    found = []
    for info in pkgutil.iter_modules(mvqa.schemas.__path__):
        module = importlib.import_module(f"mvqa.schemas.{info.name}")
        found += [(name, cls) for name, cls in module.SCHEMAS.items()]
    return found


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _normal(value, target=None, name=None):
    if isinstance(value, tuple):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        values = dataclasses.asdict(value)
        return None if all(v is None for v in values.values()) else values
    if value is None and name == "name" and isinstance(target, type):
        return getattr(target, "name", None)
    return value


def _inherited_from_same_target(cls: type, field: str, target: str) -> bool | None:
    """True when a parent schema with the same target gives this field the same default; False when the
    schema overrides it; None when no parent has the same target."""
    for parent in cls.__mro__[1:]:
        if not dataclasses.is_dataclass(parent):
            continue
        fields = {f.name: f for f in dataclasses.fields(parent)}
        if "_target_" in fields and fields["_target_"].default == target and field in fields:
            return _default(fields[field]) == _default({f.name: f for f in dataclasses.fields(cls)}[field])
    return None


# (schema, field) -> the class the target builds when given None, whose defaults the nested schema repeats.
NESTED = {("schema_similarity", "rules"): "mvqa.curate.difficulty.SimilarityRules",
          ("schema_predictions", "rules"): "mvqa.curate.difficulty.SimilarityRules"}

TARGETED = [(name, cls) for name, cls in _schemas()
            if any(f.name == "_target_" for f in dataclasses.fields(cls))]


def test_the_check_sees_the_schemas():
    names = {name for name, _ in TARGETED}
    assert {"schema_synthetic", "schema_kcenter_svd", "schema_pmc_vqa", "schema_trace_format"} <= names, names


@pytest.mark.parametrize("name, cls", TARGETED, ids=[n for n, _ in TARGETED])
def test_schema_defaults_equal_the_target_defaults(name, cls):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    target_path = fields["_target_"].default
    if not target_path.startswith("mvqa."):
        pytest.skip(f"{target_path} is a library's: the schema sets the project's choices over its defaults")
    target = get_object(target_path)
    params = inspect.signature(target).parameters
    disagree = []
    for field, f in fields.items():
        p = params.get(field)
        schema_default = _default(f)
        if p is None or p.default is inspect.Parameter.empty or schema_default is dataclasses.MISSING:
            continue
        if isinstance(schema_default, str) and "${" in schema_default:
            continue
        if _inherited_from_same_target(cls, field, target_path) is False:
            continue
        nested = dataclasses.is_dataclass(schema_default) and _normal(schema_default) is not None
        if nested and p.default is None:
            if (name, field) not in NESTED:
                disagree.append(f"{field}: a nested schema, but {target_path} defaults to None "
                                "(add it to NESTED)")
            elif dataclasses.asdict(schema_default) != dataclasses.asdict(get_object(NESTED[name, field])()):
                disagree.append(f"{field}: schema {schema_default!r}, {NESTED[name, field]} differs")
            continue
        if _normal(schema_default) != _normal(p.default, target, field):
            disagree.append(f"{field}: schema {schema_default!r}, {target_path} {p.default!r}")
    assert not disagree, (f"{name} and its target disagree (give each default one home):\n"
                          + "\n".join(disagree))


def test_the_synthetic_world_takes_its_defaults_from_the_schema():
    from mvqa.data.synthetic import WorldParams, read_synthetic
    from mvqa.schemas.dataset_synthetic import SyntheticConf

    schema = SyntheticConf()
    world = WorldParams()
    for field in dataclasses.fields(WorldParams):
        if field.name != "seed":  # ${seed} in the schema
            assert getattr(world, field.name) == getattr(schema, field.name), field.name
    world_fields = {f.name for f in dataclasses.fields(WorldParams)}
    world_params = set(inspect.signature(read_synthetic).parameters) & world_fields
    assert not world_params, f"read_synthetic repeats the world's fields {world_params}: take them as **world"
