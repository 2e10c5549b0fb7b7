"""`bastion review`'s session list: typing filters, Esc backs out one step at a time, and the
command each session ran is a column."""

from __future__ import annotations

from textual.widgets import DataTable, Input

from player.app import BrowserScreen, PlayerApp
from recorder.index import SessionRow


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
