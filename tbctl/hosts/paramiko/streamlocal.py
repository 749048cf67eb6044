"""paramiko's missing channel: `direct-streamlocal@openssh.com`, a connection to a unix socket on the server
(what `ssh -L 127.0.0.1:L:/path` opens). paramiko knows only `direct-tcpip`, whose open message carries a host
and port; OpenSSH's PROTOCOL file (section 2.4) gives this one a socket path, a reserved string and a reserved
uint32 instead. The rest is paramiko's own `Transport.open_channel`, which has no hook for other fields.
sshd allows it unless `AllowStreamLocalForwarding no` (or `DisableForwarding yes`) says otherwise."""

from __future__ import annotations

import threading
import time
from typing import Any

from tbctl.hosts.paramiko.library import paramiko

KIND = "direct-streamlocal@openssh.com"


def open_streamlocal(transport: Any, socket_path: str, *, timeout: float) -> Any:
    """A channel to `socket_path` on the server; paramiko.ChannelException when the server refuses it (no
    such socket, permission denied, streamlocal forwarding disabled), SSHException when the link fails."""
    from paramiko.common import cMSG_CHANNEL_OPEN

    if not transport.active:
        raise paramiko.SSHException("SSH session not active")
    with transport.lock:
        window_size = transport._sanitize_window_size(None)
        max_packet_size = transport._sanitize_packet_size(None)
        chanid = transport._next_channel()
        m = paramiko.Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string(KIND)
        m.add_int(chanid)
        m.add_int(window_size)
        m.add_int(max_packet_size)
        m.add_string(socket_path)
        m.add_string("")  # reserved
        m.add_int(0)  # reserved
        chan = paramiko.Channel(chanid)
        transport._channels.put(chanid, chan)
        transport.channel_events[chanid] = event = threading.Event()
        transport.channels_seen[chanid] = True
        chan._set_transport(transport)
        chan._set_window(window_size, max_packet_size)
    transport._send_user_message(m)
    deadline = time.monotonic() + timeout
    while not event.wait(0.1):
        if not transport.active:
            raise transport.get_exception() or paramiko.SSHException("Unable to open channel.")
        if time.monotonic() >= deadline:
            raise paramiko.SSHException("Timeout opening channel.")
    opened = transport._channels.get(chanid)
    if opened is not None:
        return opened
    raise transport.get_exception() or paramiko.SSHException("Unable to open channel.")
