"""terminal.py's TerminalLog on megabytes of output and at chunk boundaries.

TerminalLog keeps each line as a string and styles only where there are any, and
takes whole lines in bulk; these tests hold it to what a per-character terminal
shows (the basic cases are in tests/render/test_render.py). Speed: bench/render.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_exec.render.terminal import TerminalLog
from tests.service import NUMBERED_LINES, assert_numbered

NUMBERED_TEXT = "".join(f"{i}\n" for i in range(NUMBERED_LINES))


def fed(pieces: list[str], max_lines: int = 1_000_000) -> TerminalLog:
    log = TerminalLog(max_lines=max_lines)
    for piece in pieces:
        log.feed(piece)
    return log


def chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def renderings(log: TerminalLog) -> tuple[str, str, str, int]:
    return log.text(), log.ansi(), log.html(), log.dropped_lines


@pytest.mark.parametrize("size", [len(NUMBERED_TEXT), 65536, 4093])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_megabytes_of_numbered_lines_each_once(size: int, newline: str) -> None:
    """More than 2 MiB, whole or in pieces that cut lines (and pty "\\r\\n") anywhere."""
    assert len(NUMBERED_TEXT) > 2 << 20
    log = fed(chunks(NUMBERED_TEXT.replace("\n", newline), size))
    assert_numbered(log.text())
    assert log.ansi() == NUMBERED_TEXT  # no styles
    assert log.html() == NUMBERED_TEXT.rstrip("\n")  # nothing to escape; <pre> adds no line
    assert log.dropped_lines == 0


def test_megabytes_into_a_short_log_keep_the_last_lines() -> None:
    log = fed(chunks(NUMBERED_TEXT, 65536), max_lines=20)
    assert_numbered(log.text(), first=NUMBERED_LINES - 19)  # and the empty line after them
    assert log.dropped_lines == NUMBERED_LINES - 19


def test_coloured_megabytes_keep_their_colour_on_every_line() -> None:
    text = "".join(f"\x1b[32m{i}\x1b[0m ok\r\n" for i in range(100_000))
    log = fed(chunks(text, 65536))
    assert log.text() == "".join(f"{i} ok\n" for i in range(100_000))
    assert log.html().split("\n")[77_777] == '<span style="color:#00cd00">77777</span> ok'
    assert log.ansi().split("\n")[5] == "\x1b[0m\x1b[32m5\x1b[0m ok"


#: Each kind of boundary a page can cut: CSI, OSC title, pty newline, redraw, tab.
TRICKY = (
    "start\r\n\x1b[1;31mred\x1b[0m plain\r\n"
    "\x1b]0;title\x07  0%|\r 50%|#####\r100%|##########|\r\n"
    "a\tb\x1b[38;5;208mc\x1b[39m\x1b[2Kgone\r\nend"
)
TRICKY_TEXT = "start\nred plain\n100%|##########|\n" + " " * 10 + "gone\nend"  # 2K keeps the column


def test_every_single_cut_gives_what_one_piece_gives() -> None:
    whole = fed([TRICKY])
    assert whole.text() == TRICKY_TEXT
    assert '<span style="color:#cd0000;font-weight:bold">red</span> plain' in whole.html()
    for cut in range(len(TRICKY) + 1):
        assert renderings(fed([TRICKY[:cut], TRICKY[cut:]])) == renderings(whole), cut


def test_one_character_at_a_time_gives_what_one_piece_gives() -> None:
    assert renderings(fed(list(TRICKY))) == renderings(fed([TRICKY]))


def test_crlf_split_between_pieces_is_one_line_feed() -> None:
    assert fed(["one\r", "\ntwo\r", "\n"]).text() == "one\ntwo\n"
    assert fed(["one\r", "two\n"]).text() == "two\n"  # a bare "\r" is still a redraw


def test_new_lines_after_the_cursor_moved_up_overwrite_then_append() -> None:
    log = fed(["1\n2\n3\n", "\x1b[2A", "x\ny\nz\nw\n"])
    assert log.text() == "1\nx\ny\nz\nw\n"


def test_equal_styles_reached_two_ways_are_one_span() -> None:
    log = fed(["\x1b[31ma\x1b[1m\x1b[22mb\x1b[0m"])  # bold on then off: red again
    assert log.html() == '<span style="color:#cd0000">ab</span>'
    assert log.ansi() == "\x1b[0m\x1b[31mab\x1b[0m"


def test_styled_erase_and_padding_keep_cells_aligned() -> None:
    log = fed(["\x1b[34mabcdef\x1b[0m\r\x1b[3C\x1b[1K|\x1b[5Cz"])
    assert log.text() == "   |ef   z"  # z at column 9
    assert log.html() == '   |<span style="color:#0000ee">ef</span>   z'


PIECES = ["a", "b\n", "\r", "\r\n", "\t", "\b", "\x1b", "[", "31m", "0m", "1;4", "A", "K", "2J"]


@given(st.lists(st.sampled_from(PIECES), max_size=40), st.data())
def test_any_chunking_gives_the_same_text_ansi_and_html(
    pieces: list[str], data: st.DataObject
) -> None:
    text = "".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=3)))
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert renderings(fed(parts, max_lines=4)) == renderings(fed([text], max_lines=4))


@pytest.mark.parametrize(
    ("feed", "text", "html"),
    [
        (  # a colour across new lines colours each of them, not the empty one
            "\x1b[31ma\nb\n\nc\x1b[0m\n",
            "a\nb\n\nc\n",
            '<span style="color:#cd0000">a</span>\n<span style="color:#cd0000">b</span>\n\n'
            '<span style="color:#cd0000">c</span>',
        ),
        ("one\ntwo\nthree\x1b[2A\x1b[Ex\x1b[Bz\x1b[5Gq\x1b[2Dr", "one\nxwo\ntzrrq", None),
        ("keep\n\x1b[2Jnew", "new", None),
        (
            "\x1b[44mabcdef\x1b[0m\x1b[3D\x1b[K!",
            "abc!",
            '<span style="background-color:#0000ee">abc</span>!',
        ),
    ],
)
def test_cursor_moves_and_erases_as_a_terminal_draws_them(
    feed: str, text: str, html: str | None
) -> None:
    log = fed([feed])
    assert log.text() == text
    assert log.html() == (html or text)
    assert renderings(fed(list(feed))) == renderings(log)


def test_more_colours_than_the_style_cache_holds_each_stay_right() -> None:
    lines = [f"\x1b[38;2;{i % 256};{i // 256};7m{i}\x1b[0m\n" for i in range(6000)]
    html = fed(chunks("".join(lines), 1000)).html().split("\n")
    for i in (0, 4095, 4096, 5999):
        assert html[i] == f'<span style="color:#{i % 256:02x}{i // 256:02x}07">{i}</span>'


def test_a_log_keeps_at_least_one_line() -> None:
    with pytest.raises(ValueError, match="max_lines must be at least 1"):
        TerminalLog(max_lines=0)
