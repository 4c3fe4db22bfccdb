"""The one rule for names that may end up in paths, headers and URLs."""

from __future__ import annotations

import re

from app.errors import InvalidName

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
# Every character a name may hold: a search string with any other matches no name.
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_NAME = re.compile(NAME_PATTERN)
_DIGITS = re.compile(r"^[0-9]+$")
RESERVED_ALIASES = frozenset({"latest"})


def is_valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def check_name(name: str, what: str = "name") -> str:
    if not is_valid_name(name):
        raise InvalidName(
            f"'{name[:200]}' is not a valid {what}: use 1-128 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
            {"pattern": NAME_PATTERN},
        )
    return name


def check_alias(name: str) -> str:
    check_name(name, "alias")
    if name in RESERVED_ALIASES or _DIGITS.fullmatch(name):
        raise InvalidName(
            f"'{name}' cannot be an alias: 'latest' and all-digit names already mean a version.",
            {"pattern": NAME_PATTERN, "reserved": sorted(RESERVED_ALIASES)},
        )
    return name


def is_version_number(ref: str) -> bool:
    return bool(_DIGITS.fullmatch(ref)) and len(ref) <= 18
