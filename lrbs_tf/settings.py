"""Settings declared once: a dataclass field carries its type, default, help, flag and check,
and command-line flags are generated from it. Pure Python (no TensorFlow).

    epochs: int = setting(3, "epochs to train", check=between(1, 100_000))

:func:`check_fields` runs every field's check (one-line :class:`ConfigError`s naming the flag);
:func:`add_flags` adds a flag per field to an argparse parser (in the field's group, with its
choices and help); :func:`values_from` reads them back as keyword arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line."""


def setting(
    default,
    help: str,
    *,
    check: Callable | None = None,
    choices=None,
    kind: type | None = None,
    flag: str | None = None,
    group: str | None = None,
    metavar: str | None = None,
    cli: bool = True,
    identity: bool = True,
):
    """A dataclass field with what a flag needs: ``kind`` (int, float, str or bool; default:
    the type of ``default``), ``help``, ``choices``, ``check`` (value -> problem or None),
    ``flag`` (default ``--field-name``), ``group`` (the help section), ``cli`` (False: no flag),
    ``identity`` (False: how or where something runs — devices, a folder, whether to
    overwrite — not what it computes, so two configs differing only there are the same run).
    """
    kind = kind or (type(default) if default is not None else str)
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "check": check,
            "choices": choices,
            "kind": kind,
            "flag": flag,
            "group": group,
            "metavar": metavar,
            "cli": cli,
            "identity": identity,
        },
    )


def names(cls, group: str | None = None, identity: bool | None = None) -> tuple[str, ...]:
    """The fields of ``cls`` declared with :func:`setting` in ``group`` (any group: None)
    whose ``identity`` is as given (either: None), in declaration order."""
    return tuple(
        f.name
        for f in dataclasses.fields(cls)
        if "help" in f.metadata
        and (group is None or f.metadata["group"] == group)
        and (identity is None or f.metadata["identity"] == identity)
    )


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


# -- checks: each returns a problem (a phrase) or None --------------------------------------


def between(low, high):
    """A whole number in [low, high]."""

    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be a whole number from {low} to {high}, got {value!r}"
        return None

    return check


def positive(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        return f"must be a positive number, got {value!r}"
    return None


def unit_interval(value):
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        return f"must be in [0, 1), got {value!r}"
    return None


def optional(check):
    """``check``, with None allowed."""
    return lambda value: None if value is None else check(value)


def check_fields(obj, prefix: str = "") -> None:
    """Run the check and the choices of every field of ``obj``; raise the first problem."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        choices = field.metadata.get("choices")
        if choices is not None and value not in _resolve(choices):
            raise ConfigError(
                f"{_flag(field, prefix)} must be one of "
                f"{', '.join(map(str, _resolve(choices)))}, got {value!r}"
            )
        check = field.metadata.get("check")
        problem = check(value) if check is not None else None
        if problem:
            raise ConfigError(f"{_flag(field, prefix)} {problem}")


def _flag(field, prefix: str) -> str:
    name = flag_of(field)
    return name if not prefix else "--" + prefix + name[2:]


def _resolve(choices):
    return choices() if callable(choices) else choices


# -- flags -------------------------------------------------------------------------------------


def add_flags(
    parser: argparse.ArgumentParser,
    cls,
    names=None,
    defaults: dict | None = None,
    prefix: str = "",
    groups: dict | None = None,
) -> list[str]:
    """Add a flag for each field of ``cls`` (those in ``names``, or every field with
    ``cli=True``), with ``defaults`` replacing the fields' own; returns the field names."""
    defaults = defaults or {}
    groups = {} if groups is None else groups
    added = []
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if (names is None and not meta.get("cli", False)) or (
            names is not None and field.name not in names
        ):
            continue
        group = meta.get("group")
        if group and group not in groups:
            groups[group] = parser.add_argument_group(group)
        target = groups.get(group, parser)
        default = defaults.get(field.name, field.default)
        kwargs = {
            "help": _help(meta["help"], default, meta["kind"]),
            "dest": prefix.replace("-", "_") + field.name,
        }
        if meta["kind"] is bool:  # a flag that turns the default around
            kwargs.update(action="store_false" if default else "store_true", default=bool(default))
        else:
            kwargs.update(type=meta["kind"], default=default, metavar=meta.get("metavar"))
            if meta.get("choices") is not None:
                kwargs["choices"] = _resolve(meta["choices"])
        target.add_argument(_flag(field, prefix), **kwargs)
        added.append(field.name)
    return added


def _help(text: str, default, kind) -> str:
    if kind is bool or default is None or "default" in text:
        return text
    return f"{text} (default: {default})"


def values_from(args: argparse.Namespace, names, prefix: str = "") -> dict:
    """The parsed values of the flags :func:`add_flags` added, as keyword arguments."""
    return {name: getattr(args, prefix.replace("-", "_") + name) for name in names}
