"""Read a shell command line into the simple commands it would run. Pure.

Not a shell: a lexer and parser that know enough of POSIX sh and bash to see every command a
line can start, and to say where they cannot. They follow `;` `&&` `||` `|` `&` and newlines,
`( )` `{ }`, `if`/`while`/`until`/`for`/`select`/`case` and function definitions, `[[ ]]` and
`(( ))`, here-documents and here-strings, quotes, backslashes, `$'...'`, and keep every word's
source (its expansions are resolved later, by `bastion.core.shellscope`). A line that is not finished
yet (an open quote, a here-document without its end, `for ...; do` without `done`) is
`incomplete`; a line bash would reject is reported in `errors`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Longest first: the lexer takes the first that matches.
OPERATORS = (";;&", ";;", ";&", "&&", "||", "|&", "&>>", "&>", "<<<", "<<-", "<<", "<>", "<&", ">&",
             ">>", ">|", "<", ">", ";", "&", "|", "(", ")")
REDIRECTIONS = frozenset({"&>>", "&>", "<<<", "<<-", "<<", "<>", "<&", ">&", ">>", ">|", "<", ">"})
SEPARATORS = frozenset({";", "&", "\n"})
_OPERATOR = re.compile("|".join(re.escape(op) for op in OPERATORS))
_FD = re.compile(r"(?:[0-9]+|\{[A-Za-z_][A-Za-z0-9_]*\})(?=[<>])")
CONNECTORS = frozenset({"&&", "||", "|", "|&"})
CASE_ENDS = frozenset({";;", ";&", ";;&"})
_META = frozenset(" \t\n;&|()<>")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?\+?=")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Reserved words that, in command position, only start or continue a compound command.
_OPENERS = {"if": "fi", "while": "done", "until": "done", "case": "esac", "for": "done",
            "select": "done", "{": "}", "(": ")"}
_CONTINUATIONS = frozenset({"then", "else", "elif", "do", "!", "time", "coproc"})
_CLOSERS = frozenset({"fi", "done", "esac", "}"})
MAX_NESTING = 64
MAX_TOKENS = 4096


class Incomplete(Exception):
    """The text ends inside a construct: the shell would ask for more (PS2)."""

    def __init__(self, why: str, *, until: str = "") -> None:
        super().__init__(why)
        self.until = until  # a here-document's delimiter: nothing before it can complete the text


class Malformed(Exception):
    """The shell would refuse this text."""


@dataclass
class Redirect:
    op: str
    target: str = ""  # the word's source; for here-documents, the delimiter
    body: str | None = None  # here-document text (a here-string's is `target`)
    quoted: bool = False  # a quoted here-document delimiter: the body is not expanded


@dataclass
class Command:
    """One simple command as written: its words' source, nothing expanded yet."""

    words: list[str] = field(default_factory=list)
    assignments: list[str] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)
    pipe_from: Command | None = None  # the command whose output this one reads
    function: str | None = None  # the body of a function being defined, not run now
    special: str = ""  # "for" (words: name, values...), "case" (words: the subject), "[[", "(("
    compound: bool = False  # inside { }, ( ), a loop or a condition: its input may be redirected


@dataclass
class Parsed:
    commands: list[Command] = field(default_factory=list)
    incomplete: str = ""  # why the shell would wait for more
    until: str = ""  # ... when it is a here-document: the line that ends it
    errors: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)  # names defined on this line


class Lexer:
    """Words (their source text) and operators, with here-document bodies attached."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self._heredocs: list[Redirect] = []
        self._last: tuple[str, str | Redirect] | None = None

    def tokens(self) -> list[tuple[str, str | Redirect]]:
        """("word", source) | ("op", operator) | ("redirect", Redirect)."""
        out: list[tuple[str, str | Redirect]] = []
        pending: Redirect | None = None  # a redirection waiting for its target word
        while True:
            token = self._next()
            if token is None:
                break
            if len(out) >= MAX_TOKENS:
                raise Malformed(f"more than {MAX_TOKENS} words and operators")  # cost bounded per line
            self._last = token
            kind, value = token
            if pending is not None:
                if kind != "word":
                    raise Malformed(f"a redirection {pending.op!r} without a target")
                assert isinstance(value, str)
                pending.target = value
                if pending.op in ("<<", "<<-"):
                    pending.quoted = any(q in value for q in "'\"\\")
                    self._heredocs.append(pending)
                pending = None
                continue
            if kind == "op" and value in REDIRECTIONS:
                pending = Redirect(str(value))
                out.append(("redirect", pending))
                continue
            out.append(token)
            if kind == "op" and value == "\n":
                self._read_heredocs()
        if pending is not None:
            raise Incomplete(f"a redirection {pending.op!r} without a target")
        if self._heredocs:
            self._read_heredocs()
        return out

    def _read_heredocs(self) -> None:
        for doc in self._heredocs:
            delimiter = heredoc_delimiter(doc.target)
            lines = []
            while True:
                if self.i >= len(self.text):
                    raise Incomplete(f"a here-document without its end ({delimiter})", until=delimiter)
                end = self.text.find("\n", self.i)
                line = self.text[self.i:] if end < 0 else self.text[self.i:end]
                self.i = len(self.text) if end < 0 else end + 1
                if (line.lstrip("\t") if doc.op == "<<-" else line) == delimiter:
                    break
                lines.append(line)
            doc.body = "\n".join(lines) + "\n" if lines else ""
        self._heredocs.clear()

    def _next(self) -> tuple[str, str | Redirect] | None:
        text = self.text
        while self.i < len(text):
            char = text[self.i]
            if char in " \t":
                self.i += 1
            elif text.startswith("\\\n", self.i):
                self.i += 2
            elif char == "#":
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
            else:
                break
        if self.i >= len(text):
            return None
        char = text[self.i]
        if char == "\n":
            self.i += 1
            return ("op", "\n")
        if text.startswith(("<(", ">("), self.i):
            return ("word", self._word())
        if text.startswith("((", self.i) and (self._last is None or self._last[0] != "word"
                                               or self._last[1] == "for"):
            close = find_close(text, self.i + 2, "(", ")", depth=2)
            if text[close - 1] == ")":  # (( arithmetic )) in command position, as bash reads it first
                start, self.i = self.i, close + 1
                return ("word", text[start:self.i])
            # else `((cmd); cmd)`: nested subshells, read as operators
        fd = _FD.match(text, self.i)
        if fd:
            self.i = fd.end()  # the descriptor of a redirection (2>&1): not a word
        op = _OPERATOR.match(text, self.i)
        if op:
            self.i = op.end()
            return ("op", op.group())
        return ("word", self._word())

    def _word(self) -> str:
        text, start = self.text, self.i
        while self.i < len(text):
            char = text[self.i]
            if char in "@*+?!" and text.startswith("(", self.i + 1):
                self.i = find_close(text, self.i + 2, "(", ")") + 1  # an extglob: @(a|b)
                continue
            if char in _META:
                if text.startswith(("<(", ">("), self.i):
                    self.i = self._close(self.i + 2, "(", ")") + 1
                    continue
                if char == "(" and _ASSIGNMENT.fullmatch(text[start:self.i]):
                    self.i = self._close(self.i + 1, "(", ")") + 1  # name=(an array)
                    continue
                if char == "(" and self.i > start and not (_NAME.match(text[start:self.i])
                                                           and re.match(r"\(\s*\)", text[self.i:])):
                    # bash refuses `word(`; zsh reads a glob qualifier there, which can run code
                    raise Malformed(f"a parenthesis right after {text[start:self.i]!r}")
                break
            self.i = self.skip_quoted(text, self.i)
        return text[start:self.i]

    def _close(self, i: int, opener: str, closer: str) -> int:
        return find_close(self.text, i, opener, closer)

    @staticmethod
    def skip_quoted(text: str, i: int) -> int:  # noqa: PLR0911, PLR0912 - one return per kind of piece
        """Index after the piece of word that starts at `i` (a quote, an expansion or a char)."""
        char = text[i]
        if char == "\\":
            if i + 1 >= len(text):
                raise Incomplete("a backslash at the end")
            return i + 2
        if char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise Incomplete("an open single quote")
            return end + 1
        if text.startswith("$'", i):
            j = i + 2
            while j < len(text) and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                raise Incomplete("an open $'...' quote")
            return j + 1
        if char == '"' or text.startswith('$"', i):
            return double_quote_end(text, i + (2 if char == "$" else 1)) + 1
        if text.startswith("$((", i):
            close = find_close(text, i + 3, "(", ")", depth=2)
            if text[close - 1] == ")":
                return close + 1
            return find_close(text, i + 2, "(", ")") + 1  # $((cmd); cmd): a command substitution
        if text.startswith("$(", i):
            return find_close(text, i + 2, "(", ")") + 1
        if text.startswith("${", i):
            return find_close(text, i + 2, "{", "}") + 1
        if char == "`":
            return backquote_end(text, i + 1) + 1
        return i + 1


def heredoc_delimiter(word: str) -> str:
    """The line that ends a here-document: its word with quotes removed (nothing expanded)."""
    out, i = [], 0
    while i < len(word):
        char = word[i]
        if char == "\\":
            out.append(word[i + 1:i + 2])
            i += 2
        elif char == "'" or word.startswith("$'", i):
            start = i + (2 if char == "$" else 1)
            end = word.find("'", start)
            end = len(word) if end < 0 else end
            out.append(word[start:end])
            i = end + 1
        elif char == '"' or word.startswith('$"', i):
            start = i + (2 if char == "$" else 1)
            end = start
            while end < len(word) and word[end] != '"':
                end += 2 if word[end] == "\\" and word[end + 1:end + 2] in ('"', "\\", "$", "`") else 1
            out.append(re.sub(r'\\([\\"$`])', r"\1", word[start:end]))
            i = end + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def backquote_end(text: str, i: int) -> int:
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "`":
            return i
        i += 1
    raise Incomplete("an open backquote")


_DOUBLE_QUOTED_SPECIAL = re.compile(r'[\\"$`]')


def double_quote_end(text: str, i: int) -> int:
    while i < len(text):
        special = _DOUBLE_QUOTED_SPECIAL.search(text, i)
        if special is None:
            break
        i = special.start()
        char = text[i]
        if char == "\\":
            i += 2
        elif char == '"':
            return i
        elif char in "$`":
            i = Lexer.skip_quoted(text, i) if text.startswith(("$(", "${", "`"), i) else i + 1
        else:
            i += 1
    raise Incomplete("an open double quote")


def find_close(text: str, i: int, opener: str, closer: str, depth: int = 1) -> int:
    """Index of the `closer` that balances `depth` open `opener`s before `i`, quotes respected."""
    while i < len(text):
        char = text[i]
        if char == opener:
            depth += 1
            i += 1
        elif char == closer:
            depth -= 1
            if depth == 0:
                return i
            i += 1
        elif char in "\\'\"`" or (char == "$" and text[i + 1:i + 2] in ("'", '"', "(", "{")):
            i = Lexer.skip_quoted(text, i)
        elif char == "#" and opener == "(" and (i == 0 or text[i - 1] in " \t\n;"):
            end = text.find("\n", i)  # a comment inside $( ... )
            i = len(text) if end < 0 else end
        else:
            i += 1
    raise Incomplete(f"an open {opener}")


class Parser:
    """Tokens into simple commands, tracking compound commands only as far as screening needs."""

    def __init__(self, text: str) -> None:
        self.parsed = Parsed()
        self._tokens = Lexer(text).tokens()
        self._pos = 0
        self._stack: list[str] = []  # closers awaited: "fi", "done", "esac", "}", ")"
        self._functions: list[tuple[str, int]] = []  # (name, stack depth its body ends at)
        self._pipe_from: Command | None = None
        self._connector = ""  # the last operator: a line ending in one continues

    def parse(self) -> Parsed:
        while self._pos < len(self._tokens):
            self._statement()
        if self._stack:
            raise Incomplete(f"an open compound command (expecting {self._stack[-1]!r})")
        if self._connector in CONNECTORS:
            raise Incomplete(f"a line ending in {self._connector!r}")
        if self._functions:
            raise Incomplete("a function definition without its body")
        return self.parsed

    # -- helpers --------------------------------------------------------------------------

    def _peek(self, offset: int = 0) -> tuple[str, str | Redirect] | None:
        index = self._pos + offset
        return self._tokens[index] if index < len(self._tokens) else None

    def _take(self) -> tuple[str, str | Redirect]:
        token = self._tokens[self._pos]
        self._pos += 1
        return token

    def _function(self) -> str | None:
        return self._functions[-1][0] if self._functions else None

    def _open(self, closer: str) -> None:
        if len(self._stack) >= MAX_NESTING:
            raise Malformed("compound commands nested too deep")
        self._stack.append(closer)

    def _close(self, closer: str) -> None:
        if not self._stack or self._stack[-1] != closer:
            raise Malformed(f"unexpected {closer!r}")
        self._stack.pop()
        while self._functions and self._functions[-1][1] == len(self._stack):
            self._functions.pop()  # the function's body ended here

    # -- grammar --------------------------------------------------------------------------

    def _statement(self) -> None:
        kind, value = self._take()
        if kind == "op":
            self._operator(str(value))
            return
        if kind == "word" and isinstance(value, str) and self._reserved(value):
            return
        self._pos -= 1
        self._simple()

    def _operator(self, op: str) -> None:
        if op == "(":
            self._open(")")
            self._connector = ""
        elif op == ")":
            self._close(")")
            self._connector = ""
        elif op in CASE_ENDS:
            if not self._stack or self._stack[-1] != "esac":
                raise Malformed(f"{op!r} outside a case")
            self._case_patterns()
        elif op in ("|", "|&"):
            if self._connector in CONNECTORS or self._connector == "start":
                raise Malformed(f"unexpected {op!r}")
            self._connector = op
            return
        elif op in ("&&", "||"):
            if self._connector in CONNECTORS:
                raise Malformed(f"unexpected {op!r}")
            self._connector = op
        elif op in SEPARATORS:
            if op != "\n" and self._connector in CONNECTORS:
                raise Malformed(f"unexpected {op!r}")
            if op == "\n" and self._connector in CONNECTORS:
                return  # `a |` newline `b`: the pipeline goes on
            self._connector = ""
        self._pipe_from = None

    def _reserved(self, word: str) -> bool:  # noqa: PLR0911 - one return per reserved word
        """A reserved word in command position: handle it and say so."""
        if word in _OPENERS and word not in ("for", "select", "case", "("):
            self._open(_OPENERS[word])
            self._connector = ""
            return True
        if word in _CONTINUATIONS:
            if word in {"elif", "else", "then"} and (not self._stack or self._stack[-1] != "fi"):
                raise Malformed(f"unexpected {word!r}")
            if word == "do" and (not self._stack or self._stack[-1] != "done"):
                raise Malformed("unexpected 'do'")
            if word == "time":
                while (nxt := self._peek()) is not None and nxt[0] == "word" and str(nxt[1]).startswith("-"):
                    self._pos += 1
            self._connector = ""
            return True
        if word in _CLOSERS:
            self._close(word)
            self._connector = ""
            return True
        if word in ("for", "select"):
            self._for()
            return True
        if word == "case":
            self._case()
            return True
        if word == "function":
            self._function_keyword()
            return True
        if word == "[[":
            self._conditional()
            return True
        return False

    def _words_until(self, stops: frozenset[str]) -> list[str]:
        words = []
        while (token := self._peek()) is not None:
            kind, value = token
            if kind == "op" and value in stops:
                break
            if kind != "word":
                raise Malformed(f"unexpected {value!r}")
            words.append(str(value))
            self._pos += 1
        return words

    def _for(self) -> None:
        token = self._peek()
        if token is None:
            raise Incomplete("a for loop without its variable")
        if token[0] == "word" and str(token[1]).startswith("(("):  # for (( ...; ...; ... ))
            self._pos += 1
            self.parsed.commands.append(Command(words=[str(token[1])], special="((",
                                                function=self._function()))
        else:
            name = str(self._take()[1])
            if not _NAME.match(name):
                raise Malformed(f"for: {name!r} is not a variable name")
            values: list[str] = []
            while self._peek() == ("op", "\n"):
                self._pos += 1
            if self._peek() == ("word", "in"):
                self._pos += 1
                values = self._words_until(frozenset({";", "\n"}))
            else:
                values = ['"$@"']
            self.parsed.commands.append(Command(words=[name, *values], special="for",
                                                function=self._function()))
        self._open("done")
        self._skip_separators()
        if self._peek() is None:
            raise Incomplete("a for loop without 'do'")
        if self._peek() != ("word", "do"):
            raise Malformed("a for loop without 'do'")
        self._pos += 1
        self._connector = ""

    def _case(self) -> None:
        token = self._peek()
        if token is None:
            raise Incomplete("a case without its word")
        if token[0] != "word":
            raise Malformed("a case without its word")
        self._pos += 1
        self.parsed.commands.append(Command(words=[str(token[1])], special="case", function=self._function()))
        while self._peek() == ("op", "\n"):
            self._pos += 1
        token = self._peek()
        if token is None:
            raise Incomplete("a case without 'in'")
        if token != ("word", "in"):
            raise Malformed("a case without 'in'")
        self._pos += 1
        self._open("esac")
        self._case_patterns()

    def _case_patterns(self) -> None:
        """Skip `pattern | pattern )` (or `esac`); commands follow."""
        self._skip_separators()
        token = self._peek()
        if token is None:
            raise Incomplete("a case without 'esac'")
        if token == ("word", "esac"):
            self._pos += 1
            self._close("esac")
            return
        if token == ("op", "("):
            self._pos += 1
        while True:
            token = self._peek()
            if token is None:
                raise Incomplete("a case pattern without ')'")
            self._pos += 1
            kind, value = token
            if kind == "op" and value == ")":
                break
            if kind == "word":
                self.parsed.commands.append(Command(words=[str(value)], special="case",
                                                    function=self._function()))
            elif value != "|":
                raise Malformed(f"unexpected {value!r} in a case pattern")
        self._connector = ""

    def _skip_separators(self) -> None:
        while (token := self._peek()) is not None and token[0] == "op" and token[1] in (";", "\n"):
            self._pos += 1

    def _function_keyword(self) -> None:
        token = self._peek()
        if token is None:
            raise Incomplete("a function without its name")
        name = str(self._take()[1])
        if self._peek() == ("op", "(") and self._peek(1) == ("op", ")"):
            self._pos += 2
        self._define(name)

    def _define(self, name: str) -> None:
        self.parsed.functions.append(name)
        while self._peek() == ("op", "\n"):
            self._pos += 1
        token = self._peek()
        if token is None:
            raise Incomplete("a function definition without its body")
        self._functions.append((name, len(self._stack)))

    def _conditional(self) -> None:
        """`[[ ... ]]`: not commands, but its expansions run (and `((`-style arithmetic)."""
        words: list[str] = []
        while True:
            token = self._peek()
            if token is None:
                raise Incomplete("a [[ without ]]")
            self._pos += 1
            kind, value = token
            if kind == "word" and value == "]]":
                break
            if kind == "word":
                words.append(str(value))
            elif kind == "redirect":
                assert isinstance(value, Redirect)
                words.append(value.target)  # `<` and `>` compare strings here
        self.parsed.commands.append(Command(words=words, special="[[", function=self._function()))
        self._connector = "word"

    def _simple(self) -> None:
        command = Command(function=self._function(), compound=bool(self._stack))
        if self._connector in ("|", "|&"):
            command.pipe_from = self._pipe_from
        while (token := self._peek()) is not None:
            kind, value = token
            if kind == "op":
                if value == "(" and len(command.words) == 1 and not command.assignments \
                        and self._peek(1) == ("op", ")"):
                    self._pos += 2  # name () compound-command
                    self._define(command.words[0])
                    self._connector = ""
                    return
                break
            self._pos += 1
            if kind == "redirect":
                assert isinstance(value, Redirect)
                command.redirects.append(value)
            elif not command.words and _ASSIGNMENT.match(str(value)):
                command.assignments.append(str(value))
            else:
                command.words.append(str(value))
        if command.words and command.words[0].startswith("((") and command.words[0].endswith("))"):
            command.special = "(("
        self.parsed.commands.append(command)
        self._pipe_from = command
        self._connector = "word"


def parse(text: str) -> Parsed:
    """The commands of `text`; `incomplete` or `errors` say what could not be read."""
    try:
        return Parser(text).parse()
    except Incomplete as exc:
        parsed = _rough(text)
        parsed.incomplete, parsed.until = str(exc), exc.until
        return parsed
    except Malformed as exc:
        parsed = _rough(text)
        parsed.errors.append(str(exc))
        return parsed


def rough_commands(text: str) -> list[Command]:
    return _rough(text).commands


def _rough(text: str) -> Parsed:
    """What can still be seen of a line that does not parse: each stretch between operators,
    as words. Screened too (it may run in part), always with the line marked unsure."""
    parsed = Parsed()
    budget = MAX_TOKENS
    for piece in re.split(r"[;&|()\n]+|\b(?:then|do|else)\b", text):
        if budget <= 0:
            break
        words = [w for w in re.split(r"[\s]+", piece) if w]
        while words and words[0] in ("if", "while", "until", "{", "}", "!", "fi", "done", "elif"):
            words = words[1:]
        words = words[:budget]
        budget -= len(words) + 1
        if words:
            parsed.commands.append(Command(words=[re.sub(r"""['"\\]""", "", w) for w in words]))
    return parsed
