"""The ``weightvault`` command: the client's commands, plus those of any installed plugin.

The server distribution adds ``serve``, ``worker``, ``db``, ``token``, ``fsck`` and ``gc`` through the
``weightvault.cli`` entry point group, so one command works whether the client is installed alone or
beside the server.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.main import get_command_name
from typer.models import CommandInfo

# `import httpx` also imports httpx's own command-line tool (click, pygments, rich.syntax) when those are
# installed, as they are beside typer; no weightvault command uses it, and skipping it saves ~40 ms per
# command. httpx falls back to a stub `httpx.main` when this import fails, as it does without its CLI extra.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from weightvault import commands, manage  # noqa: E402


def _version() -> str:
    # importlib.metadata (with zipfile, csv and email) costs ~30 ms: only --version and the plugins need it.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("weightvault-client")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"weightvault {_version()}")
        raise typer.Exit()


def build(*, plugins: bool = True, only: str | None = None) -> typer.Typer:
    """The command; with ``only``, just that one of the client's commands (or command groups) in it."""
    cli = typer.Typer(help="weightvault: a model-artifact store for PyTorch.", no_args_is_help=True)

    @cli.callback()
    def _root(
        show_version: Annotated[
            bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version.")
        ] = False,
    ) -> None:
        """weightvault: a model-artifact store for PyTorch."""

    commands.register(cli)
    manage.register(cli)
    if only is not None:
        # Typer turns every command's signature into click parameters before it parses anything (17-28
        # ms for all of them); one command runs, so only it is built. Its help, usage and errors are the
        # same as in the whole command.
        cli.registered_commands = [info for info in cli.registered_commands if _name(info) == only]
        cli.registered_groups = [info for info in cli.registered_groups if info.name == only]
    if plugins:
        from importlib.metadata import entry_points

        for plugin in entry_points(group="weightvault.cli"):
            plugin.load()(cli)
    return cli


def main() -> None:
    # A client command needs none of the server's modules: not loading them saves a tenth of a second
    # on every push, pull and ls (and `weightvault --help` still lists everything).
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    client_only = {name for group in (commands.COMMAND_NAMES, manage.COMMAND_NAMES) for name in group}
    if command in client_only:
        build(plugins=False, only=command)()
    else:  # --help, --version, a server command, or a typo to name close matches for: everything
        build()()


def _name(info: CommandInfo) -> str:
    callback = info.callback
    return info.name or get_command_name(callback.__name__ if callback is not None else "")


if __name__ == "__main__":
    main()
