"""What a service needs from the system around it: enough file descriptors, and systemd's
notify protocol (READY=1 once listening, STOPPING=1 when the drain starts)."""

from __future__ import annotations

import os
import resource
import socket

from bastion import metrics
from bastion.state.events import OpenFilesLimit

# Descriptors one session holds in the bastion: the client's connection and the target's
# (the recording's files go to the recorder process); what the process needs besides is
# RESERVED_FDS.
FDS_PER_SESSION = 2
RESERVED_FDS = 64


def raise_open_files_limit() -> OpenFilesLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit (under a soft limit of 1,024 the bastion
    would stop near 500 sessions) and say what it is now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    was, error = soft, None
    if hard == resource.RLIM_INFINITY:
        # Linux refuses an infinite RLIMIT_NOFILE; take the kernel's ceiling instead.
        try:
            with open("/proc/sys/fs/nr_open", encoding="ascii") as handle:
                target = int(handle.read())
        except (OSError, ValueError):
            target = soft
    else:
        target = hard
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            error = str(exc)
    metrics.OPEN_FILES_LIMIT.set(soft)
    return OpenFilesLimit(soft=soft, hard=hard, was=was, error=error,
                          sessions=max(0, (soft - RESERVED_FDS) // FDS_PER_SESSION))


class SystemdNotifier:
    """sd_notify(3) without libsystemd: one datagram per state to $NOTIFY_SOCKET. Without the
    variable (not run by systemd with Type=notify) every call does nothing."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # Children (the recorder process) must not speak for the bastion.
        os.environ.pop("NOTIFY_SOCKET", None)

    def notify(self, state: str) -> bool:
        """Send `state` (e.g. "READY=1"); False when there is nobody to tell or it failed."""
        address = self.address
        if not address or address[0] not in "/@":
            return False
        target = "\0" + address[1:] if address.startswith("@") else address  # abstract namespace
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(state.encode(), target)
        except OSError:
            return False
        return True
