"""`ls`: which hosts to ask, how long each may take, and the TensorBoards and forwards they answer with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tbctl.errors import TbctlError

if TYPE_CHECKING:
    from tbctl.config import Settings
    from tbctl.core.instances import HostError
    from tbctl.core.host_opener import HostOpener
    from tbctl.models import ForwardInfo, TensorBoardInstance
    from tbctl.state import StateStore

SCAN_SECONDS = 20.0  # what a host of several is given beyond connecting to be scanned and answer, before it is a row with its error


@dataclass(frozen=True)
class Listing:
    hosts: tuple[str | None, ...]  # None: this machine
    instances: tuple[TensorBoardInstance, ...]
    forwards: tuple[ForwardInfo, ...]
    errors: tuple[HostError, ...]
    failure: TbctlError | None = None  # the one host asked for could not be listed: the command's error

    @property
    def elsewhere(self) -> bool:
        """Whether any host but this machine alone was asked (then each row says which host it is on)."""
        return self.hosts != (None,)


def hosts_to_list(hosts: Sequence[str], *, all_hosts: bool, settings: Settings, store: StateStore) -> list[str | None]:
    """`--host`s as given (else this machine); with `--all-hosts`, this machine and every known host too.
    A `--host` that is no host spec fails the command (exit 2) before any host is asked: a typo, not a row."""
    from tbctl.hosts.host_spec import parse_spec

    for spec in hosts:
        parse_spec(spec)
    specs: list[str | None] = list(hosts) if hosts else [None]
    if all_hosts:
        specs = [None, *(h for h in known_hosts(settings, store) if h not in specs)]
    return specs


def known_hosts(settings: Settings, store: StateStore) -> list[str]:
    """Hosts named in the config file or in tbctl's records (instances started, forwards)."""
    from tbctl.models import LOCAL_HOST_NAME

    names = list(settings.hosts)
    for host in [*(r.host for r in store.load()), *(f.host for f in store.forwards())]:
        if host != LOCAL_HOST_NAME and host not in names:
            names.append(host)
    return names


def list_hosts(specs: Sequence[str | None], hosts: HostOpener, store: StateStore, *,
               connect_timeout: float | None) -> Listing:
    """One host: its failure is the command's (exit code and all), and also its error row. Several: in
    parallel, never prompting, each with its own deadline; a dead host is a row with its error."""
    from tbctl.core.forwards import list_forwards
    from tbctl.core.instances import HostError, list_instances, list_many, with_forwards
    from tbctl.hosts.host_spec import DEFAULT_CONNECT_TIMEOUT

    errors: list[HostError] = []
    failure: TbctlError | None = None
    if len(specs) == 1:
        try:
            with hosts.open(specs[0], connect_timeout=connect_timeout) as host:
                instances = list_instances(host, store)
        except TbctlError as exc:
            instances, failure = [], exc
            errors.append(HostError(specs[0] or "localhost", exc.message, exc.exit_code))
    else:
        instances, errors = list_many(
            specs, lambda spec: hosts.open(spec, connect_timeout=connect_timeout, interactive=False), store,
            timeout=(connect_timeout or DEFAULT_CONNECT_TIMEOUT) + SCAN_SECONDS)
    forwards = list_forwards(store)
    return Listing(hosts=tuple(specs), instances=tuple(with_forwards(instances, forwards)), forwards=tuple(forwards),
                   errors=tuple(errors), failure=failure)
