"""Stage configs: dataclasses filled from YAML and ``--set key=value``, type-checked.

A stage's config is a dataclass whose fields may themselves be dataclasses (one per
operator, defined next to the operator in ``curation/``). Keys are dotted paths
(``probe.min_side``). Values given on the command line are parsed as YAML scalars,
so ``--set probe.min_side=32`` is an int and ``--set scenes.detector=content`` a str.
An unknown key or a value of the wrong type is an error that names the key, the
expected type and where the value came from.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A config key that does not exist or a value that does not fit."""


def flat_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config dataclass, for help and error messages."""
    keys = []
    for field in dataclasses.fields(cls):
        kind = typing.get_type_hints(cls)[field.name]
        if dataclasses.is_dataclass(kind):
            keys.extend(flat_keys(kind, f"{prefix}{field.name}."))
        else:
            keys.append(f"{prefix}{field.name}")
    return keys


def key_help(cls: type) -> list[tuple[str, Any, str]]:
    """``(dotted key, default, meaning)`` for every settable key, for ``--help``.

    The meaning is the field's ``help`` metadata (``curation.operator.setting``), written on
    the field itself, so the help and the code cannot drift apart.
    """
    return _help(cls(), "")


def _help(config: Any, prefix: str) -> list[tuple[str, Any, str]]:
    rows = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            rows.extend(_help(value, f"{prefix}{field.name}."))
        else:
            rows.append((f"{prefix}{field.name}", value, field.metadata.get("help", "")))
    return rows


def _coerce(value: Any, kind: Any, key: str, origin: str) -> Any:
    """Check ``value`` against the annotation ``kind``; ints are accepted for floats."""
    base = typing.get_origin(kind)
    if base in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, origin)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{origin}: {key}: {value!r} fits none of {kind}")
    if base in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{origin}: {key}: expected a list, got {value!r}")
        (item,) = typing.get_args(kind)[:1] or (Any,)
        items = [_coerce(v, item, f"{key}[{i}]", origin) for i, v in enumerate(value)]
        return items if base is list else tuple(items)
    if base is dict or kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: {key}: expected a mapping, got {value!r}")
        return dict(value)
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{origin}: {key}: expected {kind.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _set(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"{key}: {part!r} is a value, not a section")
    tree[parts[-1]] = value


def _build(cls: type, values: Mapping[str, Any], origin: str, prefix: str = "", base: Any = None) -> Any:
    """``base`` (default: ``cls()``) with ``values`` set. Sections start from the *field's*
    default, so ``scenes.pool.num_cpus=1`` keeps the scenes pool's own batch size."""
    base = cls() if base is None else base
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = f"{prefix}{unknown[0]}"
        reason = getattr(cls, "REJECTED", {}).get(unknown[0])
        if reason:
            raise ConfigError(f"{origin}: {key!r} has no effect here: {reason}")
        raise ConfigError(f"{origin}: unknown config key {key!r}; known keys: {', '.join(flat_keys(cls, prefix))}")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: {prefix}{name} is a section; set its keys, e.g. {prefix}{name}.<key>")
            kwargs[name] = _build(kind, value, origin, f"{prefix}{name}.", getattr(base, name))
        else:
            kwargs[name] = _coerce(value, kind, f"{prefix}{name}", origin)
    try:
        return dataclasses.replace(base, **kwargs)
    except (TypeError, ValueError) as err:  # __post_init__ range checks
        raise ConfigError(f"{origin}: {prefix.rstrip('.') or cls.__name__}: {err}") from None


def load_config(cls: type, path: str | None = None, sets: list[str] | None = None) -> Any:
    """Defaults, then the YAML file, then each ``key=value`` in order (last wins)."""
    tree: dict[str, Any] = {}
    origin = "defaults"
    if path:
        origin = path
        try:
            with open(path, encoding="utf-8") as handle:
                loaded = yaml.safe_load(handle) or {}
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from None
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            raise ConfigError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
        for key, value in _flatten(loaded):
            _set(tree, key, value)
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        _set(tree, key.strip(), value)
        origin = f"{path or 'defaults'} + --set" if sets else origin
    return _build(cls, tree, origin)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain data, for run.json."""
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    """The resolved config as YAML that ``load_config`` reads back to an equal config."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return yaml.safe_dump(plain(to_dict(config)), sort_keys=False, allow_unicode=True, width=100)
