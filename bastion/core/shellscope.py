"""What a shell line would run, given what earlier lines of the session defined. Pure.

`analyze(text, scope)` returns every simple command the line can start -- nested ones,
the ones wrappers and shells run, the bodies of functions and aliases it calls -- with their
words expanded as far as the bastion knows, and the reasons it is unsure of anything else.
`Scope` is the per-session table (variables, aliases, functions, key and terminal state) a
line that ran leaves behind: `Analysis.scope`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from bastion.core.shellexpand import (
    Found,
    Value,
    Variables,
    ansi_c,
    collect_substitutions,
    expand_word,
    identifiers,
)
from bastion.core.shellsplit import Command, Parsed, Redirect, parse, rough_commands
from bastion.core.shellwords import Hole, HoleKind, Word
from bastion.core.wrappers import CONTAINER_EXEC, WRAPPERS, Wrapper, unwrap

MAX_DEPTH = 8
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh", "rbash", "fish"})
# Interpreters whose program text the bastion cannot screen, and their options carrying it.
INTERPRETERS: dict[str, frozenset[str]] = {
    **{name: frozenset({"-c"}) for name in ("python", "python2", "python3", "pypy", "pypy3")},
    "perl": frozenset({"-e", "-E"}), "ruby": frozenset({"-e"}),
    "node": frozenset({"-e", "-p", "--eval", "--print"}),
    "nodejs": frozenset({"-e", "-p", "--eval", "--print"}),
    "php": frozenset({"-r"}), "lua": frozenset({"-e"}),
    "Rscript": frozenset({"-e"}), "tclsh": frozenset(), "irb": frozenset(), "osascript": frozenset({"-e"}),
    "gdb": frozenset({"-ex", "--eval-command"}), "expect": frozenset({"-c"}),
}
_INTERPRETER_VALUES = frozenset({"-m", "-W", "-X", "-I", "-M", "-r", "-x"})  # options with a value
# Programs whose text output is text anyway: what `echo x | bash` feeds the shell.
_PRINTERS = frozenset({"echo", "printf"})
_QUERY_STTY = frozenset({"-a", "--all", "-g", "--save", "size", "speed"})
_PROMPTS = re.compile(r"PS[0-4]\Z")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\[[^\]]*\])?(\+?)=(.*)\Z", re.S)
_HISTORY = re.compile(r"!(?![\s=(\"]|$)")
_SUBSCRIPT_SUBSTITUTION = re.compile(r"\[[^\]]*(?:\$\(|`)")
# Variables the shell itself reads as commands or as files of commands.
_RUNS_VALUE = frozenset({"PROMPT_COMMAND", "BASH_ENV", "ENV", "BASH_ALIASES", "BASH_CMDS", "PS0", "PS1",
                         "PS2", "PS3", "PS4", "INPUTRC", "BASH_LOADABLES_PATH", "PROMPT_COMMANDS"})


@dataclass
class Scope:
    """A session's shell, as far as the lines it ran tell."""

    variables: dict[str, Value] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    functions: dict[str, list[Command]] = field(default_factory=dict)
    ifs_changed: bool = False
    history_expansion: bool = True  # interactive bash and zsh expand `!`
    vi_mode: bool = False
    keys_changed: str = ""  # bind/bindkey ran: keys may not do what they do by default
    tty_changed: str = ""  # stty ran: Ctrl-C may not interrupt any more
    interrupt_trapped: str = ""  # `trap ... INT`: Ctrl-C may not drop the line any more
    echo_off: str = ""  # `stty -echo` (or raw): a line that does not echo need not be a password

    def copy(self) -> Scope:
        return replace(self, variables=dict(self.variables), aliases=dict(self.aliases),
                       functions=dict(self.functions))


@dataclass(frozen=True)
class SimpleCommand:
    """One command the line can run, its words expanded as far as known."""

    argv: tuple[Word, ...]

    @property
    def program(self) -> str:
        """The program's name, or "" when it comes from an expansion."""
        first = self.argv[0] if self.argv else Word.of("")
        return os.path.basename(first.value) if first.literal else ""

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.argv)

    @property
    def args(self) -> tuple[Word, ...]:
        return self.argv[1:]


@dataclass
class Analysis:
    commands: list[SimpleCommand] = field(default_factory=list)
    unsure: list[str] = field(default_factory=list)
    incomplete: str = ""  # the shell waits for more lines before it runs anything
    until: str = ""  # ... up to this line, when a here-document is open
    scope: Scope = field(default_factory=Scope)
    stdin: str = ""  # "shell" or "code": what the session's own input feeds (exec sessions)
    programs: set[str] = field(default_factory=set)  # programs started directly (full-screen check)

    def note(self, why: str) -> None:
        if why not in self.unsure:
            self.unsure.append(why)


MAX_TEXT = 1024 * 1024  # longer text is not read whole: its cost would hold up every session


def analyze(text: str, scope: Scope | None = None, *, interactive: bool = False) -> Analysis:
    """Everything `text` would run, in a shell that ran the lines `scope` came from."""
    analysis = Analysis(scope=(scope or Scope()).copy())
    if len(text) > MAX_TEXT:
        analysis.note(f"a command of {len(text) // 1024} KiB is longer than the {MAX_TEXT // 1024} KiB read")
        for rough in rough_commands(text[:MAX_TEXT]):
            analysis.commands.append(SimpleCommand(tuple(Word.of(w) for w in rough.words)))
        return analysis
    if interactive and analysis.scope.history_expansion:
        history = history_expansion(text)
        if history:
            analysis.note(f"history expansion ({history}) re-runs a line the bastion cannot see")
    parsed = parse(text)
    analysis.incomplete, analysis.until = parsed.incomplete, parsed.until
    for error in parsed.errors:
        analysis.note(f"the line does not parse ({error})")
    _Walker(analysis, top=True, interactive=interactive).run(parsed, 0)
    return analysis


def history_expansion(text: str) -> str:
    """The history expansion in a line, if any: `!!`, `!rm`, `!$`, `^old^new`."""
    if text.lstrip().startswith("^"):
        return text.strip()[:20]
    quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "'" and not quoted:
            end = text.find("'", i + 1)
            i = len(text) if end < 0 else end + 1
            continue
        if char == '"':
            quoted = not quoted
        elif char == "!" and _HISTORY.match(text, i) and not text.endswith("${", 0, i):
            return text[i:i + 8].split(maxsplit=1)[0]
        i += 1
    return ""


class _Walker:
    def __init__(self, analysis: Analysis, *, top: bool, interactive: bool = False) -> None:
        self.a = analysis
        self.top = top
        self.interactive = interactive  # input comes from the user's terminal, screened line by line
        self._calls: list[str] = []  # functions and aliases being expanded (recursion guard)

    @property
    def scope(self) -> Scope:
        return self.a.scope

    def variables(self) -> Variables:
        return Variables(self.scope.variables, ifs_changed=self.scope.ifs_changed)

    # -- lines and nested text -------------------------------------------------------------

    def run(self, parsed: Parsed, depth: int) -> None:
        for name in parsed.functions:
            self.scope.functions[name] = [c for c in parsed.commands if c.function == name]
            self.scope.aliases.pop(name, None)
        for command in parsed.commands:
            self.command(command, depth)

    def text(self, text: str, depth: int, *, what: str, subshell: bool = True) -> None:
        """Shell text that will run (`bash -c`, `eval`, a trap, a here-document fed to sh)."""
        if depth >= MAX_DEPTH:
            self.a.note(f"{what} nests too deep")
            return
        parsed = parse(text)
        if parsed.incomplete:
            self.a.note(f"{what} is not complete ({parsed.incomplete})")
        for error in parsed.errors:
            self.a.note(f"{what} does not parse ({error})")
        saved = self.scope.copy() if subshell else None
        was_top, self.top = self.top, False
        self.run(parsed, depth + 1)
        self.top = was_top
        if saved is not None:
            # What a child shell defines does not outlive it; what it ran was screened. The
            # terminal it changed is the session's own, though: `(stty -isig)` lasts.
            saved.tty_changed = self.scope.tty_changed or saved.tty_changed
            saved.echo_off = self.scope.echo_off or saved.echo_off
            self.a.scope = saved

    def nested(self, found: Found, depth: int) -> None:
        for why in found.unsure:
            self.a.note(why)
        for inner in found.nested:
            self.text(inner, depth, what="a command substitution")
        for expression in found.arithmetic:
            self.arithmetic(expression)
        found.nested.clear()
        found.arithmetic.clear()
        found.unsure.clear()

    def arithmetic(self, expression: str, depth: int = 0) -> None:
        found = Found()
        collect_substitutions(expression, found)  # let 'x=a[$(cmd)]': the command runs
        for inner in found.nested:
            self.text(inner, depth, what="a command substitution in arithmetic")
        # bash evaluates a variable's value as an expression: x='a[$(cmd)]'; $((x)) runs cmd.
        for name in identifiers(expression):
            value = self.scope.variables.get(name, ())
            if value is None or any(not w.literal or re.search(r"[$`\[]", w.value) for w in value):
                self.a.note(f"arithmetic on ${name}, whose value the bastion does not know, can run commands")

    def words(self, sources: list[str], depth: int, *, split: bool = True) -> list[list[Word]]:
        """Each alternative expansion of a list of words."""
        found = Found()
        alternatives: list[list[Word]] = [[]]
        variables = self.variables()
        for source in sources:
            ways = expand_word(source, variables, found, split=split)
            if len(alternatives) == 1 and len(ways) == 1:
                alternatives[0].extend(ways[0])  # the usual case, without copying the words so far
                continue
            product = [a + w for a in alternatives for w in ways]
            alternatives = product if len(product) <= 32 else [a + ways[0] for a in alternatives]
        self.nested(found, depth)
        return alternatives

    # -- one parsed command -----------------------------------------------------------------

    def command(self, command: Command, depth: int) -> None:
        if command.special:
            self.special(command, depth)
            return
        for assignment in command.assignments:
            self.assign(assignment, depth, persist=not command.words)
        for redirect in command.redirects:
            if redirect.op not in ("<<", "<<-"):
                self.words([redirect.target], depth, split=False)
            elif not redirect.quoted and redirect.body and re.search(r"[$`]", redirect.body):
                found = Found()  # an unquoted here-document's $(...) run as it is read
                collect_substitutions(redirect.body, found)
                self.nested(found, depth)
        if not command.words:
            return
        for argv in self.words(command.words, depth):
            if argv:
                self.simple(argv, command, depth)

    def special(self, command: Command, depth: int) -> None:
        if command.special == "for":
            name, values = command.words[0], command.words[1:]
            expanded = self.words(values, depth)
            alternatives = tuple(w for argv in expanded for w in argv)
            self.set(name, alternatives if alternatives and len(alternatives) <= 32 else None)
        elif command.special == "((":
            expression = command.words[0][2:-2]
            self.arithmetic(expression)
            found = Found()
            expand_word(f'"$(({expression}))"', self.variables(), found)
            self.nested(found, depth)
            for match in re.finditer(r"([A-Za-z_]\w*)\s*(?:[-+*/%&|^]|<<|>>)?=(?!=)", expression):
                self.set(match.group(1), None)
        else:
            for argv in self.words(command.words, depth, split=False):
                for word in argv:
                    if word.literal and _SUBSCRIPT_SUBSTITUTION.search(word.value):
                        self.arithmetic(word.value, depth)  # [[ -v 'a[$(cmd)]' ]]
            if command.special == "[[" and any(op in command.words for op in
                                               ("-eq", "-ne", "-lt", "-le", "-gt", "-ge")):
                for source in command.words:
                    variable = re.fullmatch(r'"?\$\{?([A-Za-z_]\w*)\}?"?', source)
                    if variable:
                        self.arithmetic(variable.group(1))

    def set(self, name: str, value: Value) -> None:
        self.scope.variables[name] = value
        if name == "IFS":
            self.scope.ifs_changed = True
        if name in _RUNS_VALUE and (value is None or any(not w.literal for w in value)):
            self.a.note(f"{name} is set to a value the bastion does not know, and the shell runs it")

    def assign(self, assignment: str, depth: int, *, persist: bool) -> None:
        match = _ASSIGNMENT.match(assignment)
        if match is None:
            return
        name, index, append, source = match.groups()
        if index:
            self.arithmetic(index[1:-1], depth)  # a[$(cmd)]=1 runs cmd
        if name in ("BASH_ALIASES", "BASH_CMDS", "BASH_ENV", "ENV"):
            self.a.note(f"{name} makes later commands run what it names")
        if source.startswith("(") and source.endswith(")"):
            words = parse(source[1:-1]).commands
            self.words([w for c in words for w in c.words], depth)
            value: Value = None
        else:
            ways = self.words([source], depth, split=False)
            value = tuple(argv[0] for argv in ways if argv) or (Word.of(""),)
            if append or index:
                value = None
        self.special_variable(name, source, depth)
        if persist:
            self.set(name, value)

    def special_variable(self, name: str, source: str, depth: int) -> None:
        """Variables whose value the shell itself runs or reads later."""
        literal = _literal_text(source)
        if name == "PROMPT_COMMAND":
            if literal is None:
                self.a.note("PROMPT_COMMAND set from an expansion")
            else:
                self.text(literal, depth, what="PROMPT_COMMAND")
        elif _PROMPTS.match(name):
            # A prompt is expanded at every prompt: $(...) in it runs each time.
            found = Found()
            expand_word('"' + (literal or source).replace('"', '\\"') + '"', self.variables(), found)
            self.nested(found, depth)
        elif name in ("BASH_ENV", "ENV", "PROMPT_COMMANDS", "INPUTRC"):
            self.scope.keys_changed = self.scope.keys_changed or (f"{name} set" if name == "INPUTRC" else "")

    # -- what a simple command runs -----------------------------------------------------------

    def simple(self, argv: list[Word], command: Command, depth: int) -> None:  # noqa: PLR0912 - one per kind
        self.a.commands.append(SimpleCommand(tuple(argv)))
        for word in argv:
            # A name with an index, given to a builtin (read, printf -v, declare, test -v, [[ -v):
            # bash evaluates the index, and a $(...) in it runs.
            if word.literal and _SUBSCRIPT_SUBSTITUTION.search(word.value):
                self.arithmetic(word.value, depth)
        first = argv[0]
        if not first.literal:
            self.a.note(f"the command name comes from an expansion ({first.text})")
            return
        name, program = first.value, os.path.basename(first.value)
        if self.top and depth == 0:
            self.a.programs.add(program)
        if name in self.scope.aliases and name not in self._calls:
            # Screened both ways: the shell that runs it may or may not have the alias (and an
            # alias ending in a space makes the next word one too: both are tried).
            rest = " ".join(_quote(w) if w.literal else w.text for w in argv[1:])
            self._calls.append(name)
            self.text(self.scope.aliases[name] + " " + rest, depth, what=f"the alias {name}", subshell=False)
            self._calls.pop()
        if name in self.scope.functions and name not in self._calls:
            self._calls.append(name)
            for inner in self.scope.functions[name]:
                self.command(replace(inner, function=None), depth + 1)
            self._calls.pop()
        handler = _BUILTINS.get(program)
        if handler is not None:
            handler(self, argv, command, depth)
        elif program in WRAPPERS:
            self.wrapper(program, argv, command, depth)
        elif (program, argv[1].value if len(argv) > 1 else "") in CONTAINER_EXEC:
            wrapper = CONTAINER_EXEC[(program, argv[1].value)]
            self.follow(wrapper, f"{program} exec", argv[1:], command, depth)
        elif program in SHELLS:
            self.shell(argv, command, depth)
        elif _interpreter(program) in INTERPRETERS:
            self.interpreter(_interpreter(program), argv, command, depth)
        elif program in CONSOLES:
            self.console(program, argv, command, depth)
        if program in _RUNS_OPTIONS:
            _RUNS_OPTIONS[program](self, argv)

    def wrapper(self, program: str, argv: list[Word], command: Command, depth: int) -> None:
        self.follow(WRAPPERS[program], program, argv, command, depth)

    def follow(self, wrapper: Wrapper, program: str, argv: list[Word], command: Command,  # noqa: PLR0911
               depth: int) -> None:
        args = list(argv[1:])
        result = unwrap(wrapper, [w.text for w in args], [w.literal for w in args])
        if result.unknown:
            self.a.note(f"{program}: {result.unknown}")
            return
        if result.attached_shell is not None or result.shell is not None:
            word = (Word.of(result.attached_shell) if result.attached_shell is not None
                    else args[result.shell or 0])
            self.shell_text(word, depth, what=f"{program}'s command")
            return
        if result.attached_split is not None or result.split is not None:
            word = (Word.of(result.attached_split) if result.attached_split is not None
                    else args[result.split or 0])
            if not word.literal:
                self.a.note(f"{program} -S from an expansion")
                return
            rest = " ".join(_quote(w) for w in (args[i] for i in result.command))
            self.text(word.value + " " + rest, depth, what=f"{program} -S", subshell=False)
            return
        inner = [args[i] for i in result.command]
        if result.bare:
            self.reads_input("shell", command, depth, what=program)
            return
        if not inner:
            return
        if result.joined:
            self.shell_text(Word(tuple(p for w in _spaced(inner) for p in w.parts)), depth,
                            what=f"{program}'s command")
            return
        if program == "xargs":
            inner = _xargs(args, inner, command)
        self.simple(inner, command, depth)

    def shell_text(self, word: Word, depth: int, *, what: str) -> None:
        if not word.literal:
            self.a.note(f"{what} comes from an expansion ({word.text})")
            return
        self.text(word.value, depth, what=what)

    def shell(self, argv: list[Word], command: Command, depth: int) -> None:  # noqa: PLR0912 - its options
        """`bash -c TEXT`, `bash script`, or a shell reading its input."""
        args = argv[1:]
        i, reads_stdin = 0, False
        while i < len(args):
            word = args[i]
            value = word.value if word.literal else ""
            if not word.literal:
                if i == 0 or args[i - 1].text.startswith("-"):
                    self.a.note(f"a shell option or script from an expansion ({word.text})")
                return
            if value in {"--", "-"}:
                i += 1
                if value == "-":
                    reads_stdin = True
                break
            if value in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
                i += 2
                continue
            if value.startswith(("-", "+")) and len(value) > 1 and not value.startswith("--"):
                letters = value[1:]
                if "c" in letters:
                    rest = list(args[i + 1:])
                    while rest and rest[0].literal and rest[0].value == "--":
                        rest = rest[1:]
                    if not rest:
                        self.a.note("a shell's -c without its text")
                        return
                    self.shell_text(rest[0], depth, what=f"{argv[0].value} -c")
                    return
                if "s" in letters:
                    reads_stdin = True
                i += 1
                continue
            if value.startswith("--"):
                i += 1
                continue
            break
        if i < len(args) and not reads_stdin and not _is_stdin(args[i]):
            return  # a script file: run like any program (its content is not visible here)
        self.reads_input("shell", command, depth, what=argv[0].value)

    def interpreter(self, program: str, argv: list[Word], command: Command, depth: int) -> None:
        code_options = INTERPRETERS[program]
        args = argv[1:]
        i = 0
        while i < len(args):
            word = args[i]
            if not word.literal:
                self.a.note(f"{program}: an argument from an expansion ({word.text})")
                return
            value = word.value
            letters = {o[1] for o in code_options if len(o) == 2}
            if value in code_options or (value.startswith("-") and not value.startswith("--")
                                         and letters & set(value[1:].split("=")[0])):
                self.a.note(f"{program} runs code given inline ({value}): the bastion cannot screen it")
                return
            if value == "-" or _is_stdin(word):
                break
            if value in _INTERPRETER_VALUES:
                if value == "-m":
                    return  # a module: runs like a program
                i += 2
                continue
            if value.startswith("-"):
                i += 1
                continue
            return  # a script file
        self.reads_input("code", command, depth, what=program)

    def console(self, program: str, argv: list[Word], command: Command, depth: int) -> None:
        """Programs that read commands from their input, some of which run shell commands
        (ed's `!`, sqlite3's `.shell`, psql's `\\!`): unless told what to run, they read input."""
        values = [w.text for w in argv[1:]]
        if any(v.startswith(CONSOLE_COMMAND_OPTIONS) for v in values):
            if any(re.search(r"(^|[\s;])(\.shell|\.system|\\!|!)", v) for v in values):
                self.a.note(f"{program} is given a command that runs a shell")
            return
        if program == "sqlite3" and len([v for v in values if not v.startswith("-")]) > 1:
            if any(re.search(r"\.shell|\.system", v) for v in values):
                self.a.note("sqlite3 is given a command that runs a shell")
            return
        self.reads_input("console", command, depth, what=program)

    def reads_input(self, kind: str, command: Command, depth: int, *, what: str) -> None:
        """A shell or interpreter reads commands from its standard input: whose?"""
        if command.compound and not any(r.op in _STDIN_REDIRECTS for r in command.redirects):
            # `{ sh; } <<< text`, `(sh) < file`: the group's redirection feeds it
            self.a.note(f"{what} reads input that a compound command may redirect")
            return
        stdin = [r for r in command.redirects if r.op in _STDIN_REDIRECTS][-1:]
        if stdin and _session_input(stdin[0]):
            stdin = []  # the session's own input, by another name (<&0, < /dev/stdin)
        if stdin:
            self.program_text(kind, self.redirected(stdin[0], depth, what=what), depth, what=what)
        elif command.pipe_from is not None:
            self.program_text(kind, self.printed(command.pipe_from, depth), depth, what=what)
        elif self.top and depth == 0:
            self.a.stdin = self.a.stdin or kind
            if kind == "code" or (kind == "console" and not self.interactive):
                self.a.note(f"{what} reads a program from its input, which the bastion cannot screen")
        elif depth > 0 and not self.top:
            self.a.note(f"{what} reads commands from input the bastion cannot see")

    def redirected(self, source: Redirect, depth: int, *, what: str) -> str | None:
        """The text a redirection feeds, when the bastion can know it."""
        if source.op in ("<<", "<<-"):
            if not source.quoted and re.search(r"[$`]", source.body or ""):
                return None  # expanded as it is read
            return source.body or ""
        if source.op == "<<<":
            ways = self.words([source.target], depth, split=False)
            word = ways[0][0] if ways and ways[0] else Word.of("")
            return word.value if word.literal else None
        if source.op == "<" and not _special_input(source.target):
            return ""  # a file: run like a script (its content is not visible here)
        return None

    def printed(self, producer: Command, depth: int) -> str | None:  # noqa: PLR0911 - one per printer
        """What `echo ... |` or `printf ... |` writes, when it is literal text."""
        if producer.special or not producer.words:
            return None
        ways = self.words(producer.words, depth)
        if len(ways) != 1 or not all(w.literal for w in ways[0]):
            return None
        argv = [w.value for w in ways[0]]
        program = os.path.basename(argv[0])
        if program == "echo":
            args = argv[1:]
            escapes = False
            while args and re.fullmatch(r"-[neE]+", args[0]):
                escapes = escapes or "e" in args[0]
                args = args[1:]
            out = " ".join(args)
            if "\\" in out and not escapes:
                return None  # shells differ: dash's echo and xpg_echo decode \\ escapes, bash's does not
            return ansi_c(out) if escapes else out
        if program == "cat" and len(argv) == 1:
            docs = [r for r in producer.redirects if r.op in ("<<", "<<-")]
            if docs and (docs[-1].quoted or not re.search(r"[$`\\]", docs[-1].body or "")):
                return docs[-1].body or ""
            return None
        if program == "printf" and len(argv) == 2 and "%" not in argv[1]:
            return ansi_c(argv[1])
        return None

    def program_text(self, kind: str, text: str | None, depth: int, *, what: str) -> None:
        if text == "":
            return
        if kind == "shell" and text is not None:
            self.text(text, depth, what=f"input read by {what}")
        elif kind == "console" and text is not None:
            if _CONSOLE_ESCAPE.search(text):
                self.a.note(f"{what} is given a command that runs a shell")
        elif kind == "shell":
            self.a.note(f"{what} reads commands the bastion cannot see (another program's output)")
        else:
            self.a.note(f"{what} reads a program the bastion cannot screen")


# -- builtins that run text later or change what later lines mean ------------------------------

_STDIN_REDIRECTS = ("<", "<<", "<<-", "<<<", "<>", "<&")
# Programs that read commands from their input when not given one on the command line.
CONSOLES = frozenset({"ed", "red", "ex", "sqlite3", "psql", "mysql", "mariadb", "gdb", "dc", "ftp", "lftp"})
# How those consoles run a shell command: ed's !, psql's \!, mysql's system, sqlite3's .shell
_CONSOLE_ESCAPE = re.compile(r"(?im)^\s*!|\\!|\\system|^\s*system\s|\.shell|\.system|^\s*shell\b|^\s*e\s")
CONSOLE_COMMAND_OPTIONS = ("-c", "--command", "-e", "--execute", "-f", "--file", "-x", "-ex")


def _interpreter(program: str) -> str:
    """python3.11 is python3, perl5.36 is perl."""
    match = re.fullmatch(r"(python[23]?|pypy3?|perl|ruby|node|php|lua)[0-9.]*", program)
    return match.group(1) if match else program


_STDIN_PATH = re.compile(r"-|/dev/stdin|/dev/fd/\d+|/proc/(self|\d+)/fd/\d+")


def _is_stdin(word: Word) -> bool:
    return word.literal and bool(_STDIN_PATH.fullmatch(word.value))


def _session_input(redirect: Redirect) -> bool:
    return (redirect.op == "<&" and redirect.target == "0") or (
        redirect.op == "<" and redirect.target in ("/dev/stdin", "/proc/self/fd/0", "/dev/fd/0"))


def _special_input(target: str) -> bool:
    return bool(re.fullmatch(r"/dev/stdin|/dev/fd/\d+|/proc/(self|\d+)/fd/\d+|<\(.*\)|\$.*", target, re.S))

def _literal_text(source: str) -> str | None:
    ways = expand_word(source, Variables({}, ifs_changed=False), Found(), split=False)
    if len(ways) == 1 and len(ways[0]) == 1 and ways[0][0].literal:
        return ways[0][0].value
    return None


def _quote(word: Word) -> str:
    return "'" + word.text.replace("'", "'\\''") + "'"


def _spaced(words: list[Word]) -> list[Word]:
    out: list[Word] = []
    for index, word in enumerate(words):
        if index:
            out.append(Word.of(" "))
        out.append(word)
    return out


def _values(argv: list[Word]) -> list[str]:
    return [w.value if w.literal else "\0" for w in argv]


def _xargs(args: list[Word], inner: list[Word], command: Command) -> list[Word]:
    """The command xargs runs, its input items as holes (narrowed when `find DIR` makes them)."""
    pattern = "*"
    producer = command.pipe_from
    null = any(a.text in ("-0", "--null") for a in args)  # else xargs splits names at blanks
    null = null and producer is not None and "-print0" in producer.words
    if null and producer is not None and producer.words[:1] == ["find"] and len(producer.words) > 1:
        roots = [w for w in producer.words[1:] if not w.startswith(("-", "(", "!"))][:1]
        if roots and re.fullmatch(r"[\w./~-]+", roots[0]) and not roots[0].startswith("-"):
            pattern = roots[0].rstrip("/") + "*" if roots[0] != "." else "./*"
    item = Hole(HoleKind.VALUE, "(xargs input)", pattern)
    texts = [a.text for a in args]
    replace_with = next((texts[i + 1] for i, t in enumerate(texts[:-1]) if t in ("-I", "--replace")), None)
    replace_with = replace_with or next((t[2:] or "{}" for t in texts if t.startswith(("-i", "-I"))), None)
    if replace_with:
        return [Word(tuple(p for piece in _split_on(w, replace_with, item) for p in piece.parts))
                if replace_with in w.text else w for w in inner]
    return [*inner, Word((item,))]


def _split_on(word: Word, marker: str, hole: Hole) -> list[Word]:
    pieces = word.text.split(marker)
    out: list[Word] = []
    for index, piece in enumerate(pieces):
        if index:
            out.append(Word((hole,)))
        out.append(Word.of(piece))
    return out


def _eval(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    args = argv[2:] if len(argv) > 1 and argv[1].literal and argv[1].value == "--" else argv[1:]
    if not all(w.literal for w in args):
        walker.a.note("eval of text that comes from an expansion")
        return
    walker.text(" ".join(w.value for w in args), depth, what="eval", subshell=False)


def _source(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    if len(argv) > 1 and argv[1].holes and argv[1].holes[0].pattern == "/dev/fd/*":
        walker.a.note(f"{argv[0].value} reads commands from a process substitution")
    elif len(argv) > 1 and _is_stdin(argv[1]):
        walker.reads_input("shell", command, depth, what=argv[0].value)
    # What a sourced file defines is not visible here, as a script's content is not.


def _alias(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    if any(w.literal and re.fullmatch(r"-[a-zA-Z]*[gs][a-zA-Z]*", w.value) for w in argv[1:]):
        walker.a.note("a zsh global or suffix alias can turn any word into a command")
    for word in argv[1:]:
        if not word.literal:
            walker.a.note(f"an alias defined from an expansion ({word.text})")
            continue
        name, eq, value = word.value.partition("=")
        if eq:
            walker.scope.aliases[name] = value
            walker._calls.append(name)  # an alias is not expanded inside itself
            walker.text(value, depth, what=f"the alias {name}", subshell=False)
            walker._calls.pop()


def _unalias(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    if "-a" in values:
        walker.scope.aliases.clear()
    for name in values:
        walker.scope.aliases.pop(name, None)


def _unset(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    functions = "-f" in values
    for name in values:
        if name.startswith("-"):
            continue
        if functions:
            walker.scope.functions.pop(name, None)
        else:
            walker.scope.variables[name] = (Word.of(""),)


def _declare(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    options = [w.value for w in argv[1:] if w.literal and w.value.startswith(("-", "+"))]
    if argv[0].value != "export" and any("n" in o for o in options if o.startswith("-")):
        walker.a.note("a name reference (declare -n) makes one variable another")
    for index, word in enumerate(argv[1:], 1):
        source = command.words[index] if index < len(command.words) else word.text
        if word.literal and word.value.startswith(("-", "+")):
            continue
        if _ASSIGNMENT.match(source) and "$" not in source.split("=", 1)[0]:
            walker.assign(source, depth, persist=True)
        elif word.literal and "=" in word.value:
            name, _, value = word.value.partition("=")
            walker.set(name, (Word.of(value),))
            walker.special_variable(name, _quote(Word.of(value)), depth)
        if any("i" in o for o in options if o.startswith("-")) and "=" in source:
            walker.arithmetic(source.split("=", 1)[1], depth)  # declare -i: the value is arithmetic


def _read(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    with_value = {"-a", "-d", "-i", "-n", "-N", "-p", "-t", "-u"}
    names, i = [], 0
    while i < len(values):
        if values[i] in with_value:
            if values[i] == "-a" and i + 1 < len(values):
                names.append(values[i + 1])
            i += 2
            continue
        if not values[i].startswith("-"):
            names.append(values[i])
        i += 1
    for name in names or ["REPLY"]:
        walker.set(name, None)


def _assigns_last(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    """mapfile/readarray ARRAY, getopts OPTSTRING NAME: the last word is set to anything."""
    values = _values(argv[1:])
    names = [v for v in values if re.fullmatch(r"[A-Za-z_]\w*", v)]
    walker.set(names[-1] if names else "MAPFILE", None)


def _printf(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv)
    if "-v" in values:
        index = values.index("-v")
        if index + 1 < len(values):
            walker.set(values[index + 1], None)


def _let(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    for word in argv[1:]:
        walker.arithmetic(word.text)
        match = re.match(r"([A-Za-z_]\w*)", word.text)
        if match and "=" in word.text:
            walker.set(match.group(1), None)


_INTERRUPT_SIGNALS = frozenset({"INT", "SIGINT", "2", "int", "sigint"})


def _trap(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    args = [w for w in argv[1:] if not (w.literal and w.value in ("-p", "-l", "--"))]
    if not args or (args[0].literal and args[0].value == "-"):
        return
    if any(not w.literal or w.value in _INTERRUPT_SIGNALS for w in args[1:]):
        walker.scope.interrupt_trapped = "trap " + " ".join(w.text for w in args)[:60]
    if not (args[0].literal and args[0].value == ""):
        walker.shell_text(args[0], depth, what="a trap's command")


def _bind(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    queries = {"-l", "-p", "-P", "-s", "-S", "-v", "-V", "-X"}
    if values and all(v in queries or v.startswith("-q") for v in values):
        return
    walker.scope.keys_changed = "bind " + " ".join(values)[:60]
    for index, value in enumerate(values):
        if value == "\0":
            walker.a.note("a key binding from an expansion")
        elif value in ("-x", "-f"):
            continue
        elif ":" in value:
            action = value.split(":", 1)[1].strip()
            previous = values[index - 1] if index else ""
            if previous == "-x" or action.startswith(('"', "'")):
                # A command bound to a key, or a macro that types text: it can run later.
                walker.text(action.strip("\"'").replace("\\n", "\n").replace("\\C-m", "\n")
                            .replace("\\r", "\n"), depth, what="a key binding", subshell=False)


def _bindkey(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    if values[:1] == ["-v"]:
        walker.scope.vi_mode = True
    elif values[:1] == ["-e"]:
        walker.scope.vi_mode = False
    elif (values and not all(v in ("-l", "-L", "-M") or v.startswith("-") for v in values[:1])) or \
            "-s" in values:
        walker.scope.keys_changed = "bindkey " + " ".join(values)[:60]
        if "-s" in values and len(values) > values.index("-s") + 2:
            walker.text(values[values.index("-s") + 2].replace("^M", "\n"), depth, what="a key binding",
                        subshell=False)


def _zle(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    if values and all(v in ("-l", "-L", "-la", "-lL") for v in values):
        return
    # A widget defined or replaced (zle -N self-insert, zle-line-init) runs on keys that look
    # plain, and can change the line without a key binding.
    walker.scope.keys_changed = "zle " + " ".join(values)[:60]


def _set_builtin(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    for index, value in enumerate(values):
        following = values[index + 1] if index + 1 < len(values) else ""
        if value == "-o" and following == "vi":
            walker.scope.vi_mode = True
        elif value == "-o" and following == "emacs":
            walker.scope.vi_mode = False
        elif value in ("+H", "+o") and (value == "+H" or following == "histexpand"):
            walker.scope.history_expansion = False
        elif value in ("-H",) or (value == "-o" and following == "histexpand"):
            walker.scope.history_expansion = True


_STTY_INTERRUPT = frozenset({"intr", "-isig", "raw", "-cooked"})  # what stops Ctrl-C interrupting
_STTY_RESTORE = frozenset({"sane", "isig", "cooked", "-raw"})


def _stty(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    saved_state = re.compile(r"[0-9a-f]+(:[0-9a-f]+){3,}")  # stty -g's output, given back
    said = "stty " + " ".join(v if v != "\0" else "$..." for v in values)[:60]
    if any(v == "\0" or v in _STTY_INTERRUPT or saved_state.fullmatch(v) for v in values):
        walker.scope.tty_changed = said
    elif values and all(v in _STTY_RESTORE for v in values if v not in _QUERY_STTY) and \
            any(v in _STTY_RESTORE for v in values):
        walker.scope.tty_changed = ""
    if any(v in ("-echo", "raw", "-cooked", "\0") or saved_state.fullmatch(v) for v in values):
        walker.scope.echo_off = said
    elif any(v in ("echo", "sane") for v in values):
        walker.scope.echo_off = ""


def _fc(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    if argv[0].value == "r" or not any(v.startswith("-") and "l" in v for v in values):
        walker.a.note("fc re-runs or edits earlier lines, which the bastion cannot see")


def _complete(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    if "-C" in values and values.index("-C") + 1 < len(argv) - 1:
        walker.shell_text(argv[values.index("-C") + 2], depth, what="a completion command")


def _print(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    if any(v.startswith("-") and "z" in v for v in values):
        # zsh: print -z puts text on the next line's edit buffer.
        words = [w for w in argv[1:] if not (w.literal and w.value.startswith("-"))]
        walker.shell_text(Word(tuple(p for w in _spaced(words) for p in w.parts)), depth,
                          what="print -z's text")


def _hash(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = _values(argv[1:])
    if "-p" in values:
        index = values.index("-p")
        if index + 2 < len(values):
            walker.scope.aliases[values[index + 2]] = _quote(Word.of(values[index + 1]))


def _find(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    values = [w.text for w in argv]
    for index, value in enumerate(values):
        if value in ("-exec", "-execdir", "-ok", "-okdir"):
            end = next((j for j in range(index + 1, len(values)) if values[j] in (";", "+")), len(values))
            inner = [Word((Hole(HoleKind.VALUE, "{}"),)) if w.text == "{}" else w
                     for w in argv[index + 1:end]]
            if inner:
                walker.simple(inner, command, depth)


def _sed(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    scripts, i, args = [], 1, argv
    while i < len(args):
        text = args[i].text
        if text in ("-e", "--expression", "-f", "--file") and i + 1 < len(args):
            scripts.append(args[i + 1].text)
            i += 2
            continue
        if text.startswith("--expression="):
            scripts.append(text.split("=", 1)[1])
        elif text.startswith("-e") and len(text) > 2:
            scripts.append(text[2:])
        elif not text.startswith("-") and not scripts:
            scripts.append(text)
        i += 1
    address = r"(?:\d+|\$|/(?:\\.|[^/])*/|\\(.)(?:(?!\1).)*\1)?(?:\s*,\s*(?:\d+|\$|/(?:\\.|[^/])*/))?"
    command_e = re.compile(r"(?:^|[;\n{}])\s*" + address + r"\s*!?\s*e(?:\s|;|$)")
    for script in scripts:
        substitute = re.finditer(r"s([^\w\s\\])(?:(?!\1)[^\\]|\\.)*\1(?:(?!\1)[^\\]|\\.)*\1([a-zA-Z0-9]*)",
                                 script)
        if command_e.search(script) or any("e" in m.group(2) for m in substitute):
            walker.a.note("sed's e command runs shell commands")
            return


def _awk(walker: _Walker, argv: list[Word], command: Command, depth: int) -> None:
    for word in argv[1:]:
        program = re.sub(r"/(?:\\.|[^/\\\n])*/", "//", word.text)  # regex literals may hold |
        if re.search(r"\bsystem\s*\(|\bgetline\b|\|&?\s*[\w\"$(]|[\w\")]\s*\|", program):
            walker.a.note("awk runs shell commands (system, pipes)")
            return


def _git(walker: _Walker, argv: list[Word]) -> None:
    """git's own options (before the subcommand) can name programs it runs."""
    for index, word in enumerate(argv[1:], 1):
        if not word.text.startswith("-"):
            return
        value = argv[index + 1].text if index + 1 < len(argv) else ""
        if word.text in ("-c", "--config-env") and re.search(
                r"(?i)(pager|editor|sshcommand|fsmonitor|hookspath|askpass|proxy|^alias\.|\.command|textconv)",
                value):
            walker.a.note(f"git -c {value.split('=')[0]} names a program git runs")
        if re.match(r"--(upload-pack|receive-pack|exec)\b", word.text):
            walker.a.note(f"git {word.text} names a program git runs")


_TMUX_RUNS = frozenset({"send-keys", "send", "run-shell", "run", "if-shell", "if", "pipe-pane", "pipep",
                        "respawn-pane", "respawnp", "respawn-window", "respawnw", "source-file", "source"})
_TMUX_NEW = frozenset({"new", "new-session", "neww", "new-window", "splitw", "split-window"})
_TMUX_VALUES = frozenset({"-s", "-n", "-t", "-c", "-x", "-y", "-e", "-F", "-f", "-l", "-L", "-S", "-A"})


def _tmux(walker: _Walker, argv: list[Word]) -> None:
    words = [w.text for w in argv[1:]]
    if any(w in _TMUX_RUNS for w in words) or any(not w.literal for w in argv[1:]):
        walker.a.note("tmux is told to run or type a command")
        return
    if any(w in _TMUX_NEW for w in words) and len(words) > 1:
        last, before = words[-1], words[-2]
        if not last.startswith("-") and before not in _TMUX_VALUES and last not in _TMUX_NEW:
            walker.a.note("tmux is told to run a command in a new window")


def _runs_when(pattern: str, what: str) -> Callable[[_Walker, list[Word]], None]:
    """A program whose options (matched by `pattern`) make it run a command."""
    regex = re.compile(pattern)

    def check(walker: _Walker, argv: list[Word]) -> None:
        if any((not w.literal and w.text.startswith("-")) or regex.search(w.text) for w in argv[1:]):
            walker.a.note(f"{argv[0].value}: {what}")

    return check


_RUNS_OPTIONS: dict[str, Callable[[_Walker, list[Word]], None]] = {
    "tar": _runs_when(r"^--(to-command|checkpoint-action|use-compress-program|rsh-command|info-script|"
                      r"new-volume-script|index-file)|^-[A-Za-z]*[IF]", "an option that runs a command"),
    "ssh": _runs_when(r"(?i)(proxycommand|localcommand|permitlocalcommand|knownhostscommand|"
                      r"match\s+exec|remotecommand)", "an option that runs a local command"),
    "scp": _runs_when(r"(?i)(proxycommand|localcommand|^-S)", "an option that runs a local command"),
    "sftp": _runs_when(r"(?i)(proxycommand|localcommand|^-S|^-D|^-b)", "an option that runs a command"),
    "rsync": _runs_when(r"^(-e|--rsh|--rsync-path)(?!=?ssh$)|^-[A-Za-z]*e$", "an option that runs a command"),
    "git": _git,
    "zip": _runs_when(r"^(-TT|--unzip-command)", "an option that runs a command"),
    **{name: _runs_when(r"^([-+]c|--cmd|-[A-Za-z]*[esS]$|\+)|^-S", "commands given to the editor")
       for name in ("vim", "vi", "nvim", "ex", "view", "vimdiff", "rvim")},
    "tmux": _tmux,
    "screen": _runs_when(r"^-X$|^-[A-Za-z]*X", "a command sent to a session"),
    "less": _runs_when(r"^--?(lesskey|LESSOPEN)|^\+.*[!|]", "a command given to the pager"),
    "man": _runs_when(r"^(-P|--pager|-H|--html)", "a pager command"),
}


_BUILTINS: dict[str, Callable[[_Walker, list[Word], Command, int], None]] = {
    "eval": _eval, "source": _source, ".": _source, "alias": _alias, "unalias": _unalias,
    "unset": _unset, "export": _declare, "declare": _declare, "typeset": _declare, "local": _declare,
    "readonly": _declare, "read": _read, "mapfile": _assigns_last, "readarray": _assigns_last,
    "getopts": _assigns_last, "printf": _printf, "let": _let, "trap": _trap, "bind": _bind,
    "bindkey": _bindkey, "zle": _zle,
    "set": _set_builtin, "stty": _stty, "fc": _fc, "r": _fc, "complete": _complete,
    "compgen": _complete, "print": _print, "hash": _hash, "find": _find, "sed": _sed, "awk": _awk,
    "gawk": _awk, "mawk": _awk, "nawk": _awk,
}
