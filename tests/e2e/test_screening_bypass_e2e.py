"""A hostile user against the gate, through the real OpenSSH client, the bastion and a real sshd.

Every attempt tries to delete a sentinel folder on the target that the rules forbid deleting;
the test checks on the target's filesystem that it survived -- not the bastion's message. The
attempts come in every session kind (exec, a shell without a terminal, piped scripts, a
terminal with bash in emacs and vi mode, zsh, `ssh -t host bash`) and every class the shell
offers (expansions, wrappers, shells reading text, history, key bindings, submit keys, editor
keys, terminal settings, the alternate screen). Unsure is denied here (`when_unsure = "deny"`).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.demo.sandbox import Sandbox
from tests.support.lab import LOGIN, eventually, need
from tests.support.sessions import rules_sandbox, sentinel
from tests.support.tmux import TmuxPane

pytestmark = pytest.mark.e2e

RULES = """
[defaults]
action = "allow"
when_unsure = "deny"

[[rule]]
name = "no-recursive-rm"
action = "deny"
message = "no recursive deletes"
program = "rm"
args = ["-*[rR]*"]  # -r, -R, -fr, --recursive

[[rule]]
name = "no-forbidden"
action = "deny"
command = "forbidden"
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    need("ssh", "sshd", "tmux", "zsh")
    sandbox = rules_sandbox(tmp_path_factory.mktemp("bypass"), RULES)
    yield sandbox
    sandbox.stop()


def ssh(box: Sandbox, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", *args],
                          input=stdin, capture_output=True, timeout=60, check=False)


# -- exec: the command is decided before anything runs --------------------------------------------

EXEC = [
    "rm -rf {s}", "rm -r -f {s}", "rm --recursive {s}", "r\\m -rf {s}", "'rm' -rf {s}", "$'\\x72m' -rf {s}",
    "{{rm,-rf,{s}}}", "a=rm; $a -rf {s}", "/bin/r[m] -rf {s}", "/bin/r? -rf {s}", "rm $(echo -rf) {s}",
    "f=-rf; rm $f {s}", "IFS=,; c=rm,-rf,{s}; $c", "eval 'rm -rf {s}'", "eval \"$(echo rm -rf {s})\"",
    "echo rm -rf {s} | bash", "echo 'rm -rf {s}' | sh -s", "bash <<< 'rm -rf {s}'", "bash -c 'rm -rf {s}'",
    "sh -c \"true; rm -rf {s}\"", "sudo -u root rm -rf {s}", "env -S 'rm -rf {s}'", "env -i rm -rf {s}",
    "timeout -s KILL 30 rm -rf {s}", "nice -n 5 rm -rf {s}", "nohup rm -rf {s}", "exec -a x rm -rf {s}",
    "setsid -w rm -rf {s}", "stdbuf -oL rm -rf {s}", "flock /tmp/l -c 'rm -rf {s}'", "xargs rm -rf <<< {s}",
    "echo {s} | xargs rm -rf", "find {s} -exec rm -rf {{}} +", "find {s} -delete -o -exec rm -rf {{}} \\;",
    "script -qc 'rm -rf {s}' /dev/null", "watch -n 1 -g 'rm -rf {s}'", "timeout --weird 5 rm -rf {s}",
    "python3 -c 'import shutil; shutil.rmtree(\"{s}\")'", "perl -e 'system(\"rm -rf {s}\")'",
    "awk 'BEGIN {{ system(\"rm -rf {s}\") }}'", "sed -n '1e rm -rf {s}' /etc/hostname",
    "f() {{ rm -rf \"$1\"; }}; f {s}", "alias d='rm -rf'; d {s}", "trap 'rm -rf {s}' EXIT",
    "x=forb; touch /tmp/${{x}}idden", "cat <<EOF | bash\nrm -rf {s}\nEOF", "bash <(echo rm -rf {s})",
    "base64 -d <<< cm0gLXJm | bash -s {s}", "rm -fr {s}", "command rm -rf {s}", "builtin eval 'rm -rf {s}'",
    # found by an independent attack, where a reader that is not bash disagreed with bash
    "{{fd}}>/dev/null rm -rf {s}", "a[$(rm -rf {s})]=1", "read 'y[$(rm -rf {s})]' <<< 1",
    "echo $((echo hi); rm -rf {s})", "eval -- 'rm -rf {s}'", "bash -c -- 'rm -rf {s}'",
    "shopt -s expand_aliases\nBASH_ALIASES[q]=rm\nq -rf {s}", "bash /dev/stdin <<< 'rm -rf {s}'",
    "{{ sh; }} <<< 'rm -rf {s}'", "exec 3<<< 'rm -rf {s}'; sh <&3", "echo $(<$(rm -rf {s}))",
    "shopt -s xpg_echo; echo 'rm\\x20-rf {s}' | bash", "python3 -Ic 'import shutil; shutil.rmtree(\"{s}\")'",
    "awk 'BEGIN {{ c = \"rm -rf {s}\"; print \"\" | c }}'", "sed -n '$e rm -rf {s}' /etc/hostname",
    "setpriv rm -rf {s}", "ssh -o ProxyCommand='rm -rf {s}' nohost", "sqlite3 :memory: '.shell rm -rf {s}'",
    "cd /tmp && shopt -s extglob && touch ./-r\nrm @(-r) {s}",
]


@pytest.mark.parametrize("template", EXEC)
def test_exec_attempts(box: Sandbox, template: str) -> None:
    folder = sentinel()
    result = ssh(box, f"{LOGIN}@db-1", template.format(s=folder))
    assert result.returncode != 0, template
    assert b"bastion: denied by rule" in result.stderr, result.stderr
    assert (folder / "keep").exists(), template


# -- a shell without a terminal reads commands from stdin ---------------------------------------------

SCRIPTS = [
    ("", "rm -rf {s}\n"), ("", "echo ok\nrm -rf {s}\necho never\n"), ("", "x=rm\n$x -rf {s}\n"),
    ("", "cat <<EOF | bash\nrm -rf {s}\nEOF\n"), ("", "for d in {s}; do\n  rm -rf $d\ndone\n"),
    ("", "rm -rf \\\n  {s}\n"), ("", "rm -rf {s}"), ("", "echo 'a\nb'; rm -rf {s}\n"),
    ("bash -s", "rm -rf {s}\n"), ("sh", "true\nrm -rf {s}\n"), ("bash -", "eval 'rm -rf {s}'\n"),
    ("python3 -", "import shutil; shutil.rmtree('{s}')\n"), ("-T", "rm -rf {s}\n"),
    ("", "cat <<$'EOF'\nx\nEOF\nrm -rf {s}\n$EOF\n"), ("", "python3\nimport shutil; shutil.rmtree('{s}')\n"),
    ("", "ed\n!rm -rf {s}\nq\n"), ("bash /dev/stdin", "rm -rf {s}\n"), ("bash <&0", "rm -rf {s}\n"),
    ("ed", "!rm -rf {s}\nq\n"), ("zsh -f", "alias -g X=-rf\nrm X {s}\n"), ("zsh -f", "noglob rm -rf {s}\n"),
]


@pytest.mark.parametrize(("how", "script"), SCRIPTS)
def test_commands_on_stdin(box: Sandbox, how: str, script: str) -> None:
    folder = sentinel()
    args = ["-T", f"{LOGIN}@db-1"] if how == "-T" else [f"{LOGIN}@db-1", *([how] if how else [])]
    result = ssh(box, *args, stdin=script.format(s=folder).encode())
    assert result.returncode != 0, (how, script, result.stderr)
    assert b"bastion: denied by rule" in result.stderr, result.stderr
    assert (folder / "keep").exists(), (how, script)


def test_allowed_scripts_on_stdin_run_whole(box: Sandbox) -> None:
    out = Path(f"/tmp/script-{uuid.uuid4().hex[:8]}")
    script = (f"x=1\nfor i in a b; do\n  echo $i$x >> {out}\ndone\n"
              f"cat > {out}.txt <<'EOF'\nrm -rf / is only text here\nEOF\necho 'multi\nline' >> {out}\n")
    result = ssh(box, f"{LOGIN}@db-1", stdin=script.encode())
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "a1\nb1\nmulti\nline\n"
    assert Path(f"{out}.txt").read_text() == "rm -rf / is only text here\n"


# -- a terminal ------------------------------------------------------------------------------------------


class Terminal:
    """The real ssh client in tmux, talking to a shell through the bastion."""

    def __init__(self, box: Sandbox, *command: str, prompt: str = "byp> ") -> None:
        self.box, self.prompt, self.count = box, prompt, 0
        self.pane = TmuxPane(["ssh", "-F", str(box.directory / "ssh_config-alice"), "-J", "bastion", "-t",
                              f"{LOGIN}@db-1", *command])

    def start(self, setup: str = "") -> Terminal:
        self.run(f"PS1='by''p> '{'; ' + setup if setup else ''}")
        self.pane.wait_for("byp>")
        return self

    def run(self, line: str) -> None:
        """Type a line at the shell's prompt, once it is drawn: keys typed ahead of a shell
        without line editing are unsure (the screen cannot show what its line holds)."""
        self.pane.at_prompt()
        before = self.pane.line_number()
        self.pane.type(line)
        self.pane.send("Enter")
        # Until the line's echo comes back, the prompt it was typed at is still the cursor's row:
        # the next line would be typed ahead of the shell. (A full-screen program it starts
        # leaves the normal screen instead.)
        eventually(lambda: self.pane.line_number() > before or self.pane.alternate_screen(),
                   "the line's end on screen")

    def denials(self) -> int:
        return self.pane.screen().count("bastion: ")

    def attempt(self, *steps: tuple[str, str]) -> None:
        """Type and press keys, then wait for the bastion to say something (or end it)."""
        before = self.denials()
        for kind, value in steps:
            if kind == "type":
                self.pane.type(value)
            else:
                self.pane.send(value)
        try:
            eventually(lambda: self.denials() > before or self.pane.dead(), "the bastion's answer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; screen:\n{self.pane.screen()}") from None

    def usable(self) -> bool:
        """The shell runs the next line on its own: nothing left over runs with it."""
        if self.pane.dead():
            return False
        self.count += 1
        self.run(f"echo usable-$(({self.count}*1000))")
        self.pane.wait_for(f"usable-{self.count * 1000}")
        return True

    def close(self) -> None:
        self.pane.close()


@pytest.fixture
def terminal(box: Sandbox) -> Iterator[Terminal]:
    term = Terminal(box).start()
    yield term
    term.close()


TYPED = [
    [("type", "rm -rf {s}"), ("key", "Enter")],
    [("type", "r\\m -rf {s}"), ("key", "C-j")],
    [("type", "rm -rf {s}"), ("key", "C-m")],
    [("type", "rm -rf {s}"), ("key", "C-o")],
    [("type", "{{rm,-rf,{s}}}"), ("key", "Enter")],
    [("type", "echo rm -rf {s} | bash"), ("key", "Enter")],
    [("type", "rm -rf {s}"), ("key", "C-x"), ("key", "C-e")],  # edit-and-execute, even unchanged
    [("type", "touch /tmp/ok-{n} {s}"), ("key", "C-a"), ("key", "M-d"), ("type", "rm -rf"), ("key", "Enter")],
    [("type", "ls"), ("key", "C-u"), ("type", "rm -rf {s}"), ("key", "Enter")],
    [("type", "^ls^rm -rf {s}"), ("key", "Enter")],
    [("type", "!rm"), ("key", "Enter")],
    [("type", "fc -s"), ("key", "Enter")],
    [("type", "bind -x '\"\\C-t\": rm -rf {s}'"), ("key", "Enter")],
    [("type", "bind '\"\\C-t\": \"rm -rf {s}\\n\"'"), ("key", "Enter")],
    [("type", "PROMPT_COMMAND='rm -rf {s}'"), ("key", "Enter")],
    [("type", "PS1='$(rm -rf {s})> '"), ("key", "Enter")],
    [("type", "trap 'rm -rf {s}' DEBUG"), ("key", "Enter")],
    [("type", "rm -rf {s} &&"), ("key", "Enter"), ("type", "true"), ("key", "Enter")],
]


@pytest.mark.parametrize("steps", TYPED, ids=[" ".join(v for _, v in s)[:40] for s in TYPED])
def test_typed_at_a_bash_prompt(terminal: Terminal, steps: list[tuple[str, str]]) -> None:
    folder = sentinel()
    terminal.attempt(*[(k, v.format(s=folder, n=uuid.uuid4().hex[:6])) for k, v in steps])
    assert terminal.usable()
    assert (folder / "keep").exists()


def test_definitions_on_earlier_lines(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.run("r=rm; o=-rf; alias nuke=rm")  # harmless alone
    assert terminal.usable()
    for line in [f"$r $o {folder}", f"nuke -rf {folder}", f"x=$r; $x -rf {folder}", f"rm $o {folder}"]:
        terminal.attempt(("type", line), ("key", "Enter"))
        assert terminal.usable()
    assert (folder / "keep").exists()


def test_a_recalled_and_edited_line(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.run(f"echo rm -rf {folder}")
    assert terminal.usable()
    terminal.attempt(("key", "Up"), ("key", "Up"), ("key", "Home"), *[("key", "Delete")] * 5, ("key", "Enter"))
    assert terminal.usable()
    assert (folder / "keep").exists()


def test_keys_typed_ahead_while_a_command_runs(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.run("sleep 1.5")
    terminal.attempt(("type", f"rm -rf {folder}"), ("key", "Enter"))
    assert terminal.usable()
    assert (folder / "keep").exists()


def test_a_password_prompt_that_echoes_is_a_prompt(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.run("PS1='Password: '")
    terminal.pane.wait_for("Password: ")
    terminal.attempt(("type", f"rm -rf {folder}"), ("key", "Enter"))
    assert terminal.usable()
    assert (folder / "keep").exists()


def test_a_denied_line_is_gone_whatever_the_line_editor(terminal: Terminal) -> None:
    """The discard must not depend on emacs keys: vi mode, no kill character, Ctrl-U rebound."""
    folder = sentinel()
    terminal.run("set -o vi; stty kill undef; bind '\"\\C-u\": self-insert'")
    assert terminal.usable()
    terminal.attempt(("type", f"rm -rf {folder}"), ("key", "Enter"))
    terminal.run("true")  # the next Enter must not be what runs it
    assert terminal.usable()
    # vi's command mode: `v` edits the line in an editor and runs what comes back.
    terminal.run("export EDITOR=true VISUAL=true")
    assert terminal.usable()
    terminal.attempt(("type", f"echo {folder}"), ("key", "Escape"), ("type", "0cwrm -rf"), ("key", "Escape"),
                     ("type", "v"))
    assert terminal.usable()
    assert (folder / "keep").exists()


def test_a_denied_line_is_gone_when_vi_mode_still_reads_an_escape(terminal: Terminal) -> None:
    """Decided while readline waits to see whether Esc starts a longer key: the first Ctrl-C
    only ends that wait, and the line is still there."""
    folder = sentinel()
    terminal.run("set -o vi; export EDITOR=true VISUAL=true")
    assert terminal.usable()
    for _ in range(3):
        raw_attempt(terminal, f"rm -rf {folder}\x1bv".encode())
        assert terminal.usable()
    assert (folder / "keep").exists()


def test_an_interrupt_key_that_no_longer_interrupts_ends_the_session(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.run("stty -isig; bind '\"\\C-c\": accept-line'")
    assert terminal.usable()
    terminal.attempt(("type", f"rm -rf {folder}"), ("key", "Enter"))
    eventually(terminal.pane.dead, "the session ended")
    assert "cannot be cleared safely" in terminal.pane.screen()
    assert (folder / "keep").exists()


def test_an_interrupt_key_changed_in_a_subshell_ends_the_session_too(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.run("(stty -isig); bind '\"\\C-c\": accept-line'")
    assert terminal.usable()
    terminal.attempt(("type", f"rm -rf {folder}"), ("key", "Enter"))
    eventually(terminal.pane.dead, "the session ended")
    assert (folder / "keep").exists()


def test_a_shell_on_the_alternate_screen_is_screened(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.run("printf '\\033[?1049h'")
    eventually(terminal.pane.alternate_screen, "the alternate screen")
    terminal.attempt(("type", f"rm -rf {folder}"), ("key", "Enter"))
    assert terminal.usable()
    assert (folder / "keep").exists()


def test_several_lines_in_one_write(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.pane.paste(f"echo first-$((6*7))\nrm -rf {folder}\n", bracketed=False)
    eventually(lambda: terminal.denials() > 0, "the second line decided")
    assert "first-42" in terminal.pane.screen()  # the allowed line ran, in order
    assert "bastion: denied by rule 'no-recursive-rm'" in terminal.pane.screen()
    assert terminal.usable()
    terminal.pane.paste(f"echo pasted\nrm -rf {folder}\n")  # bracketed: runs at Enter
    terminal.attempt(("key", "Enter"))
    assert terminal.usable()
    assert (folder / "keep").exists()


@pytest.mark.parametrize("shell", ["zsh -f", "bash --norc", "sh"])
def test_nested_shells(box: Sandbox, shell: str) -> None:
    term = Terminal(box).start()
    try:
        folder = sentinel()
        term.run(shell)
        term.run("PS1='by''p> '")
        term.pane.wait_for("byp>")
        term.attempt(("type", f"rm -rf {folder}"), ("key", "Enter"))
        assert term.usable()
        if shell.startswith("zsh"):
            term.attempt(("type", f"print -z 'rm -rf {folder}'"), ("key", "Enter"))
            assert term.usable()
            term.attempt(("type", f"bindkey -s '^T' 'rm -rf {folder}^M'"), ("key", "Enter"))
            assert term.usable()
        assert (folder / "keep").exists()
    finally:
        term.close()


@pytest.mark.parametrize("command", ["bash", "sh -i", "zsh -f"])
def test_a_command_run_with_a_terminal_is_screened_like_a_shell(box: Sandbox, command: str) -> None:
    term = Terminal(box, command)
    try:
        folder = sentinel()
        term.start()
        term.attempt(("type", f"rm -rf {folder}"), ("key", "Enter"))
        assert term.usable()
        assert (folder / "keep").exists()
    finally:
        term.close()


def test_honest_interactive_work_is_not_unsure(box: Sandbox, terminal: Terminal) -> None:
    lines = ['echo "please do not rm -rf /"', "x=1; echo $x", "cd /tmp && cd -", "for i in 1 2; do echo $i; done",
             "ls /tmp | grep -c . | wc -l", "mkdir -p /tmp/honest-$$/{a,b} && rmdir /tmp/honest-$$/{a,b}"]
    for line in lines:
        terminal.run(line)
        assert terminal.usable()
    terminal.run('echo "multi')
    terminal.run('line"')
    assert terminal.usable()
    unsure = [e for e in box.events() if e["event"] == "command_decision" and e.get("unsure")]
    assert not [e for e in unsure if any(line in str(e["command"]) for line in lines)]


# -- found by an independent attacker ---------------------------------------------------------------


def raw_attempt(terminal: Terminal, data: bytes) -> None:
    before = terminal.denials()
    terminal.pane.send_raw(data)
    eventually(lambda: terminal.denials() > before or terminal.pane.dead(), "the bastion's answer")


def test_keys_after_a_submit_key_in_one_write_are_read_from_the_screen(terminal: Terminal) -> None:
    folder = sentinel()
    raw_attempt(terminal, f"-rf {folder}\x01rm \recho two\r".encode())  # Ctrl-A: `rm ` goes first
    assert terminal.usable()
    terminal.run(f"history -s 'rm -rf {folder}'; echo stored-$((2*3))")  # it replaces this line
    terminal.pane.wait_for("stored-6")
    raw_attempt(terminal, b"\x1b[A\r\r")  # Up recalls it, in the same write as Enter
    assert terminal.usable()
    assert (folder / "keep").exists()


def test_a_bracketed_paste_with_control_characters(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.pane.send_raw(f"\x1b[200~rm -rf {folder} #\x15\necho pasted\x1b[201~".encode())
    terminal.pane.wait_for("echo pasted")
    raw_attempt(terminal, b"\r")
    assert terminal.usable()
    assert (folder / "keep").exists()


@pytest.mark.parametrize("setup", ["stty -echoctl; exec sh", "set +o emacs +o vi; stty -echoctl"])
def test_backspace_is_a_character_in_cooked_mode(box: Sandbox, setup: str) -> None:
    term = Terminal(box).start()
    try:
        folder = sentinel()
        term.run(setup)
        term.run("PS1='by''p> '")
        assert term.usable()
        raw_attempt(term, f"echo {folder}\x08# ; rm -rf {folder}\r".encode())
        assert (folder / "keep").exists()
    finally:
        term.close()


def test_a_key_binding_planted_before_the_shell_started_and_keys_typed_ahead(box: Sandbox) -> None:
    """A readline macro the bastion never saw (an .inputrc under another HOME): the `k` key
    appends a command and a `#`, which looks like a prompt after the keys. Typed ahead of the
    shell, the keys come first on screen; the line is still not what they say."""
    term = Terminal(box).start()
    try:
        folder = sentinel()
        home = Path(f"/tmp/home-{uuid.uuid4().hex[:8]}")
        home.mkdir()
        (home / ".inputrc").write_text(f'"k": "K; rm -rf {folder} #"\n')
        term.run(f"HOME={home} bash --norc")
        term.run("PS1='by''p> '")
        assert term.usable()
        term.pane.send_raw(b"true\recho ok\r")  # the second line's keys reach bash before its prompt
        term.usable()
        assert (folder / "keep").exists(), term.pane.screen()
    finally:
        term.close()


@pytest.mark.parametrize("shell", ["", "exec sh"])
def test_a_shell_prompt_that_looks_like_a_password_prompt(box: Sandbox, shell: str) -> None:
    term = Terminal(box).start()
    try:
        folder = sentinel()
        if shell:
            term.run(shell)
            term.run("PS1='by''p> '")
            assert term.usable()
        term.run("set +o emacs +o vi 2>/dev/null; stty -echo; PS1='Password: '")
        term.pane.wait_for("Password: ")
        term.attempt(("type", f"rm -rf {folder}"), ("key", "Enter"))
        assert "bastion: denied by rule" in term.pane.screen()
        assert (folder / "keep").exists()
    finally:
        term.close()


def test_background_output_that_redraws_the_line(terminal: Terminal) -> None:
    folder = sentinel()
    # \\154 is an l: the screen shows "harmless" only once the job has drawn it.
    terminal.run("(sleep 2; printf '\\r\\033[Kbyp> echo harm\\154ess') &")
    terminal.pane.type(f"rm -rf {folder}")
    terminal.pane.send("Left")
    terminal.pane.send("Right")
    terminal.pane.wait_for("byp> echo harmless")
    terminal.attempt(("key", "Enter"))
    assert terminal.usable()
    assert (folder / "keep").exists()


def test_a_fake_prompt_after_a_denial_with_ctrl_c_trapped(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.run("trap '' INT")
    assert terminal.usable()
    terminal.run("(sleep 2; printf '\\r\\nbyp> ') &")
    terminal.attempt(("type", f"rm -rf {folder}"), ("key", "Enter"))
    eventually(terminal.pane.dead, "the session ended")
    assert "changed what Ctrl-C does" in terminal.pane.screen().replace("\n", "")
    assert (folder / "keep").exists()


def test_the_alternate_screen_after_a_full_screen_program_that_did_not_draw_it(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.run("git --version; printf '\\033[?1049h'")
    eventually(terminal.pane.alternate_screen, "the alternate screen")
    terminal.attempt(("type", f"rm -rf {folder}"), ("key", "Enter"))
    assert terminal.usable()
    assert (folder / "keep").exists()


VIM_ESCAPES = [
    [("type", ":sil !rm -rf {s}"), ("key", "Enter")],
    [("type", ":terminal rm -rf {s}"), ("key", "Enter")],
    [("type", ":call system('rm -rf {s}')"), ("key", "Enter")],
    [("type", ":!rm -rf {s}"), ("key", "C-j")],
    [("type", ":!rm -rf {s} #!"), ("key", "C-m")],
]


@pytest.mark.parametrize("steps", VIM_ESCAPES, ids=[" ".join(v for _, v in s)[:30] for s in VIM_ESCAPES])
def test_vim_shell_escapes(terminal: Terminal, steps: list[tuple[str, str]]) -> None:
    need("vim")
    folder = sentinel()
    terminal.run("vim -u NONE -N")
    eventually(terminal.pane.alternate_screen, "vim on the alternate screen")
    terminal.attempt(*[(k, v.format(s=folder)) for k, v in steps])
    terminal.pane.send("Escape")
    terminal.pane.type(":qa!")
    terminal.pane.send("Enter")
    eventually(lambda: not terminal.pane.alternate_screen(), f"back from vim: {terminal.pane.screen()}")
    assert terminal.usable()
    assert (folder / "keep").exists()


def test_a_key_rebound_to_edit_and_execute(terminal: Terminal) -> None:
    folder = sentinel()
    terminal.run("export EDITOR='sed -i s/^echo/rm/' VISUAL='sed -i s/^echo/rm/'")
    terminal.run("bind '\"\\C-g\": edit-and-execute-command'")
    assert terminal.usable()
    terminal.attempt(("type", f"echo -rf {folder}"), ("key", "C-g"))
    assert terminal.usable()
    assert (folder / "keep").exists()


def test_private_escape_sequences_do_not_end_the_session(terminal: Terminal) -> None:
    terminal.run("printf '\\033[>4;2m\\033[?4m\\033[?1A\\033[>4m'")
    assert terminal.usable()
