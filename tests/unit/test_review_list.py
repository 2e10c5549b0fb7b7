"""`bastion review`'s session list: typing filters, Esc backs out one step at a time, and the
command each session ran is a column."""

from __future__ import annotations

from textual.widgets import DataTable, Input, Static

from player.app import BrowserScreen, KillScreen, LiveEntry, LiveError, PlayerApp
from recorder.index import SessionRow
from tests.support.lab import until


def row(i: int, user: str, command: str | None, kind: str) -> SessionRow:
    return SessionRow(id=f"s{i}", name="n", user=user, login="root", target="db-1", client=None, kind=kind,
                      command=command, started=1_795_000_000 + i, ended=None, duration=1.0, bytes_in=0,
                      bytes_out=0, exit_status=0, exit_signal=None, markers={}, location=None, lines=None,
                      chain=None, state="closed", error=None, verification="verified")


ROWS = [row(1, "alice", None, "shell"), row(2, "bob", "pg_dump -Fc app", "exec"),
        row(3, "quinn", "\x1b]0;evil\x07ls", "exec")]


async def test_typing_on_the_list_filters_and_escape_backs_out_one_step_at_a_time() -> None:
    app = PlayerApp(BrowserScreen(ROWS, lambda r: None))  # type: ignore[arg-type, return-value]
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.screen.query_one(DataTable)
        field = app.screen.query_one("#filter", Input)
        assert table.has_focus and table.row_count == 3
        await pilot.press(*"in")  # typed on the list: it filters
        assert field.value == "in" and field.has_focus
        assert table.row_count == 1  # quinn
        await pilot.press("escape", *"q")  # a q on the list with a filter set types
        assert field.value == "inq" and field.has_focus and table.row_count == 0
        await pilot.press("backspace", "escape")  # leaves the filter; it still applies
        assert table.has_focus and field.value == "in" and table.row_count == 1
        await pilot.press("escape")  # clears it
        assert field.value == "" and table.row_count == 3 and app.is_running
        await pilot.press("escape")  # and only now quits
        assert not app.is_running


async def test_q_quits_the_list_while_no_filter_is_set() -> None:
    app = PlayerApp(BrowserScreen(ROWS, lambda r: None))  # type: ignore[arg-type, return-value]
    async with app.run_test(size=(120, 20)) as pilot:
        await pilot.press("q")
        assert not app.is_running


async def test_the_list_shows_what_each_session_ran_escaped() -> None:
    app = PlayerApp(BrowserScreen(ROWS, lambda r: None))  # type: ignore[arg-type, return-value]
    async with app.run_test(size=(140, 20)):
        table = app.screen.query_one(DataTable)
        commands = [str(table.get_row_at(i)[3]) for i in range(table.row_count)]
        assert commands == ["(shell)", "pg_dump -Fc app", "\\x1b]0;evil\\x07ls"]


class FakeLive:
    """A live source that records what the browser asks (the real registry is in the e2e tests)."""

    def __init__(self, may_kill: bool) -> None:
        self.may_kill = may_kill
        self.killed: list[tuple[str, str]] = []
        self.entries = [LiveEntry(id="a1", user="alice", login="root", target="db-1", kind="shell", command=None,
                                  client="127.0.0.1:1", started=1_795_000_000, idle=3, bytes_in=10, bytes_out=20),
                        LiveEntry(id="b2", user="bob", login="root", target="web-1", kind="exec",
                                  command="\x1b]0;x\x07tail -f log", client="127.0.0.1:2", started=1_795_000_001,
                                  idle=4000, bytes_in=1 << 20, bytes_out=5)]

    def sessions(self) -> list[LiveEntry]:
        return list(self.entries)

    def follow(self, session: str) -> object:
        raise LiveError("no recording of it (yet)")

    def kill(self, session: str, reason: str) -> str:
        self.killed.append((session, reason))
        self.entries = [e for e in self.entries if e.id != session]
        return f"ended {session}"


def live_ids(app: PlayerApp) -> list[str]:
    table = app.screen.query_one("#live", DataTable)
    return [str(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)]


async def test_live_sessions_are_listed_on_top_filtered_and_escaped() -> None:
    live = FakeLive(may_kill=False)
    app = PlayerApp(BrowserScreen(ROWS, lambda r: None, live))  # type: ignore[arg-type, return-value]
    async with app.run_test(size=(160, 30)) as pilot:
        await until(lambda: live_ids(app) == ["a1", "b2"], "both live sessions")
        table = app.screen.query_one("#live", DataTable)
        assert str(table.get_row_at(1)[4]) == "\\x1b]0;x\\x07tail -f log"
        await pilot.press(*"web")
        assert live_ids(app) == ["b2"]


async def test_only_a_source_that_may_kill_ends_sessions_and_a_reason_is_needed() -> None:
    for may_kill in (False, True):
        live = FakeLive(may_kill)
        app = PlayerApp(BrowserScreen(ROWS, lambda r: None, live))  # type: ignore[arg-type, return-value]
        async with app.run_test(size=(160, 30)) as pilot:
            await until(lambda: len(live_ids(app)) == 2, "the live sessions")  # noqa: B023
            await pilot.press("shift+tab", "k")
            if not may_kill:
                assert isinstance(app.screen, BrowserScreen) and live.killed == []
                continue
            assert isinstance(app.screen, KillScreen)
            await pilot.press("enter")  # no reason yet
            assert isinstance(app.screen, KillScreen) and live.killed == []
            await pilot.press("escape")  # cancelled
            assert isinstance(app.screen, BrowserScreen) and live.killed == []
            await pilot.press("k", *"done", "enter")
            await until(lambda: live_ids(app) == ["b2"], "the ended session gone")  # noqa: B023
            assert live.killed == [("a1", "done")]


async def test_following_what_has_no_recording_yet_says_so() -> None:
    app = PlayerApp(BrowserScreen(ROWS, lambda r: None, FakeLive(False)))  # type: ignore[arg-type, return-value]
    async with app.run_test(size=(160, 30)) as pilot:
        await until(lambda: len(live_ids(app)) == 2, "the live sessions")
        await pilot.press("shift+tab", "enter")
        assert isinstance(app.screen, BrowserScreen)


async def test_a_registry_that_cannot_be_read_is_said_and_the_recordings_stay() -> None:
    class Broken(FakeLive):
        def sessions(self) -> list[LiveEntry]:
            raise OSError("unable to open database file")

    app = PlayerApp(BrowserScreen(ROWS, lambda r: None, Broken(True)))  # type: ignore[arg-type, return-value]
    async with app.run_test(size=(160, 30)):
        title = app.screen.query_one("#live-title", Static)
        await until(lambda: "cannot read them (unable to open database file)" in str(title.content), "said")
        assert app.screen.query_one("#sessions", DataTable).row_count == 3
