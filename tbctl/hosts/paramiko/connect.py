"""Opening an authenticated paramiko Transport the way OpenSSH would: ProxyJump/ProxyCommand, known_hosts
and StrictHostKeyChecking, then agent, identity files, password and keyboard-interactive (2FA).

Only imported on paths that open SSH (paramiko costs ~125 ms of start-up)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

import logging

from tbctl.hosts.paramiko.library import paramiko

from tbctl.errors import AuthFailed, HostKeyRejected, SSHError, Unreachable
from tbctl.hosts.paramiko.config import SSHTarget, default_identity_files, resolve


# paramiko logs protocol oddities (e.g. a refused auth method) as warnings; they are not the user's business.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


class Prompter(Protocol):
    """How SSH asks the person at the keyboard (a passphrase, a password, a host key). The CLI provides it."""

    @property
    def interactive(self) -> bool: ...

    def secret(self, prompt: str) -> str: ...

    def ask(self, prompt: str) -> str: ...


class NoPrompter:
    interactive = False

    def secret(self, prompt: str) -> str:  # pragma: no cover - never called when not interactive
        raise SSHError("cannot prompt without a terminal")

    ask = secret


@dataclass
class Connection:
    target: SSHTarget
    transport: paramiko.Transport
    interactive_auth: bool = False  # a passphrase, password or 2FA answer was needed: no unattended reconnect
    hops: list[paramiko.Transport] = field(default_factory=list)
    asked_for: str = ""  # what a person answered, for messages: "a password", "the passphrase of key K", ...

    def close(self) -> None:
        self.transport.close()
        for hop in reversed(self.hops):
            hop.close()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:…` form, as `ssh` shows it when asking."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def connect(target: SSHTarget, prompter: Prompter) -> Connection:
    hops: list[paramiko.Transport] = []
    asked: list[str] = []  # what a person had to answer, on the way (jump hosts) and here
    try:
        sock = _open_socket(target, prompter, hops, asked)
        transport = _new_transport(sock)
        transport.set_keepalive(target.server_alive_interval)
        try:
            transport.start_client(timeout=target.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SSHError(f"SSH handshake with {target.display} failed: {exc or type(exc).__name__}",
                           hint="is it an SSH server? try `ssh -v " + target.name + "`") from exc
        _check_host_key(target, transport.get_remote_server_key(), prompter)
        answered = _authenticate(target, transport, prompter)
        if answered:
            asked.append(answered)
    except BaseException:
        for hop in reversed(hops):
            hop.close()
        raise
    return Connection(target=target, transport=transport, interactive_auth=bool(asked), hops=hops,
                      asked_for=" and ".join(asked))


# AES-GCM first, as OpenSSH orders it: one AEAD pass per packet instead of AES-CTR plus a separate HMAC that
# paramiko computes and compares in Python. Measured by bench/tunnel: throughput 0.49× -> 0.69× of `ssh -N -L`.
_AEAD_FIRST = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _new_transport(sock: Any) -> paramiko.Transport:
    transport = paramiko.Transport(sock)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in _AEAD_FIRST if c in offered) + tuple(c for c in offered if c not in _AEAD_FIRST)
    return transport


def _open_socket(target: SSHTarget, prompter: Prompter, hops: list[paramiko.Transport], asked: list[str]) -> Any:
    if target.proxy_jump:
        # Each hop is a full SSH connection; the next one rides a direct-tcpip channel of the previous.
        previous: paramiko.Transport | None = None
        chain = list(target.proxy_jump)
        for hop_spec in chain:
            # a hop's own ProxyJump/ProxyCommand would loop back into this chain: the chain is the route
            hop_target = _without_jump(resolve(hop_spec, connect_timeout=target.connect_timeout))
            sock = _channel_to(previous, hop_target) if previous is not None else _tcp(hop_target)
            transport = _new_transport(sock)
            try:
                transport.start_client(timeout=target.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise SSHError(f"SSH handshake with jump host {hop_target.display} failed: {exc}") from exc
            _check_host_key(hop_target, transport.get_remote_server_key(), prompter)
            hops.append(transport)
            hop_asked = _authenticate(hop_target, transport, prompter)
            if hop_asked:  # a reconnect must pass this hop too
                asked.append(f"{hop_asked} for jump host {hop_spec}")
            previous = transport
        assert previous is not None
        return _channel_to(previous, target)
    if target.proxy_command:
        try:
            return paramiko.ProxyCommand(target.proxy_command)
        except Exception as exc:
            raise SSHError(f"ProxyCommand for {target.name} failed: {exc}") from exc
    return _tcp(target)


def _without_jump(target: SSHTarget) -> SSHTarget:
    from dataclasses import replace

    return replace(target, proxy_jump=(), proxy_command=None)


def _channel_to(transport: paramiko.Transport, target: SSHTarget) -> paramiko.Channel:
    try:
        return transport.open_channel("direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0),
                                      timeout=target.connect_timeout)
    except (paramiko.SSHException, OSError) as exc:
        raise SSHError(f"the jump host could not reach {target.hostname}:{target.port}: {exc}") from exc


def _tcp(target: SSHTarget) -> socket.socket:
    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=target.connect_timeout)
    except socket.gaierror as exc:
        raise Unreachable(
            f"cannot resolve host {target.hostname!r}",
            hint=f"is {target.name!r} a Host in your ssh config or a DNS name? (`ssh -G {target.name}` shows what ssh uses)",
        ) from exc
    except socket.timeout as exc:
        raise Unreachable(f"connecting to {target.display} timed out after {target.connect_timeout:g} s",
                          hint="is the host up and reachable? --connect-timeout sets the limit") from exc
    except ConnectionRefusedError as exc:
        raise Unreachable(f"{target.display} refused the connection", hint="is sshd running on that port?") from exc
    except OSError as exc:
        raise Unreachable(f"cannot connect to {target.display}: {exc.strerror or exc}") from exc
    # Nagle on the transport's socket delays small forwarded writes: a reply written in two sends waits ~40 ms
    # for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    return sock


# --- host keys -----------------------------------------------------------------------------------------------


def _check_host_key(target: SSHTarget, key: paramiko.PKey, prompter: Prompter) -> None:
    """As OpenSSH: the user's known_hosts files, then the global ones (GlobalKnownHostsFile, e.g. a
    cluster's /etc/ssh/ssh_known_hosts). A match in any of them is enough; a different key of the same
    type, or keys of other types only, is a refusal whatever StrictHostKeyChecking says."""
    name = target.known_hosts_name
    fp = fingerprint(key)
    changed = other_type = False
    for path in (*target.known_hosts_files, *target.global_known_hosts_files):
        entry = _known_hosts(path).lookup(name)
        if entry is None:
            continue
        if key.get_name() not in entry:
            other_type = True
        elif entry[key.get_name()] == key:
            return
        else:
            changed = True
    if changed:
        raise HostKeyRejected(
            target.name, fp,
            f"the host key of {name} has CHANGED (now {key.get_name()} {fp}); refusing to connect",
            hint=f"if the server was really reinstalled, remove the old key: ssh-keygen -R '{name}'",
        )
    if other_type:  # known under another key type: OpenSSH treats this as a mismatch too
        raise HostKeyRejected(
            target.name, fp,
            f"{name} offered a {key.get_name()} key ({fp}) but known_hosts has another type for it; refusing",
            hint=f"check the server, then ssh-keygen -R '{name}'",
        )
    policy = target.strict_host_key_checking
    if policy in ("accept-new", "no", "off"):
        _remember(target, key)
        return
    if policy == "ask" and prompter.interactive:
        answer = prompter.ask(
            f"The authenticity of host '{name}' can't be established.\n"
            f"{key.get_name()} key fingerprint is {fp}.\n"
            f"Are you sure you want to continue connecting (yes/no/[fingerprint])? "
        ).strip()
        if answer == "yes" or answer == fp:
            _remember(target, key)
            return
        raise HostKeyRejected(target.name, fp, f"host key of {name} not accepted")
    raise HostKeyRejected(
        target.name, fp,
        f"unknown host key for {name}: {key.get_name()} {fp}",
        hint=f"verify the fingerprint, then accept it once with `ssh {target.name}` "
        f"or set `StrictHostKeyChecking accept-new` for this host",
    )


def _known_hosts(path: str) -> paramiko.HostKeys:
    known = paramiko.HostKeys()
    if os.path.isfile(path):
        try:
            known.load(path)
        except (OSError, paramiko.SSHException):
            return paramiko.HostKeys()
    return known


def _remember(target: SSHTarget, key: paramiko.PKey) -> None:
    """Append the key to the first user known_hosts file, hashed (`|1|salt|hash`) under HashKnownHosts."""
    path = target.known_hosts_files[0]
    name = target.known_hosts_name
    if target.hash_known_hosts:
        name = paramiko.HostKeys.hash_host(name)
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    with open(path, "a", encoding="ascii") as f:
        f.write(f"{name} {key.get_name()} {key.get_base64()}\n")


# --- authentication -----------------------------------------------------------------------------------------


def _authenticate(target: SSHTarget, transport: paramiko.Transport, prompter: Prompter) -> str:
    """Agent keys, then identity files, then password / keyboard-interactive on a terminal.

    Returns what a person had to answer ("" if nothing): then an unattended reconnect is impossible. A
    key whose passphrase was typed counts too: the background forwarder, or a reconnect, cannot type it."""
    tried: list[str] = []
    remaining: list[str] = []

    def attempt(label: str, fn: Any) -> bool:
        nonlocal remaining
        try:
            allowed = fn()
        except paramiko.AuthenticationException:
            tried.append(label)
            return False
        except paramiko.SSHException as exc:
            tried.append(f"{label} ({exc})")
            return False
        if allowed:  # partial success: the server wants another factor (e.g. publickey + 2FA)
            remaining = list(allowed)
            return False
        return True

    allowed = _allowed_methods(target, transport)
    if allowed is None:  # the server let us in with no authentication at all
        return ""
    files = list(target.identity_files) or default_identity_files()
    if "publickey" in allowed and not (target.identities_only and target.identity_files):
        try:
            agent_keys = paramiko.Agent().get_keys()
        except paramiko.SSHException:
            agent_keys = ()
        for key in agent_keys:
            if attempt(f"agent key {fingerprint(key)}", lambda k=key: transport.auth_publickey(target.user, k)):
                return ""
            if remaining:
                break
    if not remaining and "publickey" in allowed:
        for path in files:
            key, typed = _load_key(path, prompter, tried)
            if key is not None and attempt(path, lambda k=key: transport.auth_publickey(target.user, k)):
                return f"the passphrase of key {path}" if typed else ""
            if remaining:
                break
    offered = set(remaining or allowed)
    if prompter.interactive and offered & {"keyboard-interactive", "password"}:
        def handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
            header = "\n".join(x for x in (title, instructions) if x)
            answers = []
            for i, (text, echo) in enumerate(prompts):
                shown = f"{header}\n{text}" if i == 0 and header else text
                answers.append(prompter.ask(shown) if echo else prompter.secret(shown))
            return answers

        if "keyboard-interactive" in offered and attempt(
            "keyboard-interactive", lambda: transport.auth_interactive(target.user, handler)
        ):
            return "a password or 2FA answer"
        if "password" in offered:
            password = prompter.secret(f"{target.user}@{target.hostname}'s password: ")
            if attempt("password", lambda: transport.auth_password(target.user, password)):
                return "a password"
    what = ", ".join(tried) if tried else "no agent keys and no identity files"
    if remaining and not prompter.interactive:
        raise AuthFailed(
            f"{target.hostname} also wants {' or '.join(remaining)} (a password or 2FA code) for {target.user}",
            hint="run tbctl on a terminal so it can ask",
        )
    raise AuthFailed(
        f"authentication as {target.user} on {target.hostname} failed (tried: {what})",
        hint="check `ssh " + target.name + "` works; without a terminal tbctl cannot ask for a password"
        if not prompter.interactive else "check the user name and key (IdentityFile in ~/.ssh/config)",
    )


def _allowed_methods(target: SSHTarget, transport: paramiko.Transport) -> list[str] | None:
    """What the server accepts (its answer to auth "none"), so we offer only that, as OpenSSH does."""
    try:
        transport.auth_none(target.user)
        return None
    except paramiko.BadAuthenticationType as exc:
        return list(exc.allowed_types)
    except paramiko.SSHException:
        return ["publickey", "keyboard-interactive", "password"]


def _load_key(path: str, prompter: Prompter, tried: list[str]) -> tuple[paramiko.PKey | None, bool]:
    """(the key or None, whether its passphrase was typed)."""
    try:
        return paramiko.PKey.from_path(path), False
    except (paramiko.PasswordRequiredException, TypeError):
        # paramiko 5 lets cryptography's TypeError ("Key is password-protected…") through for
        # OpenSSH-format keys, where older keys raise PasswordRequiredException.
        pass
    except (OSError, paramiko.SSHException, ValueError) as exc:
        tried.append(f"{path} ({exc})")
        return None, False
    if not prompter.interactive:
        tried.append(f"{path} (needs a passphrase; no terminal to ask)")
        return None, False
    passphrase = prompter.secret(f"Enter passphrase for key '{path}': ")
    try:
        return paramiko.PKey.from_path(path, password=passphrase.encode()), True  # bytes, whatever its annotation says
    except (paramiko.SSHException, ValueError, TypeError):
        tried.append(f"{path} (wrong passphrase)")
        return None, False
