"""Machines run commands: a shell (or a command reading commands from its input) is refused to
an identity without `allow_shell` (machines' default), before anything runs upstream."""

from __future__ import annotations

from bastion.stages.pipeline import SessionInfo, SessionIO, SessionStage


class ShellGateStage(SessionStage):
    name = "shell gate"

    async def gate(self, info: SessionInfo, io: SessionIO) -> str | None:
        if info.allow_shell or not info.runs_a_shell:
            return None
        what = "a shell" if info.command is None else f"{info.command!r} (it reads commands from its input)"
        who = f"machine {info.user}" if info.machine else info.user
        io.marker("denied", f"{info.command or 'shell'} [allow_shell]")
        return f"bastion: {who} runs commands only, not {what} (allow_shell = false)"
