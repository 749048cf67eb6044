"""The browser, in one place: the `--open/--no-open` option of `up` and `tunnel`, whether a command opens its
URL (the flag, else the `open` setting), and handing a URL to a browser. The hand-over is the Environment's
(`env.browser`, this module's `browse` unless a test gives its own), so commands are tested without one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from tbctl.cli.environment import Environment
    from tbctl.config import Settings

OpenOption = Annotated[Optional[bool], typer.Option(
    "--open/--no-open", help="Open the URL in a browser (default: `open` in the config file, else no).")]


def opens_browser(flag: bool | None, settings: Settings, host: str | None) -> bool:
    """--open/--no-open when given, else the `open` setting (the host's section over the top level)."""
    return settings.for_host(host).open if flag is None else flag


def browse(url: str) -> bool:
    """Whether a browser took the URL. webbrowser honours $BROWSER, and finds none on a headless machine.

    The browser inherits file descriptor 1 from us; it is pointed at stderr meanwhile, so what a browser
    says ("Opening in existing browser session.") never mixes with the URL or the JSON on stdout."""
    import os
    import sys
    import webbrowser

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        try:
            return bool(webbrowser.open(url))
        except webbrowser.Error:
            return False
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def open_in_browser(env: Environment, url: str) -> bool:
    """Hand `url` to a browser and say how that went. The URL is already on stdout: flushed first, so that
    in one stream (`2>&1`, a log) it comes before the words about it; they name it too, wherever stdout went."""
    env.stdout.flush()
    opened = env.browser(url)
    if opened:
        env.info(f"opened {url} in the browser")
    else:
        env.info(f"no browser available here; open {url} yourself")
    return opened
