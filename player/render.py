"""pyte screen -> Rich Text. Only cell characters and their attributes leave the emulator:
no byte of a recording ever reaches the reviewer's terminal as a control sequence."""

from __future__ import annotations

import re

import pyte
from rich.style import Style
from rich.text import Text

from recorder.printable import printable_cell

_HEX = re.compile(r"^[0-9a-fA-F]{6}$")
_NAMES = {"brown": "yellow", "brightblack": "bright_black", "brightred": "bright_red",
          "brightgreen": "bright_green", "brightbrown": "bright_yellow", "brightyellow": "bright_yellow",
          "brightblue": "bright_blue", "brightmagenta": "bright_magenta", "brightcyan": "bright_cyan",
          "brightwhite": "bright_white"}
_VALID = {"black", "red", "green", "yellow", "blue", "magenta", "cyan", "white", "bright_black", "bright_red",
          "bright_green", "bright_yellow", "bright_blue", "bright_magenta", "bright_cyan", "bright_white"}


def _color(value: str) -> str | None:
    if not value or value == "default":
        return None
    if _HEX.match(value):
        return f"#{value}"
    name = _NAMES.get(value, value)
    return name if name in _VALID else None


def screen_text(screen: pyte.Screen) -> list[Text]:
    lines = []
    for row in range(screen.lines):
        line = screen.buffer[row]
        text = Text(no_wrap=True, overflow="crop")
        run: list[str] = []
        run_style: Style | None = None
        for col in range(screen.columns):
            cell = line[col]
            style = Style(color=_color(cell.fg), bgcolor=_color(cell.bg), bold=cell.bold or None,
                          italic=cell.italics or None, underline=cell.underscore or None,
                          reverse=cell.reverse or None, strike=cell.strikethrough or None)
            if style != run_style and run:
                text.append("".join(run), run_style)
                run = []
            run_style = style
            run.append(printable_cell(cell.data))
        if run:
            text.append("".join(run), run_style)
        lines.append(text)
    return lines
