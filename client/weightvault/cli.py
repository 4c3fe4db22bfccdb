"""The ``weightvault`` command: the client's commands, plus those of any installed plugin.

The server distribution adds ``serve``, ``worker``, ``db``, ``token``, ``fsck`` and ``gc`` through the
``weightvault.cli`` entry point group, so one command works whether the client is installed alone or
beside the server.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Annotated

import typer

from weightvault import commands, manage


def _version() -> str:
    try:
        return version("weightvault-client")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"weightvault {_version()}")
        raise typer.Exit()


def build() -> typer.Typer:
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
    for plugin in entry_points(group="weightvault.cli"):
        plugin.load()(cli)
    return cli


def main() -> None:
    build()()


if __name__ == "__main__":
    main()
