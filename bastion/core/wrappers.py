"""Programs that run another command, and the option grammar of each. Pure.

`sudo -u postgres psql`, `timeout -s KILL 5 rm x`, `env -S 'rm -rf x'`: to screen the command a
wrapper runs, its options must be skipped exactly, values included. An option not in a
wrapper's grammar could take a value and hide the real command, so it makes the line unsure.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Wrapper:
    flags: str = ""  # short options without a value
    values: str = ""  # short options that take one (attached `-uroot` or next word)
    long_flags: frozenset[str] = frozenset()
    long_values: frozenset[str] = frozenset()  # --name=value or --name value
    script: str = ""  # short option whose value is shell text (`su -c`, `flock -c`)
    long_script: frozenset[str] = frozenset()
    positionals: int = 0  # words before the command (timeout's duration, taskset's mask)
    join: bool = False  # the command words are joined and run by `sh -c` (watch, ssh)
    split: str = ""  # option whose value is split into the command's words (env -S)
    optional: bool = True  # may run no command at all
    bare_shell: bool = False  # run without a command, it starts a shell reading its input
    stops: frozenset[str] = frozenset()  # options after which nothing is run (`sudo -l`)
    assignments: bool = False  # NAME=value words come before the command (env, sudo)


def _set(*names: str) -> frozenset[str]:
    return frozenset(names)


WRAPPERS: dict[str, Wrapper] = {
    "sudo": Wrapper(flags="AbEeHiKklnPSsVvBN", values="ugCDhprtUTR",
                    long_flags=_set("--askpass", "--background", "--preserve-env", "--edit", "--set-home",
                                    "--login", "--remove-timestamp", "--reset-timestamp", "--list",
                                    "--non-interactive", "--preserve-groups", "--stdin", "--shell",
                                    "--version", "--validate", "--bell"),
                    long_values=_set("--user", "--group", "--close-from", "--chdir", "--host", "--prompt",
                                     "--role", "--type", "--other-user", "--command-timeout", "--chroot"),
                    bare_shell=True, stops=_set("-l", "-e", "-v", "-k", "-K", "-V", "--list", "--edit"),
                    assignments=True),
    "doas": Wrapper(flags="nsL", values="uC", bare_shell=True, stops=_set("-C")),
    "su": Wrapper(flags="lmpfP", values="sgGw", script="c",
                  long_script=_set("--command", "--session-command"),
                  long_flags=_set("--login", "--preserve-environment", "--pty", "--fast"),
                  long_values=_set("--shell", "--group", "--supp-group", "--whitelist-environment"),
                  positionals=1, bare_shell=True),
    "runuser": Wrapper(flags="lmpfP", values="sgGwu", script="c",
                       long_script=_set("--command", "--session-command"),
                       long_flags=_set("--login", "--preserve-environment", "--pty", "--fast"),
                       long_values=_set("--shell", "--group", "--supp-group", "--whitelist-environment",
                                        "--user"),
                       positionals=1, bare_shell=True),
    "env": Wrapper(flags="i0v", values="uC", split="S", assignments=True,
                   long_flags=_set("--ignore-environment", "--null", "--debug", "--list-signal-handling"),
                   long_values=_set("--unset", "--chdir", "--ignore-signal", "--default-signal",
                                    "--block-signal")),
    "nice": Wrapper(values="n", long_values=_set("--adjustment")),
    "ionice": Wrapper(flags="tu", values="cnP", long_values=_set("--class", "--classdata"),
                      stops=_set("-p", "--pid", "-P", "--pgid", "-u", "--uid")),
    "timeout": Wrapper(flags="v", values="sk",
                       long_flags=_set("--foreground", "--preserve-status", "--verbose"),
                       long_values=_set("--signal", "--kill-after"), positionals=1, optional=False),
    "stdbuf": Wrapper(values="ioe", long_values=_set("--input", "--output", "--error"), optional=False),
    "nohup": Wrapper(optional=False),
    "time": Wrapper(flags="pavq", values="fo", long_flags=_set("--append", "--verbose", "--portability",
                                                                "--quiet"),
                    long_values=_set("--format", "--output")),
    "command": Wrapper(flags="pvV"),
    "builtin": Wrapper(),
    "exec": Wrapper(flags="cl", values="a"),
    "setsid": Wrapper(flags="cfw", long_flags=_set("--ctty", "--fork", "--wait")),
    "chroot": Wrapper(long_flags=_set("--skip-chdir"), long_values=_set("--userspec", "--groups"),
                      positionals=1, bare_shell=True),
    "taskset": Wrapper(flags="ac", long_flags=_set("--all-tasks", "--cpu-list"), positionals=1,
                       stops=_set("-p", "--pid")),
    "flock": Wrapper(flags="sxunoF", values="wE", script="c", long_script=_set("--command"),
                     long_flags=_set("--shared", "--exclusive", "--unlock", "--nonblock", "--close",
                                     "--no-fork", "--verbose"),
                     long_values=_set("--timeout", "--conflict-exit-code"), positionals=1),
    "script": Wrapper(flags="aefqk", values="TBIOmEt", script="c", long_script=_set("--command"),
                      long_flags=_set("--append", "--return", "--flush", "--quiet", "--force"),
                      long_values=_set("--timing", "--log-in", "--log-out", "--log-io", "--logging-format",
                                       "--echo", "--output-limit"),
                      positionals=-1, bare_shell=True),
    "watch": Wrapper(flags="bcCdegtwxprq", values="n",
                     long_flags=_set("--beep", "--color", "--no-color", "--differences", "--errexit",
                                     "--chgexit", "--no-title", "--no-wrap", "--exec", "--precise",
                                     "--no-rerun"),
                     long_values=_set("--interval", "--equexit"), join=True, optional=False),
    "xargs": Wrapper(flags="0rtpxeil", values="adEILnPs",
                     long_flags=_set("--null", "--no-run-if-empty", "--verbose", "--interactive", "--exit",
                                     "--open-tty"),
                     long_values=_set("--arg-file", "--delimiter", "--max-lines", "--max-args",
                                      "--max-procs", "--max-chars", "--replace", "--eof",
                                      "--process-slot-var")),
    "strace": Wrapper(flags="cdDfFhiqrtTvVwxyzZkCY", values="abeEIoOpPsSuUX", optional=False),
    "ltrace": Wrapper(flags="bcCfhiLrStTV", values="aADeEFlnopsuwx", optional=False),
    "ssh": Wrapper(flags="46AaCfGgKkMNnqsTtVvXxYy", values="BbcDEeFIiJLlmOopQRSWw", positionals=1,
                   join=True, bare_shell=True, stops=_set("-N", "-V", "-G", "-O", "-Q")),
    "sg": Wrapper(positionals=1, join=True, script="c", bare_shell=True),
    "chrt": Wrapper(flags="abdefiorRv", values="TPD", positionals=1,
                    stops=_set("-p", "--pid", "-m", "--max")),
    "unbuffer": Wrapper(flags="p", optional=False),
    "busybox": Wrapper(),
    "noglob": Wrapper(optional=False),  # zsh precommand modifiers
    "nocorrect": Wrapper(optional=False),
    "setpriv": Wrapper(flags="d", values="",
                       long_flags=_set("--clear-groups", "--keep-groups", "--init-groups", "--no-new-privs",
                                       "--reset-env", "--dump"),
                       long_values=_set("--reuid", "--regid", "--groups", "--inh-caps", "--ambient-caps",
                                        "--bounding-set", "--securebits", "--pdeathsig", "--selinux-label",
                                        "--apparmor-profile", "--landlock-access", "--landlock-rule"),
                       optional=False),
    "prlimit": Wrapper(flags="", values="po",
                       long_flags=_set("--noheadings", "--raw", "--verbose"),
                       long_values=_set("--pid", "--output", "--as", "--core", "--cpu", "--data", "--fsize",
                                        "--locks", "--memlock", "--msgqueue", "--nice", "--nofile", "--nproc",
                                        "--rss", "--rtprio", "--rttime", "--sigpending", "--stack")),
    "nsenter": Wrapper(flags="aFZmuinpUCTr", values="tSGw",
                       long_flags=_set("--all", "--no-fork", "--preserve-credentials", "--follow-context"),
                       long_values=_set("--target", "--setuid", "--setgid", "--root", "--wd", "--mount",
                                        "--uts", "--ipc", "--net", "--pid", "--user", "--cgroup", "--time"),
                       bare_shell=True),
    "unshare": Wrapper(flags="muinpUCTfrc",
                       long_flags=_set("--fork", "--map-root-user", "--map-current-user", "--mount-proc",
                                       "--mount", "--uts", "--ipc", "--net", "--pid", "--user", "--cgroup",
                                       "--time", "--kill-child"),
                       long_values=_set("--propagation", "--setgroups", "--root", "--wd", "--setuid",
                                        "--setgid"),
                       bare_shell=True),
}

# `docker exec CONTAINER cmd`, `kubectl exec POD -- cmd`: the command runs elsewhere, but it
# is still what the user asked for: it is screened like any other.
CONTAINER_EXEC: dict[tuple[str, str], Wrapper] = {
    ("docker", "exec"): Wrapper(flags="dit", values="euw",
                                long_flags=_set("--detach", "--interactive", "--privileged", "--tty"),
                                long_values=_set("--env", "--env-file", "--user", "--workdir",
                                                 "--detach-keys"),
                                positionals=1, optional=False),
    ("kubectl", "exec"): Wrapper(flags="itq", values="cnf",
                                 long_flags=_set("--stdin", "--tty", "--quiet"),
                                 long_values=_set("--container", "--namespace", "--filename",
                                                  "--pod-running-timeout", "--context", "--kubeconfig"),
                                 positionals=1, optional=False),
}


@dataclass
class Unwrapped:
    """What a wrapper runs: a command's words, shell text, or nothing; or why it cannot tell."""

    command: list[int] = field(default_factory=list)  # indexes of the words that form the command
    shell: int | None = None  # index of a word that is shell text (`-c TEXT`)
    split: int | None = None  # index of a word split into the command's first words (env -S)
    joined: bool = False  # the command's words are joined into shell text
    attached_shell: str | None = None  # `-cTEXT`: the text after the option letter
    attached_split: str | None = None
    bare: bool = False  # no command: a shell reading input (sudo -i, su -, ssh host)
    unknown: str = ""  # an option this grammar does not know


def unwrap(wrapper: Wrapper, args: list[str], literal: list[bool]) -> Unwrapped:  # noqa: PLR0912 - one branch per kind of word
    """Walk a wrapper's arguments (`args[0]` is the first after the wrapper's name)."""
    out = Unwrapped()
    positionals = wrapper.positionals
    i = 0
    while i < len(args):
        arg = args[i]
        if not literal[i] and arg.startswith("-"):
            out.unknown = f"an option built from an expansion ({arg})"
            return out
        if arg == "--":
            i += 1
            break
        if arg == "-":  # su -, sg -: a login shell
            i += 1
            continue
        if arg in wrapper.stops:
            return out
        if arg.startswith("-") and len(arg) > 1:
            if arg.startswith("--"):
                after = _long_option(wrapper, args, i, out)
            elif arg[1:].isdigit() and "n" in wrapper.values:
                after = i + 1  # nice -5
            else:
                after = _short_options(wrapper, args, i, out)
            if after is None:
                return out
            i = after
            continue
        if positionals == -1:  # script [file]: no command but through -c
            i += 1
            continue
        if "=" in arg and arg.split("=", 1)[0].isidentifier() and wrapper.assignments:
            i += 1  # env NAME=value, sudo NAME=value
            continue
        if positionals > 0:
            positionals -= 1
            i += 1
            continue
        break
    out.command = list(range(i, len(args)))
    if wrapper.join:
        out.joined = True
    if not out.command:
        out.bare = wrapper.bare_shell
    return out


def _long_option(wrapper: Wrapper, args: list[str], i: int, out: Unwrapped) -> int | None:
    """Where the words after `args[i]`, a long option, go on; None when the walk ends at it
    (`out` then says what runs, or why that is unknown)."""
    name, eq, value = args[i].partition("=")
    if name in wrapper.long_script:
        out.shell = None if eq else i + 1
        out.attached_shell = value if eq else None
        if not eq and i + 1 >= len(args):
            out.unknown = f"{name} without its value"
        return None
    if name in wrapper.long_values:
        return i + (1 if eq else 2)
    if name in wrapper.long_flags or (name == "--preserve-env" and eq):
        return i + 1
    out.unknown = f"an option this bastion does not know ({name})"
    return None


def _short_options(wrapper: Wrapper, args: list[str], i: int, out: Unwrapped) -> int | None:
    """As `_long_option`, for `args[i]`, one or more short options in one word (`-iu root`)."""
    arg = args[i]
    for j in range(1, len(arg)):
        letter, rest = arg[j], arg[j + 1:]
        if letter == wrapper.script and wrapper.script:
            if rest:
                out.attached_shell = rest
            elif i + 1 < len(args):
                out.shell = i + 1
            else:
                out.unknown = f"-{letter} without its value"
            return None
        if letter == wrapper.split and wrapper.split:
            if rest:
                out.attached_split = rest
                out.command = list(range(i + 1, len(args)))
            else:
                out.split = i + 1
                out.command = list(range(i + 2, len(args)))
            return None
        if letter in wrapper.values:
            return i + 1 if rest else i + 2  # the value is attached, or the next word
        if letter not in wrapper.flags:
            out.unknown = f"an option this bastion does not know (-{letter})"
            return None
    return i + 1
