"""Command screening as a session stage: every kind of session has a gate.

- **exec** commands and **subsystems** are decided before anything runs upstream.
- A session **with a terminal** (a shell, or any command run with `-t`) is screened at every key
  that may run the line: Enter, Ctrl-J/M/O, and any key whose effect the bastion does not know
  (see `bastion.core.keystrokes`). The line is read from a terminal emulator fed with the session's
  output, cross-checked with the keys, and read together with what earlier lines defined
  (`bastion.core.shellscope`). Allowed lines go through at once.
- A shell **without a terminal** (`ssh -T`, `echo cmd | ssh`, `ssh host bash -s`) gets its input
  cut into complete commands (`bastion.core.shellinput`), each decided before it is forwarded.

A denied line never runs: the bastion interrupts it at the target and checks on its emulated
screen that the line is gone before it forwards another key; if it cannot, the session ends.
A line that needs approval stays held: the user sees one status line, keystrokes other than
Ctrl-C (which cancels) are not forwarded, and the held key is released only when enough
approvers said yes; keys typed meanwhile are recorded as a marker. What the bastion cannot
decide with certainty is *unsure*: `when_unsure`. Lines are read from the output as the target
sent it (before masking); what decisions store of a command is masked and bounded
(`bastion.core.stored`).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

from bastion import metrics
from bastion.core.hidden import PROMPT
from bastion.core.keystrokes import PASTE_END, PASTE_START, Key, KeyReader, split_keys
from bastion.core.linetrack import LITERAL_EDITS, LineTracker, SubmittedLine, literal_keys, replay_keys
from bastion.core.rules import Action, Verdict
from bastion.core.shellinput import InputCommand, ShellInput, TooLong
from bastion.core.shellscope import Analysis, Scope, analyze
from bastion.core.stored import HEAD, MARGIN, stored_command, stored_keys, stored_screen
from bastion.core.wrappers import WRAPPERS
from bastion.stages.decisions import CommandDecisions, Notify, ScreeningContext
from bastion.stages.pipeline import SessionInfo, SessionIO, SessionStage, Stream
from recorder.transfers import SessionKind

# The longest a decision waits for the echo of the keys typed just before it: ECHO_WAIT, or
# ECHO_MARGIN times the echo delay this session has shown (a distant target, a loaded machine),
# up to ECHO_WAIT_MAX. The wait ends as soon as the echo shows: only a line whose keys never
# echo pays it in full, and is then unsure.
ECHO_WAIT = 0.5
ECHO_MARGIN = 4.0
ECHO_WAIT_MAX = 5.0
# ... when the line was typed ahead of any prompt (a shell still starting, a command still
# running): the shell shows it once it prompts, and would not run it any sooner.
TYPEAHEAD_WAIT = 10.0
CLEAR_WAIT = 3.0  # longest the shell may take to show that a denied line is gone
MAX_INTERRUPTS = 3  # the interrupt key is sent again while the shell keeps the line
INTERRUPT_AGAIN_QUIET = 0.2  # the shell redrew after the key and went quiet, the line still there
INTERRUPT_AGAIN_AFTER = 1.0  # or said nothing at all
MAX_QUEUED = 16 * 1024 * 1024  # input queued behind a held command (more than an SSH window)
# Full-screen programs: their keys are not shell lines (launching them was screened). A program
# that draws the alternate screen without being one of these (printf, tmux, screen) is not exempt.
FULL_SCREEN = frozenset({
    "vim", "vi", "nvim", "view", "vimdiff", "nano", "pico", "emacs", "mg", "joe", "micro", "less", "more",
    "most", "man", "info", "top", "htop", "btop", "atop", "iotop", "iftop", "nload", "watch", "tig", "mc",
    "ranger", "nnn", "mutt", "neomutt", "w3m", "lynx", "git", "journalctl", "systemctl", "psql", "mysql",
    "bat", "delta", "k9s", "lazygit", "ncdu", "dstat", "glances", "crontab", "visudo", "vipw", "sudoedit",
})
# Programs that run the program named after them: `sudo vim` is vim on screen.
RUNS_ANOTHER = frozenset(WRAPPERS) - {"watch", "xargs"}
# Builtins and the like: a line of only these leaves nothing in the foreground that asks for a password.
NEVER_ASKS = frozenset({
    "cd", "pushd", "popd", "export", "set", "unset", "shopt", "alias", "unalias", "echo", "printf", "stty",
    "true", "false", ":", "read", "local", "declare", "typeset", "readonly", "let", "eval", "trap", "bind",
    "bindkey", "setopt", "unsetopt", "umask", "ulimit", "hash", "type", "history", "fc", "jobs", "wait",
    "sleep", "clear", "reset", "tput", "test", "[", "[[", "source", ".", "builtin", "command", "exec",
    "emulate", "zle", "print", "tty", "exit", "logout", "return", "shift", "getopts", "enable",
})
SUBMITS_IN_PROGRAM = re.compile(rb"[\r\n]")  # Enter, Ctrl-J, Ctrl-M
# vim's command line (":", also in Ex mode and the command-line window), less's "!" and "|".
VIM_SHELL = re.compile(r"^\s*:\s*(?:(?:[.,;$%0-9+\-<>]|'.)*\s*)(?:sh(?:ell)?|ter(?:m(?:inal)?)?)\s*$")
# Ex commands that run something the bastion cannot read from the row (abbreviations included).
VIM_RUNS = re.compile(
    r"(?:^|\|)\s*(?:sil(?:ent)?!?\s*)?(?:(?:[.,;$%0-9+\-<>]|'.)*\s*)"
    r"(?:ter(?:m(?:inal)?)?\s+\S|exe(?:c(?:u(?:t(?:e)?)?)?)?\b|norm(?:a(?:l)?)?\b|so(?:u(?:r(?:c(?:e)?)?)?)?\b"
    r"|ru(?:n(?:t(?:i(?:m(?:e)?)?)?)?)?\b|(?:py(?:thon)?|py3|python3|pyx|pythonx)(?:do|f(?:ile)?)?\b|pyd(?:o)?\b"
    r"|lua(?:do|f(?:ile)?)?\b|pe(?:rl?)?(?:do?)?\b|rub(?:y)?(?:do?|f(?:ile)?)?\b|tcl(?:do?|f(?:ile)?)?\b"
    r"|mz(?:s(?:c(?:h(?:e(?:m(?:e)?)?)?)?)?)?(?:f(?:ile)?)?\b|l?mak(?:e)?\b|l?gr(?:e(?:p)?)?(?:a(?:dd)?)?\b"
    r"|r(?:e(?:a(?:d)?)?)?\s*!|w(?:r(?:i(?:t(?:e)?)?)?)?\s+!"
    r"|(?:se(?:t)?|setl(?:ocal)?|setg(?:lobal)?|let)\b.*\b(?:shell\w*|sh|makeprg|mp|grepprg|gp|equalprg|ep"
    r"|formatprg|fp|keywordprg|kp)\b)")
VIM_SILENT = re.compile(r"^:[\s:]*(?:sil(?:ent)?!\s*)?")
PROMPT_VARIABLES = ("PS1", "PS2", "PROMPT", "PROMPT_COMMAND", "PROMPT_COMMANDS", "RPROMPT", "RPS1", "precmd")
CALLS_OUT = re.compile(
    r"\b(?:system|systemlist|job_start|jobstart|termopen|term_start|libcall|libcallnr)\s*\(")

__all__ = ["Notify", "ScreeningContext", "ScreeningStage"]  # the context lives in bastion.stages.decisions


def echo_wait(echo_delay: float) -> float:
    """How long to wait for the echo of keys, given how long this session's keys take to echo."""
    return min(max(ECHO_WAIT, ECHO_MARGIN * echo_delay), ECHO_WAIT_MAX)


def _red(text: str) -> bytes:
    return b"\r\n\x1b[1;31m" + text.encode("utf-8", "replace") + b"\x1b[0m\r\n"


class ScreeningStage(SessionStage):
    name = "screener"

    def __init__(self, context: ScreeningContext) -> None:
        self._ctx = context
        self._info: SessionInfo | None = None
        self._io: SessionIO | None = None
        self._tracker: LineTracker | None = None
        self._held: bytes | None = None  # a key (and what followed it) awaiting a decision
        self._held_key = b""
        self._held_at = 0.0  # when the held key came (monotonic), for the metrics
        self._made: CommandDecisions | None = None
        self._awaiting = False  # an approval hold: keys other than Ctrl-C are dropped
        self._dropped = b""  # ... and kept (bounded) for a marker, with their count
        self._dropped_count = 0
        self._typeahead = b""  # keys typed while a line was being decided: screened after it
        self._task: asyncio.Task[None] | None = None
        self._scope = Scope()  # what the lines that ran defined
        self._pending = ""  # an unfinished command's earlier lines (the shell shows PS2)
        self._pending_prompt: str | None = None
        self._keys = KeyReader()
        self._launched: set[str] = set()  # programs the last line started
        self._may_ask = False  # ... and one of them may ask for a password (the prompt is not the shell's)
        self._shell_prompt: str | None = None  # the prompt the last screened line was typed at
        self._stdin: ShellInput | None = None  # a shell reading commands from the session's input
        self._stdin_eof = False
        self._program_key_at = 0.0  # when a full-screen program last got a key

    # -- decisions (see bastion.stages.decisions) -------------------------------------------------

    @property
    def _decisions(self) -> CommandDecisions:
        assert self._made is not None, "the stage has not started"
        return self._made

    def _decide(self, kind: str, command: str, *, analysis: Analysis | None = None, unsure: bool = False,
                why: str = "") -> Verdict:
        return self._decisions.decide(kind, command, analysis=analysis, unsure=unsure, why=why)

    def _mark(self, verdict: Verdict, command: str) -> None:
        self._decisions.mark(verdict, command)

    async def _await_approval(self, verdict: Verdict, command: str, *, interactive: bool) -> tuple[bool, str]:
        tracker = self._tracker
        masker = self._ctx.masker
        screen = (stored_screen(tracker.snapshot(), tracker.screen.columns, masker) if tracker is not None
                  else f"$ {stored_command(command, masker)}")
        return await self._decisions.await_approval(verdict, command, screen=screen, interactive=interactive)

    def _during_hold(self, data: bytes) -> None:
        """Keys typed while a line waits for approval: never forwarded, but a reviewer sees
        them (masked, bounded) in the recording."""
        if b"\x03" in data:
            self._decisions.cancel("ctrl-c")
        self._dropped_count += len(data)
        self._dropped += data[:max(0, HEAD + MARGIN - len(self._dropped))]

    def _report_dropped(self) -> None:
        if self._dropped_count and self._io is not None:
            dropped = stored_keys(self._dropped, self._dropped_count, self._ctx.masker)
            self._io.marker("dropped-input", dropped)
        self._dropped, self._dropped_count = b"", 0

    # -- the gate: exec commands and subsystems, before anything runs upstream -------------

    def start(self, info: SessionInfo, io: SessionIO) -> None:
        self._info, self._io = info, io
        self._made = CommandDecisions(self._ctx, info, io)
        self._made.before_end = self._report_dropped
        if info.has_pty:
            # A terminal: whatever runs in it (a shell, `sudo -i`, tmux, any program) gets its
            # lines screened like a shell's.
            self._tracker = LineTracker(info.width, info.height, clock=time.monotonic)
        elif info.kind is SessionKind.SHELL:
            self._stdin = ShellInput()

    async def gate(self, info: SessionInfo, io: SessionIO) -> str | None:
        if info.kind is SessionKind.EXEC:
            kind, command = "exec", info.command or ""
            analysis: Analysis | None = analyze(command)
            assert analysis is not None
            if analysis.stdin == "code" and not info.has_pty:
                analysis.note("it reads a program from its input, which the bastion cannot screen")
        elif info.kind is SessionKind.SUBSYSTEM:
            kind, command, analysis = info.subsystem or "", info.subsystem or "", None
        else:
            return None
        verdict = self._decide(kind, command, analysis=analysis)
        self._mark(verdict, command)
        if verdict.action is Action.DENY:
            return f"bastion: denied by rule {verdict.rule!r}: {verdict.message or 'not allowed'}"
        if verdict.action is Action.APPROVE:
            approved, why = await self._await_approval(verdict, command, interactive=False)
            if not approved:
                return f"bastion: {command!r} was not approved ({why})"
        if analysis is not None:
            self._scope, self._launched = analysis.scope, analysis.programs
            self._may_ask = bool(analysis.programs - NEVER_ASKS)
            if analysis.stdin == "shell" and not info.has_pty:
                self._stdin = ShellInput(analysis.scope)
        return None

    # -- output -------------------------------------------------------------------------------

    def on_target_output(self, data: bytes, stream: Stream) -> None:
        # The real output, not the masked one the user sees: a secret typed at the prompt
        # echoes masked, and the masked screen would disagree with the keys (unsure).
        if self._tracker is not None:
            self._tracker.output(data)

    def on_resize(self, width: int, height: int) -> None:
        if self._tracker is not None:
            self._tracker.resize(width, height)

    # -- input --------------------------------------------------------------------------------

    def on_input(self, data: bytes) -> bytes:
        tracker = self._tracker
        if self._held is not None:
            return self._while_held(data)
        if self._stdin is not None:
            return self._shell_input(data)
        if tracker is None:
            return data
        if tracker.alternate and self._full_screen():
            return self._in_program(data)
        return self._keystrokes(data)

    def _full_screen(self) -> bool:
        """Whether the last line started only full-screen programs (and what runs them)."""
        started = self._launched - RUNS_ANOTHER
        return bool(started) and started <= FULL_SCREEN

    def _while_held(self, data: bytes) -> bytes:
        if self._stdin is not None:
            return self._queue_input(data)
        if self._awaiting:
            self._during_hold(data)  # Ctrl-C cancels a hold; nothing else gets through
            return b""
        self._typeahead = (self._typeahead + data)[-65536:]
        return b""

    def _keystrokes(self, data: bytes) -> bytes:
        tracker = self._tracker
        assert tracker is not None
        self._keys.vi = self._scope.vi_mode
        # Several lines in one write (a paste without brackets) are not special: the first
        # submit key is held, and what follows it is screened once that line is decided.
        keys = split_keys(data, vi=self._scope.vi_mode)
        forward = bytearray()
        typed = bytearray()  # keys the tracker has not seen yet
        for index, key in enumerate(keys):
            kind = self._keys.classify(key)
            if kind in (Key.TEXT, Key.EDIT):
                forward += key
                typed += _pasted(key)
                if key.startswith(PASTE_START) and PASTED_CONTROLS.search(key[len(PASTE_START):]
                                                                          .removesuffix(PASTE_END)):
                    tracker.doubt = ("a paste holds control characters, which the line editor inserts "
                                     "as they are")
                continue
            if kind is Key.INTERRUPT:
                self._typed(typed)
                tracker.entered()
                if not self._scope.interrupt_trapped:
                    self._pending = ""  # Ctrl-C drops the line, and a command continued at PS2
                forward += key
                continue
            self._typed(typed)
            if kind is Key.OTHER and not tracker.keys and not self._pending and not tracker.prefilled() \
                    and not self._scope.keys_changed:
                forward += key  # nothing in the line for it to run
                continue
            self._held, self._held_key = b"".join(keys[index:]), key
            self._held_at = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._decide_line(kind))
            return bytes(forward)
        self._typed(typed)
        return bytes(forward)

    def _typed(self, typed: bytearray) -> None:
        if typed and self._tracker is not None:
            self._tracker.typed(bytes(typed))
            typed.clear()

    async def _decide_line(self, kind: Key) -> None:
        """A key that may run the line: read the line, decide, then release or discard."""
        tracker = self._tracker
        assert tracker is not None
        wait = TYPEAHEAD_WAIT if tracker.typed_ahead else echo_wait(tracker.echo_delay)
        deadline = time.monotonic() + wait
        while not tracker.echoed() and time.monotonic() < deadline:  # noqa: ASYNC110 - waits for the echo on the screen, bounded
            await asyncio.sleep(0.01)
        if kind is Key.SUBMIT and self._a_password():
            self._release()  # typed at a password prompt: not a command, never logged as one
            return
        line = tracker.submitted()
        if self._pending and tracker.prompt == self._pending_prompt:
            self._pending = ""  # back at the first line's prompt: the shell dropped the rest
        text = self._with_pending(line.text)
        prefilled = tracker.prefilled()
        reasons = [line.why] if line.unsure else []
        if kind is Key.EDITOR:
            reasons.append("the key opens an editor whose text runs when it closes")
        if kind is Key.OTHER and self._scope.keys_changed:
            reasons.append(f"the keys were rebound by `{self._scope.keys_changed}`: this one may run "
                           "the line")
        if not text.strip() and not prefilled and not reasons:
            self._release(submitted=kind is Key.SUBMIT)
            return
        self._shell_prompt = tracker.prompt
        # Other readings of the same keys, the strictest verdict holds: text that stood before
        # the first key may be the line's start (put there by the shell) or the echo of what ran
        # before; in cooked mode (a shell without line editing, `stty -echoctl`) backspace, DEL,
        # Ctrl-U and Ctrl-W may be characters of the line rather than edits.
        readings = [line]
        if line.unsure and tracker.keys:
            # What the screen shows is in doubt: what was typed is a reading too.
            readings.append(replace(line, text=replay_keys(tracker.keys)))
        if prefilled:
            readings.append(replace(line, text=prefilled + line.text))
        if LITERAL_EDITS.search(tracker.keys):
            readings.append(replace(line, text=literal_keys(tracker.keys)))
        verdict, line, analysis = self._strictest(readings, "; ".join(reasons))
        text = self._with_pending(line.text)
        if verdict.action in (Action.ALLOW, Action.LOG):
            self._release(submitted=kind in (Key.SUBMIT, Key.EDITOR), analysis=analysis, text=text)
            metrics.ENTER_DECISION.observe(time.monotonic() - self._held_at)
        elif verdict.action is Action.DENY:
            reason = f"bastion: denied by rule {verdict.rule!r}: {verdict.message or 'not allowed'}"
            await self._discard(reason, line=line.text)
        else:
            await self._hold(verdict, text, analysis=analysis, line=line.text)

    def _with_pending(self, text: str) -> str:
        return f"{self._pending}\n{text}" if self._pending else text

    def _strictest(self, readings: list[SubmittedLine], why: str) -> tuple[Verdict, SubmittedLine, Analysis]:
        """Decide every reading of a line; the first is logged, another only if it is stricter."""
        chosen: tuple[Verdict, SubmittedLine, Analysis] | None = None
        for reading in readings:
            text = self._with_pending(reading.text)
            analysis = analyze(text, self._scope, interactive=True)
            verdict = self._decide("shell", text, analysis=analysis, unsure=bool(why), why=why)
            if chosen is None or verdict.action.strictness > chosen[0].action.strictness:
                self._mark(verdict, text)
                chosen = (verdict, reading, analysis)
        assert chosen is not None
        return chosen

    def _a_password(self) -> bool:
        """Enter at a password prompt: a program the last line started may be asking (the
        prompt is not the one lines are typed at, nor one that line set), the keys did not
        echo, and no `stty -echo` explains that."""
        tracker = self._tracker
        assert tracker is not None
        looks_like = bool(PROMPT.search(tracker.prompt.rstrip().encode() + b" "))
        return (self._may_ask and not self._scope.echo_off and tracker.prompt != self._shell_prompt
                and looks_like and not tracker.echoes_keys())

    def _in_program(self, data: bytes) -> bytes:
        """Keys for a full-screen program: only its own ways into a shell are screened. A submit
        key is held until the program drew what was typed before it."""
        submit = SUBMITS_IN_PROGRAM.search(data)
        if submit is None:
            self._program_key_at = time.monotonic()
            return data
        self._held, self._held_key = data[submit.start():], data[submit.start():submit.end()]
        self._task = asyncio.get_running_loop().create_task(self._decide_program_line())
        if submit.start():
            self._program_key_at = time.monotonic()
        return data[:submit.start()]

    async def _decide_program_line(self) -> None:
        tracker = self._tracker
        assert tracker is not None
        deadline = time.monotonic() + ECHO_WAIT
        while not (tracker.last_output > self._program_key_at and  # noqa: ASYNC110 - waits for output to pause: no event marks that
                   time.monotonic() - tracker.last_output >= 0.03) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        row = tracker.cursor_row()
        if VIM_SHELL.match(row):
            self._launched = set()  # :sh, :terminal: a shell from here on, screened as such
            self._release(submitted=False)
            return
        command, why = _program_command(row)
        if command is None:
            self._release(submitted=False)
            return
        if tracker.last_output <= self._program_key_at:
            why = why or "the program did not show what was typed before the key"
        verdict = self._decide("shell", command, analysis=analyze(command, self._scope), unsure=bool(why),
                               why=why)
        self._mark(verdict, command)
        if verdict.action in (Action.ALLOW, Action.LOG):
            self._release(submitted=False)
            return
        if self._io is not None:
            said = (f"denied by rule {verdict.rule!r}: {verdict.message or 'not allowed'}"
                    if verdict.action is Action.DENY else "needs approval, which a program cannot wait for")
            self._io.say(_red(f"bastion: {said} (the program's command {_head(command, 60)!r})"))
        # The program keeps its command line; its submit key never arrives. What followed it is
        # screened as usual.
        held, key, self._held = self._held or b"", self._held_key, None
        rest, self._typeahead = held[len(key):] + self._typeahead, b""
        self._screen_typeahead(rest)

    # -- release, discard, hold -------------------------------------------------------------

    def _release(self, *, submitted: bool = True, analysis: Analysis | None = None, text: str = "") -> None:
        held, key, self._held = self._held or b"", self._held_key, None
        tracker = self._tracker
        if submitted and tracker is not None:
            if analysis is not None and analysis.incomplete:
                if not self._pending:
                    self._pending_prompt = tracker.prompt
                self._pending = text  # the shell waits for the rest (PS2)
            elif analysis is not None:
                prompt_set = any(analysis.scope.variables.get(name) is not self._scope.variables.get(name)
                                 for name in PROMPT_VARIABLES)
                self._may_ask = bool(analysis.programs - NEVER_ASKS) and not prompt_set
                self._pending, self._scope, self._launched = "", analysis.scope, analysis.programs
            tracker.entered()
        if self._io is None or not held:
            return
        rest = held[len(key):] + self._typeahead
        self._typeahead = b""
        self._io.to_target(key)
        self._screen_typeahead(rest)

    def _screen_typeahead(self, data: bytes) -> None:
        """Keys typed after a held key while it was decided go through screening the same way."""
        if data and self._io is not None:
            forward = self.on_input(data)
            if forward:
                self._io.to_target(forward)

    async def _discard(self, message: str, *, line: str) -> None:
        """Interrupt the line at the target and see it gone before anything else is forwarded."""
        io, tracker, info = self._io, self._tracker, self._info
        assert io is not None
        assert info is not None
        held, key = self._held or b"", self._held_key
        self._held = b""  # keys keep queueing until the line is gone
        typeahead, self._typeahead = held[len(key):] + self._typeahead, b""
        io.say(_red(message))
        if tracker is None:
            return
        if not tracker.keys and not line.strip() and not self._pending:
            self._held = None  # nothing was sent to the target that could still run
            # The shell draws nothing (its line did not change): the user gets their prompt
            # back from the bastion, under the message, where the shell's cursor is.
            io.say(self._ctx.masker.mask(tracker.before_cursor()).encode("utf-8", "replace"))
            self._screen_typeahead(typeahead)
            return
        if self._scope.tty_changed:
            io.end(f"bastion: session ended: the denied line cannot be cleared safely after "
                   f"`{self._scope.tty_changed}` changed the terminal's keys")
            return
        if self._scope.interrupt_trapped:
            io.end(f"bastion: session ended: the denied line cannot be cleared safely after "
                   f"`{self._scope.interrupt_trapped}` changed what Ctrl-C does")
            return
        since = sent = time.monotonic()
        io.to_target(info.interrupt_key)
        interrupts = 1
        while not tracker.line_cleared(line, since):
            now = time.monotonic()
            if now - since >= CLEAR_WAIT:
                io.end("bastion: session ended: a denied line could not be cleared at the prompt")
                return
            if interrupts < MAX_INTERRUPTS and (tracker.quiet_after(sent, INTERRUPT_AGAIN_QUIET)
                                                or now - sent >= INTERRUPT_AGAIN_AFTER):
                # The shell answered the key and kept the line: a line editor in the middle of a
                # key sequence (vi mode's Esc) takes the first Ctrl-C as the end of that sequence.
                sent = now
                io.to_target(info.interrupt_key)
                interrupts += 1
            await asyncio.sleep(0.01)
        tracker.entered()
        self._pending = ""
        self._held = None
        queued, self._typeahead = typeahead + self._typeahead, b""
        self._screen_typeahead(queued)

    async def _hold(self, verdict: Verdict, command: str, *, analysis: Analysis | None = None,
                    line: str = "") -> None:
        # Ctrl-C typed while the line was still being decided cancels the hold, too.
        if b"\x03" in self._typeahead:
            self._decisions.cancel("ctrl-c")
        self._awaiting = True
        self._typeahead = b""
        try:
            approved, why = await self._await_approval(verdict, command, interactive=True)
        finally:
            self._awaiting = False
        if approved:
            if self._io is not None:
                self._io.say(f"bastion: {why}\r\n".encode())
            self._release(submitted=self._held_key[-1:] in (b"\r", b"\n", b"\x0f"), analysis=analysis,
                          text=command)
        else:
            await self._discard(f"bastion: not run: {why}", line=line or command)

    # -- a shell reading the session's input, without a terminal ----------------------------

    def _shell_input(self, data: bytes) -> bytes:
        reader = self._stdin
        assert reader is not None
        try:
            commands = reader.feed(data)
        except TooLong as exc:
            if self._io is not None:
                self._io.end(f"bastion: session ended: {exc} cannot be screened")
            return b""
        return self._run_commands(commands)

    def _run_commands(self, commands: list[InputCommand]) -> bytes:
        """Forward allowed commands in order; stop at the first that is not."""
        reader, io = self._stdin, self._io
        assert reader is not None
        assert io is not None
        forward = bytearray()
        for index, command in enumerate(commands):
            text = command.text.rstrip("\n")
            if not text.strip():
                forward += command.data
                continue
            unsure = "\0" in text
            why = "the input holds a NUL byte" if unsure else ""
            if command.final and command.analysis.incomplete:
                unsure, why = True, f"the input ends inside a command ({command.analysis.incomplete})"
            verdict = self._decide("shell", text, analysis=command.analysis, unsure=unsure, why=why)
            self._mark(verdict, text)
            if verdict.action in (Action.ALLOW, Action.LOG):
                forward += command.data
                reader.ran(command)
                continue
            if verdict.action is Action.DENY:
                # What follows was written expecting this to run: nothing more is sent.
                io.end(f"bastion: denied by rule {verdict.rule!r}: {verdict.message or 'not allowed'}"
                       f" (on: {_head(text)}); nothing after it was sent")
                return bytes(forward)
            self._held, self._held_key = b"", b""
            io.hold_input("approval")
            rest = commands[index + 1:]
            self._task = asyncio.get_running_loop().create_task(self._hold_input(verdict, command, rest))
            return bytes(forward)
        if self._stdin_eof and not reader.holding:
            io.input_eof()
        return bytes(forward)

    def _queue_input(self, data: bytes) -> bytes:
        """A script's input while one of its commands waits: kept whole, in order (reading from
        the client is paused, so only what was already on its way arrives)."""
        self._typeahead += data
        if len(self._typeahead) > MAX_QUEUED and self._io is not None:
            self._io.end("bastion: session ended: too much input arrived while a command was held")
        return b""

    async def _hold_input(self, verdict: Verdict, command: InputCommand, rest: list[InputCommand]) -> None:
        io = self._io
        assert io is not None
        approved, why = await self._await_approval(verdict, command.text.rstrip("\n"), interactive=False)
        if not approved:
            io.end(f"bastion: {_head(command.text)!r} was not approved ({why}); nothing after it was sent")
            return
        assert self._stdin is not None
        self._stdin.ran(command)
        io.to_target(command.data)
        self._held = None
        queued, self._typeahead = self._typeahead, b""
        forward = self._run_commands(rest)
        if forward:
            io.to_target(forward)
        if self._held is None:
            io.release_input("approval")
            if queued:
                self._screen_typeahead(queued)

    def on_input_eof(self) -> bool:
        """The client's input ended: a shell runs what it holds, so that is decided first."""
        reader = self._stdin
        if reader is None:
            return False
        self._stdin_eof = True
        if self._held is not None:
            return True  # the EOF follows the held command
        last = reader.finish()
        forward = self._run_commands([last] if last is not None else [])
        if forward and self._io is not None:
            self._io.to_target(forward)
        return True

    def on_end(self, exit_status: int | None, exit_signal: str | None) -> None:
        if self._made is not None:
            self._made.end()
        if self._task is not None and not self._task.done():
            self._task.cancel()


PASTED_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _pasted(key: bytes) -> bytes:
    """A bracketed paste as the line editor inserts it: the text, line ends as newlines."""
    if key.startswith(PASTE_START):
        return key[len(PASTE_START):].removesuffix(PASTE_END).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return key


def _program_command(row: str) -> tuple[str | None, str]:
    """What a full-screen program's command line hands to a shell, and why it is unsure if it is:
    vim's `:!cmd`, `:call system()`, `:py ...`; less's `!cmd` and `|mcmd`."""
    stripped = row.strip()
    if CALLS_OUT.search(stripped):
        return stripped, "the program's command calls out to a shell"
    if stripped.startswith(":"):
        if VIM_RUNS.search(stripped[1:]):
            return stripped, "the program's command runs what the bastion cannot read"
        if "!" not in VIM_SILENT.sub("", stripped):
            return None, ""
        body = VIM_SILENT.sub("", stripped)  # `:silent!`'s bang is its own
        command = body.split("!", 1)[1]  # `:!cmd`, `:sil !cmd`, `:.!cmd`: what follows the `!`
    elif stripped.startswith("!"):
        command = stripped[1:]
    elif stripped.startswith("|"):
        command = stripped[2:].removeprefix("!")
    else:
        return None, ""
    # vim and less put the previous command where `!` stands, and file names at `%` and `#`.
    special = re.search(r"(?<!\\)[!%#]", command.lstrip("!"))
    command = command.lstrip("!").strip()
    if not command:
        return None, ""
    return command, "the program puts text of its own into the command" if special else ""


def _head(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."

