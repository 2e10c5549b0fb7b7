"""The terminal UI (`bastion review`, `bastion play`) for a user of the bastion's own commands, on
their SSH channel's pty.

The UI runs as a process of its own on a pseudo-terminal of its own, at the channel's size: a
viewer that crashes or hangs ends only itself. The program and its arguments are the bastion's
(never the user's words), its environment is built here (TERM, checked, and nothing of the
bastion's own), and it starts in an empty folder. Keys go from the channel to the pty, the screen
from the pty to the channel; a window change resizes the pty and tells the UI (SIGWINCH); the
channel's end ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import struct
import sys
import tempfile
import termios
from collections.abc import Callable

import asyncssh

TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
DEFAULT_TERM = "xterm-256color"
STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL when the channel goes away
PER_USER = 4  # terminal UIs one user may have running at once
IN_ALL = 32  # and all users together: each is a process of its own


class ViewerSlots:
    """How many terminal UIs run, per user and in all: one user opening viewer after viewer
    never takes the bastion's memory and cores from everyone else."""

    def __init__(self, per_user: int = PER_USER, in_all: int = IN_ALL) -> None:
        self.per_user, self.in_all = per_user, in_all
        self._running: dict[str, int] = {}

    def take(self, user: str) -> str | None:
        """Why `user` may not start one more now, or None (and the slot is theirs)."""
        if self._running.get(user, 0) >= self.per_user:
            return f"you have {self.per_user} terminal UIs open on the bastion, the most one user may"
        if sum(self._running.values()) >= self.in_all:
            return f"the bastion runs {self.in_all} terminal UIs, the most it allows; try again later"
        self._running[user] = self._running.get(user, 0) + 1
        return None

    def give_back(self, user: str) -> None:
        left = self._running.get(user, 0) - 1
        if left > 0:
            self._running[user] = left
        else:
            self._running.pop(user, None)


class TerminalProgram:
    """One UI process on its own pty, joined to one SSH channel."""

    def __init__(self, argv: Callable[[int | None], list[str]], *, term: str, size: tuple[int, int],
                 report: Callable[[str], None] | None = None) -> None:
        """`argv(fd)`: the UI's arguments (after the Python interpreter), given the descriptor it
        reports on (None without `report`)."""
        self._argv = argv
        self._term = term if TERM.fullmatch(term or "") else DEFAULT_TERM
        self._size = size
        self._report = report  # hears each line the UI writes on its report pipe
        self._master = -1
        self._report_fd = -1
        self._proc: asyncio.subprocess.Process | None = None
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._report_buffer = b""
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    async def run(self, chan: asyncssh.SSHServerChannel[bytes]) -> int:
        """Run the UI until it exits (its status) or the channel ends (-1)."""
        self._chan = chan
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        self._master = master
        _set_size(master, *self._size)
        os.set_blocking(master, False)
        report_read, report_write = os.pipe() if self._report is not None else (-1, -1)
        self._folder = tempfile.TemporaryDirectory(prefix="bastion-view-")
        env = {"TERM": self._term, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": self._folder.name,
               "PATH": os.defpath, "COLORTERM": "truecolor"}
        report_fd = report_write if report_write >= 0 else None
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, *self._argv(report_fd), stdin=slave, stdout=slave, stderr=slave, env=env,
                cwd=self._folder.name, start_new_session=True, close_fds=True,
                pass_fds=(report_write,) if report_fd is not None else (),
            )
        finally:
            os.close(slave)
            if report_write >= 0:
                os.close(report_write)
        loop.add_reader(master, self._from_program)
        if report_read >= 0:
            self._report_fd = report_read
            os.set_blocking(report_read, False)
            loop.add_reader(report_read, self._from_report)
        status = await self._proc.wait()
        self._drain()
        self._close_fds()
        return status

    # -- the channel's side --------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._master < 0:
            return
        with contextlib.suppress(BlockingIOError, OSError):  # a full pty drops keys, never blocks
            os.write(self._master, data)

    def resize(self, width: int, height: int) -> None:
        if self._master < 0 or width <= 0 or height <= 0:
            return
        _set_size(self._master, width, height)
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGWINCH)

    def stop(self) -> None:
        """The channel ended: end the UI (its whole process group), forcibly if it lingers."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            self._close_fds()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

        def kill() -> None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

        asyncio.get_running_loop().call_later(STOP_GRACE, kill)

    # -- the program's side --------------------------------------------------------------------

    def _from_program(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the program closed its side
            asyncio.get_running_loop().remove_reader(self._master)
            return
        if not data:
            asyncio.get_running_loop().remove_reader(self._master)
            return
        if self._chan is not None:
            with contextlib.suppress(BrokenPipeError):
                self._chan.write(data)

    def _drain(self) -> None:
        while self._master >= 0:
            try:
                data = os.read(self._master, 65536)
            except OSError:
                return
            if not data:
                return
            if self._chan is not None:
                with contextlib.suppress(BrokenPipeError):
                    self._chan.write(data)

    def _from_report(self) -> None:
        try:
            data = os.read(self._report_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._report_fd)
            return
        self._report_buffer += data
        *lines, self._report_buffer = self._report_buffer.split(b"\n")
        self._report_buffer = self._report_buffer[-4096:]
        for line in lines:
            if self._report is not None:
                self._report(line.decode("utf-8", "replace")[:200])

    def _close_fds(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in (self._master, self._report_fd):
            if fd >= 0:
                loop.remove_reader(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._report_fd = -1
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


def _set_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

