"""Drive a real terminal: tmux runs the real ssh client, send-keys types, capture-pane reads.

Each pane gets a tmux server of its own (`-S`): a shared default server exits when its last
session closes, and a new session started in that moment fails with "server exited unexpectedly".
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PROMPT_SHAPE = re.compile(r"[$#>%:] ?$")


class TmuxPane:
    def __init__(self, command: list[str], *, width: int = 100, height: int = 30) -> None:
        self.name = f"bastion-test-{uuid.uuid4().hex[:8]}"
        self._socket = Path(tempfile.gettempdir()) / f"{self.name}.tmux"
        self._tmux("-f", "/dev/null", "new-session", "-d", "-s", self.name,
                   "-x", str(width), "-y", str(height), shlex.join(command),
                   ";", "set-option", "-t", self.name, "remain-on-exit", "on")

    def _tmux(self, *args: str, check: bool = True) -> str:
        return subprocess.run(["tmux", "-S", str(self._socket), *args], capture_output=True, text=True,
                              check=check, timeout=30).stdout

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, *keys)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", self.name, "-l", text)

    def send_raw(self, data: bytes) -> None:
        """Exactly these bytes, in one write, as a terminal sends a fast paste or a key macro."""
        self._tmux("send-keys", "-t", self.name, "-H", *(f"{byte:02x}" for byte in data))

    def paste(self, text: str, *, bracketed: bool = True) -> None:
        """Paste as a terminal does, in one write: bracketed when the program asked for it (bash
        then inserts the lines and waits for Enter), or as typed keys, each line end an Enter."""
        self._tmux("set-buffer", "-b", "paste", text)
        self._tmux("paste-buffer", *(["-p"] if bracketed else []), "-b", "paste", "-t", self.name)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name)

    def drawn(self) -> str:
        """What the program drew, from the first line it scrolled off the screen on, without
        tmux's own `Pane is dead` line (which scrolls the screen once the program has ended)."""
        lines = self._tmux("capture-pane", "-p", "-S", "-", "-t", self.name).splitlines()
        return "\n".join(line for line in lines if not line.startswith("Pane is dead"))

    def cursor_row(self) -> str:
        """The text left of the cursor on its row."""
        y, x = (int(v) for v in self._tmux("display-message", "-p", "-t", self.name,
                                           "#{cursor_y} #{cursor_x}").split())
        rows = self._tmux("capture-pane", "-p", "-t", self.name).split("\n")
        return rows[y][:x] if y < len(rows) else ""

    def line_number(self) -> int:
        """The cursor's row counted from the top of the history: it grows with every line end the
        terminal draws, also once the screen scrolls (the cursor's own row then stays put)."""
        history, y = (int(v) for v in self._tmux("display-message", "-p", "-t", self.name,
                                                 "#{history_size} #{cursor_y}").split())
        return history + y

    def at_prompt(self, timeout: float = 20) -> None:
        """Wait until the row left of the cursor ends like a prompt (`$`, `#`, `>`, `%`, `:`): keys
        typed before a shell draws its prompt come first on screen, and the bastion treats such a
        line as unsure."""
        deadline = time.monotonic() + timeout
        while not PROMPT_SHAPE.search(row := self.cursor_row()):
            if time.monotonic() > deadline:
                raise AssertionError(f"no prompt at the cursor (its row: {row!r}); screen:\n{self.screen()}")
            time.sleep(0.05)

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared; screen:\n{screen}")
            time.sleep(0.05)

    def wait_for_echo_off(self, tty: str, timeout: float = 20) -> None:
        """Wait until the terminal `tty` (the target's, on this machine) no longer echoes: a
        program reading a password is ready. Keys typed before that can reach the shell while it
        is still switching modes and be lost to the program, which then waits forever."""
        deadline = time.monotonic() + timeout
        while "-echo " not in subprocess.run(["stty", "-a", "-F", tty], capture_output=True,
                                             text=True, check=True).stdout:
            if time.monotonic() > deadline:
                raise AssertionError(f"{tty} still echoes")
            time.sleep(0.05)

    def resize(self, width: int, height: int) -> None:
        self._tmux("resize-window", "-t", self.name, "-x", str(width), "-y", str(height))

    def alternate_screen(self) -> bool:
        """Whether the program in the pane switched to the alternate screen (as vim does)."""
        return self._tmux("display-message", "-p", "-t", self.name, "#{alternate_on}").strip() == "1"

    def dead(self) -> bool:
        return self._tmux("display-message", "-p", "-t", self.name, "#{pane_dead}").strip() == "1"

    def exit_shell(self, timeout: float = 20) -> None:
        """Type `exit` and wait for ssh to end (the pane stays, dead, for inspection)."""
        self.type("exit")
        self.send("Enter")
        deadline = time.monotonic() + timeout
        while not self.dead() and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self._tmux("kill-server", check=False)
        self._socket.unlink(missing_ok=True)
