"""Typed settings that check themselves and carry their command-line flag: each setting is defined once.

A config dataclass declares its fields with ``setting(default, flag="--x", help=..., rule=..., choices=...)`` and
calls ``check_fields(self)`` in ``__post_init__``: a bad value raises ``ConfigError`` naming the flag, one line, the
same text for the command line and for Python. Cross-field checks live in the owning config's ``__post_init__``.
From the same fields, ``add_flags`` generates the argparse flags and ``from_args`` builds the config from the parsed
flags (the CLI only builds configs and prints errors); argparse converts types but leaves every value check to the
config, so the command line and the Python API reject the same values with the same words.

metadata keys: flag (the flag; its argparse destination is ``dest_of(flag)``), help, rule (a ``Rule``), choices,
named (the flag defaults to None and is filled from a named setting, ``dvi/settings.py``), nullable (None allowed),
source (no flag of its own: the value of another flag's destination, e.g. ``seed``), type and action (argparse).
"""
from __future__ import annotations

import argparse
import numbers
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Callable, Iterator

from common.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What a value must satisfy; the message is ``{flag} {value} {text} ({why})``."""
    text: str
    ok: Callable[[Any], bool]
    why: str = ""

    def message(self, name: str, value) -> str:
        return f"{name} {value} {self.text}" + (f" ({self.why})" if self.why else "")


def at_least(lo, why: str = "") -> Rule:
    return Rule(f"must be >= {lo}", lambda x: x >= lo, why)


def above(lo, why: str = "") -> Rule:
    return Rule(f"must be > {lo}", lambda x: x > lo, why)


def within(lo, hi, why: str = "") -> Rule:
    return Rule(f"must lie in [{lo}, {hi}]", lambda x: lo <= x <= hi, why)


def setting(default=MISSING, *, flag: str | None = None, help: str = "", rule: Rule | None = None,
            choices: tuple | None = None, named: bool = False, nullable: bool = False, source: str | None = None,
            type: Callable | None = None, action: str | None = None, secret: bool = False):
    """A dataclass field with its flag metadata (see the module docstring). ``secret``: kept out of the config's
    repr (a key)."""
    meta = dict(flag=flag, help=help, rule=rule, choices=choices, named=named, nullable=nullable, source=source,
                type=type, action=action)
    return field(default=default, repr=not secret,
                 metadata={k: v for k, v in meta.items() if v not in (None, False, "")})


def dest_of(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def str2bool(v: str) -> bool:
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def count_or_auto(auto: int, what: str = "a whole number") -> Callable[[str], int]:
    """A flag's type: a whole number (called ``what`` in the error), or the word auto, read as the value ``auto``."""
    def parse(v: str) -> int:
        if str(v).strip().lower() == "auto":
            return auto
        try:
            return int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} or auto, got {v!r}") from None
    return parse


# ----------------------------------------------------------------------------------------------- checking
def check_fields(obj) -> None:
    """Check every field of the config ``obj`` against its type, choices and rule; the first bad one raises."""
    for f in fields(obj):
        check_value(f, getattr(obj, f.name), type(obj).__name__)


def check_value(f, value, owner: str = "") -> None:
    """Check ``value`` for the field ``f`` (of the config class named ``owner``): its type, choices and rule; a bad
    value raises ``ConfigError`` naming the flag."""
    meta = f.metadata
    name = meta.get("flag") or f"{owner}.{f.name}"
    if _nested(f):
        if not isinstance(value, f.default_factory):
            raise ConfigError(f"{name} must be a {f.default_factory.__name__}, got {type(value).__name__}")
        return
    if value is None and meta.get("nullable"):
        return
    _check_type(name, value, _kind(f))
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{name} {value!r} is not a choice: pick one of {', '.join(meta['choices'])}")
    if "rule" in meta and not meta["rule"].ok(value):
        raise ConfigError(meta["rule"].message(name, value))


def _nested(f) -> bool:
    return f.default_factory is not MISSING and is_dataclass(f.default_factory)


def _kind(f) -> str:
    """The field's base type by name ("bool", "int", "float", "str"; "float" for ``float | None``), whether its
    annotation is a string (``from __future__ import annotations``) or a type."""
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return t.split("|")[0].strip()


NUMBER = {"int": numbers.Integral, "float": numbers.Real}  # numpy scalars included


def _check_type(name: str, value, kind: str) -> None:
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{name} {value!r} must be true or false")
    if kind in NUMBER and (isinstance(value, bool) or not isinstance(value, NUMBER[kind])):
        raise ConfigError(f"{name} {value!r} must be a {'whole number' if kind == 'int' else 'number'}")
    if kind == "str" and not isinstance(value, str):
        raise ConfigError(f"{name} {value!r} must be a string")


# ----------------------------------------------------------------------------------------------- flags
def walk_fields(cls, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, field) of every setting of ``cls``, nested configs (fields whose default factory is a dataclass)
    walked in place: the path of ``DVIConfig.trainer.lr`` is ("trainer", "lr")."""
    for f in fields(cls):
        if _nested(f):
            yield from walk_fields(f.default_factory, path + (f.name,))
        else:
            yield path + (f.name,), f


def flag_fields(cls, only=None, skip=()) -> list:
    """The fields of ``cls`` that have a flag, in field order; ``only`` / ``skip``: sets of flags."""
    return [f for _, f in walk_fields(cls) if "flag" in f.metadata
            and (only is None or f.metadata["flag"] in only) and f.metadata["flag"] not in skip]


def add_flags(group, cls, only=None, skip=()) -> None:
    """Add the flags of the config class ``cls`` to an argparse group (types only: the config checks values)."""
    for f in flag_fields(cls, only, skip):
        meta, default = f.metadata, f.default
        kw = {"help": meta.get("help"), "default": None if meta.get("named") else default}
        if "action" in meta:
            kw["action"] = meta["action"]
            kw.pop("default")
        elif _kind(f) == "bool":
            kw.update(type=str2bool, metavar="{true,false}")
        else:
            kw["type"] = meta.get("type") or {"int": int, "float": float}.get(_kind(f), str)
            if "choices" in meta:
                kw["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        group.add_argument(meta["flag"], **kw)


def from_args(cls, args):
    """The config ``cls`` from parsed flags: a field takes its flag's value (or its ``source`` destination's) when
    ``args`` has it, else its default; nested configs likewise. Raises ``ConfigError`` for a bad value."""
    kwargs = {}
    for f in fields(cls):
        meta = f.metadata
        if _nested(f):
            kwargs[f.name] = from_args(f.default_factory, args)
            continue
        dest = dest_of(meta["flag"]) if "flag" in meta else meta.get("source")
        if dest is not None and hasattr(args, dest):
            kwargs[f.name] = getattr(args, dest)
    return cls(**kwargs)


def check_against_model(model_config, *configs) -> None:
    """The checks that need the model's config (layers, vocabulary): each config's ``check_model``, in order. The
    CLI (after loading the model's config) and the Python API (``KangarooDVI.load``) both call this."""
    for c in configs:
        if c is not None:
            c.check_model(model_config)
