"""Split a shell command line into the simple commands it would run. Pure.

Not a shell: a tokenizer that knows enough of POSIX sh and bash to see every command a line
can start. It follows `;` `&&` `||` `|` `&` and newlines, `( )` and `{ }`, `$( )` and
backticks (their contents are commands too), `bash -c '...'` and friends, wrappers such as
`sudo -u x cmd`, `env X=1 cmd`, `nohup`, `time`, `exec`, `xargs`, leading `VAR=value`
assignments, quotes, backslashes and `$'...'`, and aliases defined earlier on the same line.
What it cannot follow (unbalanced quotes, `eval` of a variable) is reported as `unsure`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

OPERATORS = ("&&", "||", ";;", "|&", ";", "|", "&", "\n", "(", ")")
WRAPPERS = {"sudo", "doas", "env", "nohup", "time", "exec", "nice", "ionice", "timeout", "stdbuf",
            "xargs", "command", "builtin", "chroot", "setsid", "strace", "watch", "su"}
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"}
# Options of wrappers that take a value (so the value is not mistaken for the command).
WRAPPER_VALUE_OPTIONS = {
    "sudo": {"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T"},
    "doas": {"-u", "-C"},
    "env": {"-u", "-C", "-S"},
    "nice": {"-n"},
    "ionice": {"-c", "-n", "-p"},
    "timeout": {"-s", "-k"},
    "stdbuf": {"-i", "-o", "-e"},
    "xargs": {"-I", "-d", "-E", "-L", "-n", "-P", "-s", "-a"},
    "su": {"-c", "-s", "-g", "-G"},
    "watch": {"-n", "-d"},
    "chroot": {"--userspec", "--groups"},
}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_ANSI_C = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b",
           "f": "\f", "v": "\v", "\\": "\\", "'": "'", '"': '"'}


class ShellSyntaxError(ValueError):
    pass


@dataclass
class SimpleCommand:
    argv: list[str]

    @property
    def program(self) -> str:
        return os.path.basename(self.argv[0]) if self.argv else ""

    @property
    def text(self) -> str:
        """Normalised: quotes removed, one space between words."""
        return " ".join(self.argv)


@dataclass
class Split:
    commands: list[SimpleCommand] = field(default_factory=list)
    unsure: list[str] = field(default_factory=list)  # why the split may be incomplete


def _ansi_c(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ANSI_C:
                out.append(_ANSI_C[nxt])
                i += 2
                continue
            if nxt == "x":
                match = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
                if match:
                    out.append(chr(int(match.group(), 16)))
                    i += 2 + len(match.group())
                    continue
            if nxt in "01234567":
                match = re.match(r"[0-7]{1,3}", body[i + 1:])
                assert match is not None
                out.append(chr(int(match.group(), 8)))
                i += 1 + len(match.group())
                continue
        out.append(char)
        i += 1
    return "".join(out)


def _matching(text: str, start: int, open_char: str, close_char: str) -> int:
    """Index of the `close_char` matching the `open_char` before `start`, quotes respected."""
    depth, i = 1, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated single quote")
            i = end + 1
            continue
        if char == '"':
            i = _double_quote_end(text, i + 1) + 1
            continue
        if char == open_char:
            depth += 1
        elif char == close_char:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ShellSyntaxError(f"unbalanced {open_char}{close_char}")


def _double_quote_end(text: str, start: int) -> int:
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == '"':
            return i
        if text.startswith("$(", i):
            i = _matching(text, i + 2, "(", ")") + 1
            continue
        if char == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated backquote")
            i = end + 1
            continue
        i += 1
    raise ShellSyntaxError("unterminated double quote")


def tokenize(text: str, nested: list[str]) -> list[str | tuple[str]]:  # noqa: PLR0912, PLR0915 - one branch per piece of shell syntax
    """Words (str) and operators (1-tuples). Command substitutions go to `nested`."""
    tokens: list[str | tuple[str]] = []
    word: list[str] = []
    in_word = False
    i = 0

    def end_word() -> None:
        nonlocal in_word
        if in_word:
            tokens.append("".join(word))
            word.clear()
            in_word = False

    while i < len(text):
        char = text[i]
        if char in " \t":
            end_word()
            i += 1
        elif char == "#" and not in_word:
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif char == "\\":
            if text[i + 1:i + 2] == "\n":
                i += 2
                continue
            word.append(text[i + 1:i + 2])
            in_word = True
            i += 2
        elif char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated single quote")
            word.append(text[i + 1:end])
            in_word = True
            i = end + 1
        elif text.startswith("$'", i):
            j = i + 2
            while j < len(text) and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                raise ShellSyntaxError("unterminated $'...'")
            word.append(_ansi_c(text[i + 2:j]))
            in_word = True
            i = j + 1
        elif char == '"':
            end = _double_quote_end(text, i + 1)
            inner = text[i + 1:end]
            for match in re.finditer(r"\$\(", inner):
                close = _matching(inner, match.end(), "(", ")")
                nested.append(inner[match.end():close])
            nested.extend(re.findall(r"`([^`]*)`", inner))
            word.append(re.sub(r'\\([\\"$`])', r"\1", inner))
            in_word = True
            i = end + 1
        elif text.startswith("$((", i):
            close = _matching(text, i + 3, "(", ")")
            word.append(text[i:close + 2])
            in_word = True
            i = close + 2
        elif text.startswith("$(", i) or text.startswith("<(", i) or text.startswith(">(", i):
            close = _matching(text, i + 2, "(", ")")
            nested.append(text[i + 2:close])
            word.append(text[i:close + 1])
            in_word = True
            i = close + 1
        elif char == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated backquote")
            nested.append(text[i + 1:end])
            word.append(text[i:end + 1])
            in_word = True
            i = end + 1
        elif char in "{}" and not in_word and (i + 1 == len(text) or text[i + 1] in " \t\n;"):
            end_word()
            tokens.append((";",))
            i += 1
        elif char in "<>":
            end_word()
            # A redirection's target is a word, not a command: keep it out of argv.
            match = re.match(r"[0-9]*(?:>>|<<<|<<-?|<>|>&|<&|>\||[<>])", text[i:])
            i += match.end() if match else 1
            while i < len(text) and text[i] in " \t":
                i += 1
            tokens.append(("redirect",))
        else:
            op = next((o for o in OPERATORS if text.startswith(o, i)), None)
            if op is not None:
                end_word()
                tokens.append((op,))
                i += len(op)
            else:
                if char.isdigit() and not in_word and re.match(r"[0-9]+[<>]", text[i:]):
                    i += 1  # fd number of a redirection, e.g. 2>&1
                    continue
                word.append(char)
                in_word = True
                i += 1
    end_word()
    return tokens


def split_command(text: str, *, depth: int = 0) -> Split:
    """Every simple command `text` would run, nested ones included."""
    result = Split()
    if depth > 8:
        result.unsure.append("nesting too deep")
        return result
    nested: list[str] = []
    try:
        tokens = tokenize(text, nested)
    except ShellSyntaxError as exc:
        result.unsure.append(str(exc))
        # Still screen what can be seen: the words, split on whitespace and operators.
        rough = [w for w in re.split(r"[\s;&|()]+", text) if w]
        if rough:
            result.commands.append(SimpleCommand(rough))
        return result
    aliases: dict[str, list[str]] = {}
    current: list[str] = []
    skip_redirect_target = False

    def flush() -> None:
        if current:
            _emit(list(current), result, aliases, depth)
            current.clear()

    for token in tokens:
        if isinstance(token, tuple):
            if token[0] == "redirect":
                skip_redirect_target = True
                continue
            flush()
            continue
        if skip_redirect_target:
            skip_redirect_target = False
            continue
        current.append(token)
    flush()
    for inner in nested:
        sub = split_command(inner, depth=depth + 1)
        result.commands.extend(sub.commands)
        result.unsure.extend(sub.unsure)
    return result


def _emit(argv: list[str], result: Split, aliases: dict[str, list[str]], depth: int) -> None:  # noqa: PLR0912
    while argv and _ASSIGNMENT.match(argv[0]):
        argv = argv[1:]  # VAR=value cmd
    if not argv:
        return
    if argv[0] in aliases:
        argv = aliases[argv[0]] + argv[1:]
    if argv[0] == "alias":
        for definition in argv[1:]:
            name, sep, value = definition.partition("=")
            if sep:
                aliases[name] = value.split()
        result.commands.append(SimpleCommand(argv))
        return
    result.commands.append(SimpleCommand(argv))
    program = os.path.basename(argv[0])
    if program in SHELLS:
        script = _shell_script(argv)
        if script is not None:
            sub = split_command(script, depth=depth + 1)
            result.commands.extend(sub.commands)
            result.unsure.extend(sub.unsure)
        return
    if program == "eval":
        sub = split_command(" ".join(argv[1:]), depth=depth + 1)
        result.commands.extend(sub.commands)
        result.unsure.extend(sub.unsure)
        return
    if program in WRAPPERS:
        rest = _unwrap(program, argv[1:])
        if program == "su" and "-c" in argv:
            index = argv.index("-c")
            if index + 1 < len(argv):
                sub = split_command(argv[index + 1], depth=depth + 1)
                result.commands.extend(sub.commands)
                result.unsure.extend(sub.unsure)
            return
        if rest:
            _emit(rest, result, aliases, depth)


def _shell_script(argv: list[str]) -> str | None:
    for index, arg in enumerate(argv[1:], 1):
        if arg == "-c" or (arg.startswith("-") and not arg.startswith("--") and "c" in arg[1:]):
            return argv[index + 1] if index + 1 < len(argv) else ""
    return None


def _unwrap(program: str, args: list[str]) -> list[str]:
    """The command a wrapper runs: skip its options (and their values) and assignments."""
    takes_value = WRAPPER_VALUE_OPTIONS.get(program, set())
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args[i + 1:]
        if program == "env" and _ASSIGNMENT.match(arg):
            i += 1
            continue
        if program == "timeout" and not arg.startswith("-") and re.fullmatch(r"[0-9.]+[smhd]?", arg):
            i += 1
            continue
        if program in ("nice", "ionice") and re.fullmatch(r"-[0-9]+", arg):
            i += 1
            continue
        if arg.startswith("-"):
            if arg in takes_value or (len(arg) == 2 and arg in takes_value):
                i += 2
            else:
                i += 1
            continue
        return args[i:]
    return []
