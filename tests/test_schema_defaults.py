"""One home for each default: a schema and the constructor its `_target_` names never disagree, and the
constructor writes no default of its own for a field the schema gives one: it reads the schema's
(`Schema.field`, or `schema_default(Schema, "field")` for a list), so each value is written once.

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

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import sys
import textwrap

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
# A schema whose fields the target passes on as **kwargs to a class, which gives them their defaults.
FORWARDED = [("mvqa.schemas.engine.GenerationDefaults", "mvqa.generation.engine.GenerationParams"),
             *{("mvqa.schemas.scorer.SimilarityRulesConf", cls) for cls in NESTED.values()}]

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


# ------------------------------------------------------------------------------------------ written once
def _concrete(f: dataclasses.Field):
    """The schema's own value for a field (not MISSING, not an interpolation), else MISSING."""
    value = _default(f)
    if value == "???" or (isinstance(value, str) and "${" in value):
        return dataclasses.MISSING
    return value


def _source_tree(obj) -> ast.Module:
    return ast.parse(textwrap.dedent(inspect.getsource(obj)))


def _written_defaults(target) -> dict[str, ast.expr]:
    """Parameter -> the expression its default is written as in the source that defines the target's
    signature: a function's def, a class's (or an inherited) __init__, or a dataclass's body."""
    if dataclasses.is_dataclass(target):
        body = _source_tree(target).body[0].body
        return {a.target.id: a.value for a in body if isinstance(a, ast.AnnAssign) and a.value is not None}
    if isinstance(target, type):
        target = next(c for c in target.__mro__ if "__init__" in vars(c)).__init__
    fn = _source_tree(target).body[0]
    args = fn.args
    positional = args.posonlyargs + args.args
    found = {a.arg: d for a, d in zip(positional[len(positional) - len(args.defaults):], args.defaults)}
    found |= {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None}
    return found


def _reads_a_schema(expr: ast.expr, field: str, module: str) -> bool:
    """`Schema.field` or `schema_default(Schema, "field")`, with Schema a class from mvqa.schemas."""
    def schema(node):
        cls = isinstance(node, ast.Name) and vars(sys.modules[module]).get(node.id)
        return isinstance(cls, type) and cls.__module__.startswith("mvqa.schemas.")

    if isinstance(expr, ast.Attribute):
        return expr.attr == field and schema(expr.value)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "schema_default":
        return (len(expr.args) == 2 and schema(expr.args[0]) and isinstance(expr.args[1], ast.Constant)
                and expr.args[1].value == field)
    return False


def _class_name_reads_a_schema(target: type) -> bool:
    owner = next((c for c in target.__mro__ if "name" in vars(c)), None)
    if owner is None:
        return False
    body = _source_tree(owner).body[0].body
    assigns = [a for a in body if isinstance(a, ast.Assign) and [t.id for t in a.targets
                                                                  if isinstance(t, ast.Name)] == ["name"]]
    return bool(assigns) and _reads_a_schema(assigns[0].value, "name", owner.__module__)


def _written_twice(schema: type, target) -> list[str]:
    module = target.__module__
    written = _written_defaults(target)
    twice = []
    for f in dataclasses.fields(schema):
        value = _concrete(f)
        if f.name not in written or value is dataclasses.MISSING:
            continue
        expr = written[f.name]
        if _reads_a_schema(expr, f.name, module):
            continue
        none = isinstance(expr, ast.Constant) and expr.value is None
        if none and dataclasses.is_dataclass(value):
            continue  # a nested schema: None is "nothing overridden" (NESTED/FORWARDED check what it builds)
        if none and f.name == "name" and isinstance(target, type) and _class_name_reads_a_schema(target):
            continue  # the class's own name, itself read from the schema
        twice.append(f"{f.name} = {ast.unparse(expr)} (the schema's is {value!r})")
    return twice


@pytest.mark.parametrize("name, cls", TARGETED, ids=[n for n, _ in TARGETED])
def test_each_default_is_written_once(name, cls):
    target_path = {f.name: f for f in dataclasses.fields(cls)}["_target_"].default
    if not target_path.startswith("mvqa."):
        pytest.skip(f"{target_path} is a library's: its defaults are not this project's to move")
    twice = _written_twice(cls, get_object(target_path))
    assert not twice, (f"{target_path} writes its own default for {name}'s fields; read the schema's "
                       "(Schema.field or schema_default(Schema, 'field')):\n" + "\n".join(twice))


@pytest.mark.parametrize("schema_path, target_path", FORWARDED)
def test_forwarded_defaults_are_the_schemas(schema_path, target_path):
    schema, target = get_object(schema_path), get_object(target_path)
    built = target()
    shared = [f for f in dataclasses.fields(schema) if hasattr(built, f.name)]
    assert shared, f"{schema_path} and {target_path} share no field: the pair is stale"
    for f in shared:
        if _concrete(f) is not dataclasses.MISSING:
            assert getattr(built, f.name) == _concrete(f), f.name
    assert not _written_twice(schema, target), _written_twice(schema, target)


def test_the_written_once_check_catches_a_literal(tmp_path, monkeypatch):
    """The check itself: a target that writes a literal the schema also holds is caught; one that reads the
    schema is not."""
    from mvqa.schemas.sampler import SVDKMeansConf

    (tmp_path / "written_once_probe.py").write_text(
        "from mvqa.schemas import schema_default\n"
        "from mvqa.schemas.sampler import SVDKMeansConf\n"
        "def literal(n_components=128, svd_iter=SVDKMeansConf.svd_iter, init=SVDKMeansConf.pick,\n"
        "            pick=None):\n"
        "    pass\n"
        "def reads(n_components=SVDKMeansConf.n_components,\n"
        "          stratify=schema_default(SVDKMeansConf, 'stratify')):\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("written_once_probe")
    twice = _written_twice(SVDKMeansConf, probe.literal)
    # n_components: a literal; init: reads another field; pick: None where the schema says "random"
    assert {t.split(" =")[0] for t in twice} == {"n_components", "init", "pick"}, twice
    assert _written_twice(SVDKMeansConf, probe.reads) == []
