"""Closed choices as typed values: ``Choice``, a ``str`` enum whose members carry a description.

A member equals, hashes, formats and serializes (``json.dumps``) as its value, so configs,
results and command lines spell it as before. ``Choice.parse`` turns a value read from a
config file, an environment variable or a command line into a member, or raises a ValueError
naming the setting, the value and the allowed values. This module imports nothing of ``lamps``.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

_C = TypeVar("_C", bound="Choice")


class Choice(str, enum.Enum):
    """Base of the closed choices: ``class X(Choice): A = "a", "what a means"``.

    (``enum.StrEnum`` needs Python 3.11; this package supports 3.10.)
    """

    _value_: str
    description: str

    def __new__(cls, value: str, description: str = "") -> Choice:
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    def __str__(self) -> str:
        return self._value_

    @classmethod
    def values(cls) -> list[str]:
        """The allowed values, in definition order."""
        return [member._value_ for member in cls]

    @classmethod
    def parse(cls: type[_C], value: Any, setting: str) -> _C:
        """The member ``value`` names (a member, or its value as a string); ValueError saying
        ``"<setting> must be one of [...], got <value>"`` otherwise."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str) and not isinstance(value, enum.Enum):
            for member in cls:
                if member._value_ == value:
                    return member
        raise ValueError(f"{setting} must be one of {cls.values()}, got {value!r}")
