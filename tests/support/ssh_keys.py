"""SSH keys a test makes for itself: a plain one (an impostor, a stranger), or one locked by a passphrase
that a server accepts for as long as the test needs it."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def keygen(path: Path, passphrase: str = "") -> Path:
    """A new ed25519 key at `path` (and `path`.pub)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)
    return path


@contextlib.contextmanager
def locked_key(server: Any, path: Path, passphrase: str) -> Iterator[Path]:
    """A new key protected by `passphrase`, accepted by `server` (an SshServer) until the block ends."""
    keygen(path, passphrase)
    authorized = Path(server.workdir) / "authorized_keys"
    original = authorized.read_text()
    authorized.write_text(original + Path(str(path) + ".pub").read_text())
    try:
        yield path
    finally:
        authorized.write_text(original)
