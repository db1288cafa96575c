"""Load and validate a config against ``workflow/schemas/config.schema.yaml``, filling defaults."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from sparsealign.errors import SparsealignError, fail

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def _with_defaults(validator_class):
    """A jsonschema validator that fills ``default`` values while it validates."""
    from jsonschema import validators

    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _inline_refs(node, definitions):
    """Replace local ``{"$ref": "#/definitions/x"}`` by the definition itself."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline_refs(definitions[node["$ref"].rsplit("/", 1)[-1]], definitions)
        return {k: _inline_refs(v, definitions) for k, v in node.items() if k != "definitions"}
    if isinstance(node, list):
        return [_inline_refs(v, definitions) for v in node]
    return node


def _problems(config: dict, source, schema_path) -> list[str]:
    """Fill defaults into ``config`` in place; return one message per schema violation."""
    from jsonschema import Draft7Validator

    schema = yaml.safe_load(Path(schema_path).read_text())
    schema = _inline_refs(schema, schema.get("definitions", {}))
    validator = _with_defaults(Draft7Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    return [str(fail(source, f"config key {'.'.join(map(str, e.absolute_path)) or '(top level)'}: "
                     f"{e.message}", f"a config matching {Path(schema_path).name}"))
            for e in errors]


def validate_config(config: dict, source="config", schema_path=SCHEMA_PATH) -> dict:
    """Return a validated copy of ``config`` with defaults filled in.

    Raises SparsealignError naming ``source`` and the offending key on the first problem.
    """
    config = copy.deepcopy(config or {})
    problems = _problems(config, source, schema_path)
    if problems:
        raise SparsealignError(problems[0])
    return config


def _read(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise fail(path, "no such config file") from None
    except yaml.YAMLError as exc:
        raise fail(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is not None and not isinstance(raw, dict):
        raise fail(path, f"top level is a {type(raw).__name__}", "a mapping of config keys")
    return raw or {}


def load_config(path) -> dict:
    """Read a YAML config file and validate it (see :func:`validate_config`)."""
    return validate_config(_read(Path(path)), path)


def config_problems(path, schema_path=SCHEMA_PATH) -> list[str]:
    """Every problem of a config file, one message each (empty when it is valid)."""
    try:
        config = _read(Path(path))
    except SparsealignError as exc:
        return [str(exc)]
    return _problems(config, path, schema_path)
