"""`tbctl completion SHELL`: the TAB-completion script for a shell, printed by the installed tbctl (the
same text as the files in completions/, which a test keeps equal), so a pipx user needs no clone."""

from __future__ import annotations

from typing import Annotated

import typer

from tbctl.cli.completion import COMPLETE_VAR, SHELLS, register_shells
from tbctl.cli.options import verb_app
from tbctl.errors import UsageError

verb = verb_app()


@verb.command("completion")
def completion(
    ctx: typer.Context,
    shell: Annotated[str, typer.Argument(
        metavar="SHELL", help=", ".join(SHELLS[:-1]) + " or " + SHELLS[-1], show_default=False)],
) -> None:
    """Print the TAB-completion script for SHELL; e.g. `source <(tbctl completion bash)` in ~/.bashrc.

    TAB then completes commands, options, --host (ssh_config aliases and the config file's hosts) and the
    ports of running TensorBoards, without connecting anywhere."""
    if shell not in SHELLS:
        raise UsageError(f"no completion script for {shell!r}", hint=f"choose one of {', '.join(SHELLS)}")
    from typer.completion import shell_complete

    register_shells()  # typer's shell classes, which tbctl registers only when they are needed
    # The script is what `_TBCTL_COMPLETE=source_SHELL tbctl` prints: it names only tbctl and the variable.
    shell_complete(ctx.find_root().command, {}, "tbctl", COMPLETE_VAR, f"source_{shell}")


command = typer.main.get_command(verb)
