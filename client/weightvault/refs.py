"""Refs as users type them: ``mnist`` (latest), ``mnist:3``, ``mnist:latest``, ``mnist@production``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from weightvault.errors import InvalidRef

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
LATEST = "latest"
DIGITS = re.compile(r"[0-9]{1,18}")


def check_name(name: str, what: str = "model name") -> str:
    """``name`` if it is a valid model or alias name, else InvalidRef."""
    if not NAME.fullmatch(name):
        raise InvalidRef(
            f"{name!r} is not a valid {what}: use lowercase letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters)."
        )
    return name


@dataclass(frozen=True)
class Ref:
    """A model and one of its versions: a number (as text), an alias, or ``latest``."""

    model: str
    ref: str = LATEST

    @property
    def number(self) -> int | None:
        return int(self.ref) if DIGITS.fullmatch(self.ref) else None

    @property
    def path(self) -> str:
        """The version's URL path."""
        return f"/v1/models/{self.model}/versions/{self.ref}"

    def __str__(self) -> str:
        if self.ref == LATEST or self.number is not None:
            return f"{self.model}:{self.ref}"
        return f"{self.model}@{self.ref}"


def parse_ref(text: str) -> Ref:
    """Parse ``model``, ``model:<number>``, ``model:latest`` or ``model@<alias>``."""
    text = text.strip()
    if "@" in text:
        model, alias = text.split("@", 1)
        check_name(model)
        if DIGITS.fullmatch(alias):
            return _numbered(model, alias, text)
        return Ref(model, check_name(alias, "alias"))
    if ":" in text:
        model, version = text.split(":", 1)
        check_name(model)
        if version == LATEST:
            return Ref(model, LATEST)
        if DIGITS.fullmatch(version):
            return _numbered(model, version, text)
        hint = f"; for an alias write {model}@{version}" if NAME.fullmatch(version) else ""
        raise InvalidRef(f"{text!r}: after ':' comes a version number or 'latest'{hint}.")
    return Ref(check_name(text), LATEST)


def _numbered(model: str, digits: str, text: str) -> Ref:
    number = int(digits)
    if number < 1:
        raise InvalidRef(f"{text!r}: version numbers start at 1.")
    return Ref(model, str(number))
