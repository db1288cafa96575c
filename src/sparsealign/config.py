"""Load and validate a config against ``workflow/schemas/config.schema.yaml``, filling defaults.

A config names ``stimuli``, ``systems`` and ``experiments``; each entry is checked against
the schema definition ``<section>_<kind>``, then the rules that cross entries are checked
(references exist and have the right kind, ``k ≤ n_latents``, metrics are registered).
Input paths resolve against the config file's folder. Every problem is one line naming
the file and the key.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import yaml

from sparsealign.errors import SparsealignError, fail

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = Path("config/config.yaml")
SECTIONS = ("stimuli", "systems", "experiments")
# Keys holding input paths, per section: they resolve against the config file's folder.
PATH_KEYS = ("path", "ids_csv", "ids")


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


@functools.lru_cache(maxsize=None)
def _schema(schema_path=SCHEMA_PATH) -> tuple[dict, dict]:
    """(top-level schema, definitions), every ``$ref`` inlined."""
    # libyaml parses the schema ~8× faster than PyYAML's Python loader (every run and every
    # Snakefile parse reads it); the same safe subset of YAML, so the same schema.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    raw = yaml.load(Path(schema_path).read_text(), Loader=loader)
    definitions = raw.get("definitions", {})
    return _inline_refs(raw, definitions), {k: _inline_refs(v, definitions)
                                            for k, v in definitions.items()}


def _errors(instance, schema, source, prefix: tuple = ()) -> list[str]:
    """Fill defaults into ``instance`` in place; one message per schema violation."""
    from jsonschema import Draft7Validator

    validator = _with_defaults(Draft7Validator)(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    messages = []
    for error in errors:
        key = ".".join(map(str, prefix + tuple(error.absolute_path))) or "(top level)"
        message = error.message
        if error.validator == "pattern" and "description" in error.schema:
            message = f"{error.instance!r} is not {error.schema['description']}"
        elif error.validator == "additionalProperties":
            message = message.replace("Additional properties are not allowed", "unknown key")
        messages.append(str(fail(source, f"config key {key}: {message}",
                                 f"a config matching {SCHEMA_PATH.name}")))
    return messages


def section_problems(instance, definition: str, source, prefix: tuple = ()) -> list[str]:
    """Validate ``instance`` against one schema definition, filling its defaults in place."""
    return _errors(instance, _schema()[1][definition], source, prefix)


def validate_section(instance, definition: str, source="--params") -> dict:
    """A default-filled copy of ``instance`` valid under ``definition``, or the first problem."""
    instance = copy.deepcopy(instance if instance is not None else {})
    problems = section_problems(instance, definition, source)
    if problems:
        raise SparsealignError(problems[0])
    return instance


def _problems(config: dict, source) -> list[str]:
    """Every problem of ``config`` (defaults filled in place), in reading order."""
    top, definitions = _schema()
    problems = _errors(config, top, source)
    if problems:
        return problems
    for section in SECTIONS:
        for name, entry in config[section].items():
            definition = f"{section}_{entry['kind']}"
            if definition not in definitions:
                kinds = sorted(d.split("_", 1)[1] for d in definitions
                               if d.startswith(f"{section}_"))
                problems.append(str(fail(source, f"config key {section}.{name}.kind: unknown "
                                         f"kind {entry['kind']!r}", f"one of {kinds}")))
                continue
            problems += section_problems(entry, definition, source, (section, name))
    return problems or _cross_problems(config, source)


def _cross_problems(config: dict, source) -> list[str]:
    """Rules across entries: references, kinds, k ≤ n_latents, registered metrics."""
    from sparsealign.align_metrics import ALIGNMENT_METRICS

    problems = []

    def problem(key, what, expected=None):
        problems.append(str(fail(source, f"config key {key}: {what}", expected)))

    def refer(key, name, section, kinds):
        entry = config[section].get(name)
        if entry is None:
            problem(key, f"no {section} entry named {name!r}", f"one of {sorted(config[section])}")
        elif entry["kind"] not in kinds:
            problem(key, f"{section}.{name} is a {entry['kind']}", f"a {' or '.join(kinds)}")

    for name, system in config["systems"].items():
        key = f"systems.{name}"
        if system["kind"] == "network":
            refer(f"{key}.stimuli", system["stimuli"], "stimuli", ("image_sessions", "image_folder"))
            if "stimuli" in system.get("training_rows", {}):
                refer(f"{key}.training_rows.stimuli", system["training_rows"]["stimuli"],
                      "stimuli", ("image_sessions", "image_folder"))
        elif system["kind"] == "toy_models":
            refer(f"{key}.stimuli", system["stimuli"], "stimuli", ("toy_features",))
        elif system["kind"] == "recording":
            if ("dataset" in system) == ("path" in system):
                problem(key, "names both or neither of dataset and path",
                        "dataset + sessions (the mirror) or path + format (a file)")
            elif "dataset" in system and "sessions" not in system:
                problem(key, "dataset without sessions", "the sessions to score")
            elif "path" in system and "format" not in system:
                problem(key, "path without format", "format: npz, npy, nwb, netcdf or zarr")
            elif system.get("format") in ("npz", "npy") and "ids" not in system:
                problem(key, f"a {system['format']} recording without ids",
                        "ids: a text file with one stimulus id per row")
    for name, experiment in config["experiments"].items():
        key = f"experiments.{name}"
        models = ("network", "toy_models")
        for field in ("systems", "sources"):
            for i, system in enumerate(experiment.get(field, [])):
                refer(f"{key}.{field}.{i}", system, "systems", models)
        for i, system in enumerate(experiment.get("targets", [])):
            refer(f"{key}.targets.{i}", system, "systems", ("recording",))
        for i, pair in enumerate(experiment.get("pairs", [])):
            for key_ in pair:
                system, _, member = key_.partition(".")
                if system not in experiment["systems"]:
                    problem(f"{key}.pairs.{i}", f"{system!r} is not among the experiment's systems",
                            f"one of {experiment['systems']}")
                elif member not in config["systems"].get(system, {}).get("layers", []):
                    problem(f"{key}.pairs.{i}", f"no layer {member!r} in {system}",
                            f"one of {list(config['systems'].get(system, {}).get('layers', []))}")
        layers = {layer for s in experiment.get("sources", [])
                  for layer in config["systems"].get(s, {}).get("layers", [])}
        for i, member in enumerate(experiment.get("source_members", [])):
            if member not in layers:
                problem(f"{key}.source_members.{i}", f"no layer {member!r} in the sources",
                        f"one of {sorted(layers)}")
        sae = experiment["sae"]
        if "expansion" not in sae and sae["k"] > sae["n_latents"]:
            problem(f"{key}.sae.k", f"k = {sae['k']} exceeds n_latents = {sae['n_latents']}",
                    "k ≤ n_latents")
        for i, metric in enumerate(experiment["alignment"]["metrics"]):
            if metric not in ALIGNMENT_METRICS:
                problem(f"{key}.alignment.metrics.{i}", f"unknown metric {metric!r}",
                        f"one of {sorted(ALIGNMENT_METRICS)}")
        for metric in experiment["alignment"]["options"]:
            if metric not in experiment["alignment"]["metrics"]:
                problem(f"{key}.alignment.options.{metric}", "options for a metric not in metrics",
                        f"one of {experiment['alignment']['metrics']}")
    return problems


def _resolve_paths(config: dict, base: Path) -> None:
    """Input paths relative to the config file's folder → paths usable from here."""
    for section in SECTIONS:
        for entry in config.get(section, {}).values():
            for key in PATH_KEYS:
                if isinstance(entry, dict) and isinstance(entry.get(key), str):
                    entry[key] = _relative(base / entry[key])
    if isinstance(config.get("data_mirror"), str):
        config["data_mirror"] = _relative(base / config["data_mirror"])


def _relative(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def validate_config(config: dict, source="config", base=None) -> dict:
    """Return a validated copy of ``config`` with defaults filled in.

    ``base`` is the folder relative input paths resolve against (default: the working
    directory). Raises SparsealignError naming ``source`` and the key of the first problem.
    """
    config = copy.deepcopy(config or {})
    problems = _problems(config, source)
    if problems:
        raise SparsealignError(problems[0])
    _resolve_paths(config, Path(base) if base is not None else Path.cwd())
    return config


def _read(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise fail(path, "no such config file") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise fail(path, f"not a readable config file ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        raise fail(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        raise fail(path, "empty config", "a mapping with at least an `experiments` key")
    if not isinstance(raw, dict):
        raise fail(path, f"top level is a {type(raw).__name__}", "a mapping of config keys")
    return raw


def load_config(path=DEFAULT_CONFIG) -> dict:
    """Read a YAML config file and validate it (see :func:`validate_config`)."""
    path = Path(path)
    return validate_config(_read(path), path, base=path.parent)


def config_problems(path) -> list[str]:
    """Every problem of a config file, one message each (empty when it is valid)."""
    try:
        config = _read(Path(path))
    except SparsealignError as exc:
        return [str(exc)]
    return _problems(config, path)
