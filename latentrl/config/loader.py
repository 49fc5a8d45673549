"""Loading configs: :func:`load_config` builds a config dataclass from YAML and
``key.sub=value`` overrides, and every mistake raises :class:`ConfigError` naming the dotted
key and where the value came from; the ``require_*`` checks that dataclasses'
``__post_init__`` use.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from latentrl.models.named import check_model_reference

C = TypeVar("C")


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type, missing, or invalid."""


def require_positive(cfg: Any, *names: str) -> None:
    """Raise ``ValueError("<name>: must be positive")`` for the first field that is not (None passes)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ValueError(f"{name}: must be positive")


def require_model_references(cfg: Any, *names: str) -> None:
    """Each model field that is set is a folder, a Hub id (``org/name``) or a named model."""
    for name in names:
        if (value := getattr(cfg, name)) is not None:
            try:
                check_model_reference(value)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None


def require_non_negative(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name}: must be >= 0, got {getattr(cfg, name)}")


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> C:
    """Build ``cls`` from a YAML file and ``key.sub=value`` overrides (applied in order).

    Override values are parsed as YAML scalars (``lr=1e-4`` is a float, ``name=arith`` a
    string, ``urls=[a, b]`` a list). Raises :class:`ConfigError` naming the key and source.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    file_label = str(path) if path is not None else "<defaults>"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
        values = loaded
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        _set_dotted(values, key, _parse_scalar(raw), item)
        sources[key] = "the command line"
    return _build(cls, values, prefix="", sources=sources, file_label=file_label)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict of a config (for saving next to a run's outputs)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def _set_dotted(values: dict[str, Any], key: str, value: Any, item: str) -> None:
    parts = key.split(".")
    node = values
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {item!r}: {where} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _source(key: str, sources: Mapping[str, str], file_label: str) -> str:
    # An override of a section (`task={...}`) is the source of every key under it, and
    # one of a key under a section (`a.b=1`) is the source of the section it created.
    if any(source.startswith(key + ".") for source in sources):
        return "the command line"
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in sources:
            return sources[prefix]
    return file_label


def _build(
    cls: type[C],
    values: Any,
    prefix: str,
    sources: Mapping[str, str],
    file_label: str,
    defaults: Any = None,
) -> C:
    """``cls`` from a section's ``values``; keys not given take ``defaults``' values (the
    section's own default, e.g. CoCoVa's task is shapes_vqa) or else the class defaults."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(values, Mapping):
        src = _source(where, sources, file_label)
        raise ConfigError(f"{where}: expected a section (mapping), got {values!r} (in {src})")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in values:
        if key not in fields:
            src = _source(prefix + str(key), sources, file_label)
            sections = [
                name
                for name in fields
                if dataclasses.is_dataclass(hints[name])
                and key in {f.name for f in dataclasses.fields(hints[name])}
            ]
            if sections:  # e.g. `steps`, which moved into the `loop` section
                hint = " or ".join(f"'{prefix}{name}.{key}'" for name in sections)
                raise ConfigError(f"unknown key '{prefix}{key}' (in {src}); did you mean {hint}?")
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key '{prefix}{key}' (in {src}); known keys: {known}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = prefix + name
        if name in values:
            default = _section_default(f, defaults)
            kwargs[name] = _coerce(hints[name], values[name], key, sources, file_label, default)
        elif defaults is not None:
            kwargs[name] = getattr(defaults, name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{key}' (in {file_label})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        message = str(err)
        field_name = message.split(":", 1)[0]
        key = prefix + field_name if field_name in fields else where
        src = _source(key, sources, file_label)
        raise ConfigError(f"{prefix}{message} (in {src})") from None


def _section_default(f: dataclasses.Field, defaults: Any) -> Any:
    """The instance a partly given section of field ``f`` is completed from, if any."""
    if defaults is not None:
        default = getattr(defaults, f.name)
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = f.default
    return default if dataclasses.is_dataclass(default) and not isinstance(default, type) else None


def _coerce(
    tp: Any,
    value: Any,
    key: str,
    sources: Mapping[str, str],
    file_label: str,
    default: Any = None,
) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", sources, file_label, default)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                fits = dataclasses.is_dataclass(option) and isinstance(default, option)
                section_default = default if fits else None
                return _coerce(option, value, key, sources, file_label, section_default)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise _type_error(key, f"one of {allowed}", value, sources, file_label)
        return value
    if origin in (list, tuple, Sequence, typing.Sequence):
        if not isinstance(value, list | tuple):
            raise _type_error(key, "a list", value, sources, file_label)
        (item_type, *_) = get_args(tp) or (Any,)
        items = [
            _coerce(item_type, v, f"{key}[{i}]", sources, file_label) for i, v in enumerate(value)
        ]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, Mapping):
            raise _type_error(key, "a mapping", value, sources, file_label)
        _, value_type = get_args(tp) or (str, Any)
        return {
            str(k): _coerce(value_type, v, f"{key}.{k}", sources, file_label)
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise _type_error(key, "true or false", value, sources, file_label)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, "an integer", value, sources, file_label)
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value):
            # YAML 1.1 reads `1e-4` (no dot) as a string; everyone means the number.
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(key, "a number", value, sources, file_label)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _type_error(key, "a string", value, sources, file_label)
        return value
    raise TypeError(f"{key}: unsupported config type {tp!r}")


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_error(
    key: str, expected: str, value: Any, sources: Mapping[str, str], file_label: str
) -> ConfigError:
    src = _source(key, sources, file_label)
    return ConfigError(f"{key}: expected {expected}, got {value!r} (in {src})")
