"""YAML -> frozen dataclasses, strictly: unknown keys and wrong types name their dotted path.

Precedence: dataclass defaults < the `--config` file (a path or a packaged preset name) < each
`--set a.b=v` in order. The resolved config can be dumped back to YAML and loaded again unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from decembert_cli.config.schema import Range
from decembert_cli.errors import ConfigError
from decembert_cli.io import atomic_write_text, regular_file

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
_MISSING = object()


def packaged_presets() -> list[str]:
    """Names of the YAML presets shipped inside the package (usable as `--config NAME`)."""
    folder = resources.files("decembert_cli.config") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _resolve_config_source(spec: str) -> tuple[str, str]:
    """Return (label, YAML text) for a path or a packaged preset name."""
    path = Path(spec)
    if path.exists() and spec not in packaged_presets():
        regular_file(path, "config file")  # a FIFO or a device would block the read, a folder is no config
    if path.is_file():
        try:
            return str(path), path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if spec in packaged_presets():
        preset = resources.files("decembert_cli.config") / "presets" / f"{spec}.yaml"
        return f"preset '{spec}'", preset.read_text(encoding="utf-8")
    raise ConfigError(
        f"config '{spec}' is neither a file nor a packaged preset; "
        f"give a YAML path or one of: {', '.join(packaged_presets())}"
    )


def _key_lines(text: str) -> dict[str, int]:
    """Map each dotted key of a YAML mapping to its 1-based line number (for error messages)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                dotted = f"{prefix}{key_node.value}"
                lines[dotted] = key_node.start_mark.line + 1
                walk(value_node, dotted + ".")

    if root is not None:
        walk(root, "")
    return lines


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the field type `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:  # a number with its allowed range (schema.Range)
        inner, *extras = typing.get_args(tp)
        bounds = [e for e in extras if isinstance(e, Range)]
        try:
            coerced = _coerce(value, inner, where)
        except ConfigError as exc:  # not a number at all (or not finite): say which ones are
            raise ConfigError(f"{exc}; use a value {' and '.join(map(str, bounds))}" if bounds else str(exc)) from None
        for bound in bounds:
            if not bound.allows(coerced):
                shown = f"{coerced:g}" if isinstance(coerced, float) else str(coerced)
                raise ConfigError(f"{where}: {shown} is out of range; use a value {bound}")
        return coerced
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; use one of: {', '.join(map(str, allowed))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp) or (Any,)
        fixed = origin is tuple and Ellipsis not in args
        if fixed and len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        item_types = args if fixed else [args[0]] * len(value)
        items = [_coerce(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, item_types))]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # a 400-digit integer
                raise ConfigError(f"{where}: {str(value)[:20]}... is too large for a number") from None
        elif isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r} (quote it in YAML)")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, where + ".")
    raise ConfigError(f"{where}: unsupported config type {tp!r}")  # a schema bug, not a user error


def check_value(value: Any, tp: Any, where: str) -> Any:
    """`value` as the schema type `tp` (e.g. `schema.Interval`): converted and checked against its range,
    or one ConfigError naming `where`. For command-line options and numbers read from data files, so they
    obey the same ranges as the config keys of the same kind."""
    return _coerce(value, tp, where)


def _build(cls: type[T], data: Any, prefix: str, lines: dict[str, int] | None = None, label: str = "") -> T:
    lines = lines or {}

    def at(key: str) -> str:
        line = lines.get(key)
        return f"{label} line {line}: " if (label and line) else (f"{label}: " if label else "")

    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "the config"
        raise ConfigError(f"{at(prefix.rstrip('.'))}{where} must be a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            dotted = f"{prefix}{key}"
            raise ConfigError(
                f"{at(dotted)}unknown key '{dotted}'; valid keys here: "
                + ", ".join(f"{prefix}{name}" for name in fields)
            )
    kwargs: dict[str, Any] = {}
    for name in fields:
        if name not in data:
            continue
        dotted = f"{prefix}{name}"
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], dotted + ".", lines, label)
        else:
            try:
                kwargs[name] = _coerce(data[name], tp, dotted)
            except ConfigError as exc:
                raise ConfigError(f"{at(dotted)}{exc}") from None
    return cls(**kwargs)


# Keys whose default changed, with the value a run written before the change used: a saved run config
# (RUN_DIR/config.yaml, every key written out) that lacks one was written before the key existed.
FORMER_DEFAULTS = {"data.mask_unit": "token"}


def former_defaults(saved: Path) -> list[str]:
    """`--set` assignments that keep a run written before a default changed as it was (see FORMER_DEFAULTS)."""
    try:
        data = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []  # loading it again reports the problem with its line
    out = []
    for dotted, value in FORMER_DEFAULTS.items():
        node: Any = data
        for part in dotted.split(".")[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and dotted.rsplit(".", 1)[1] not in node:
            out.append(f"{dotted}={value}")
    return out


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a config dataclass from a plain dict, strictly; `prefix` names where the dict sits in its file
    (e.g. "config.model." in a checkpoint) in the messages."""
    return _build(cls, data, prefix)


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-dict form of a config dataclass (tuples become lists, for YAML)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def apply_override(config: T, assignment: str) -> T:
    """Apply one `a.b=value` override; the value is read as YAML (`true`, `3`, `1e-4`, `[1, 2]`)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set loss.constrained_lambda=0.5")
    dotted, raw = assignment.split("=", 1)
    dotted = dotted.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({exc.problem})") from None
    except ValueError:  # an integer of over 4300 digits: Python refuses to read it
        raise ConfigError(f"--set {dotted}: the value is too large for any setting") from None
    parts = dotted.split(".")

    def replace(node: Any, depth: int) -> Any:
        prefix = ".".join(parts[:depth])
        names = [f.name for f in dataclasses.fields(node)]
        key = parts[depth]
        if key not in names:
            shown = ", ".join(f"{prefix + '.' if prefix else ''}{n}" for n in names)
            raise ConfigError(f"--set {dotted}: unknown key '{'.'.join(parts[: depth + 1])}'; valid keys here: {shown}")
        child = getattr(node, key)
        tp = typing.get_type_hints(type(node), include_extras=True)[key]
        if depth == len(parts) - 1:
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                new = _build(tp, value, dotted + ".")
            else:
                new = _coerce(value, tp, f"--set {dotted}")
        else:
            if not dataclasses.is_dataclass(child):
                raise ConfigError(f"--set {dotted}: '{'.'.join(parts[: depth + 1])}' is a value, not a section")
            new = replace(child, depth + 1)
        return dataclasses.replace(node, **{key: new})

    return replace(config, 0)


def load_config(cls: type[T], source: str | None = None, overrides: typing.Sequence[str] = ()) -> T:
    """Defaults, then the YAML file or packaged preset `source`, then each override."""
    if source is None:
        config = cls()
    else:
        label, text = _resolve_config_source(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{label}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        except ValueError:  # an integer of over 4300 digits: Python refuses to read it
            raise ConfigError(f"{label}: a number too large for any setting") from None
        config = _build(cls, data, "", _key_lines(text), label)
    for assignment in overrides:
        config = apply_override(config, assignment)
    return config


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically (saved with every run and checkpoint)."""
    return atomic_write_text(path, to_yaml(config))
