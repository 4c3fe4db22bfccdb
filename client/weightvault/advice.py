"""Turn the server's refusals into advice in the CLI's own words: the flag to add, the command to run,
and the closest names when one was mistyped. (The server speaks HTTP; a person at a terminal should not
be told to ``POST /v1/models``.)"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

from weightvault.errors import ApiError


def close_matches(name: str, candidates: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)


def _did_you_mean(name: str, candidates: Callable[[], Iterable[str]]) -> str:
    try:
        matches = close_matches(name, candidates())
    except Exception:  # advice must never hide the original error
        return ""
    return f" Did you mean {' or '.join(repr(match) for match in matches)}?" if matches else ""


def explain(
    error: ApiError,
    *,
    models: Callable[[], Iterable[str]],
    architectures: Callable[[], Iterable[str]],
    command: str = "",
) -> str:
    details = error.details or {}
    if error.code == "model_not_found":
        name = str(details.get("model", ""))
        hint = (
            " To create it while pushing, add --create --architecture NAME (see `weightvault arch ls`)."
            if command == "push"
            else " List models with `weightvault ls`."
        )
        return f"There is no model {name!r}.{_did_you_mean(name, models)}{hint}"
    if error.code == "architecture_not_found":
        name = str(details.get("architecture", details.get("name", "")))
        return (
            f"There is no architecture {name!r}.{_did_you_mean(name, architectures)} "
            "List them with `weightvault arch ls`."
        )
    if error.code in ("version_not_found", "alias_not_found"):
        return f"{error.message.split(';')[0].rstrip('.')}. List the versions with `weightvault ls MODEL`."
    if error.code == "alias_in_use":
        aliases = ", ".join(str(alias) for alias in details.get("aliases", []))
        return (
            f"The alias(es) {aliases} point at this version. Move them first with "
            "`weightvault alias set MODEL ALIAS VERSION`, or delete anyway with --force."
        )
    if error.code == "architecture_in_use":
        using = ", ".join(str(model) for model in details.get("models", []))
        return f"Models use this architecture ({using}); delete them first with `weightvault rm MODEL`."
    if error.code == "architecture_exists":
        return (
            f"{error.message.split(';')[0]}. Pick another name; `weightvault arch ls` lists the taken ones."
        )
    if error.code == "unauthorized":
        return (
            "The server needs a token: pass --token or set WEIGHTVAULT_TOKEN (an admin creates one on the "
            "server with `weightvault token create --scope write`)."
        )
    if error.code == "forbidden":
        return (
            f"{error.message} Ask for a token with a larger scope (`weightvault token create --scope ...`)."
        )
    return error.message
