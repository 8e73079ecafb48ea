"""terminal.py: terminal text to HTML and plain text, progress collapsing; and its
TerminalLog on megabytes of output and at chunk boundaries.

TerminalLog keeps each line as a string and styles only where there are any, and
takes whole lines in bulk; these tests hold it to what a per-character terminal
shows. Speed: bench/render.py.
"""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_exec.render.terminal import (
    StreamDecoder,
    TerminalLog,
    ansi_to_html,
    collapse_progress,
    strip_ansi,
)
from tests.service import NUMBERED_LINES, assert_numbered


def test_carriage_return_progress_collapses_to_latest_state() -> None:
    text = "start\n  0%|          |\r 50%|#####     |\r100%|##########|\ndone\n"
    assert collapse_progress(text) == "start\n100%|##########|\ndone\n"


def test_shorter_redraw_keeps_the_tail_like_a_terminal() -> None:
    assert collapse_progress("abcdef\rxy") == "xycdef"
    assert collapse_progress("abcdef\rxy\x1b[K") == "xy"


def test_tqdm_multi_bar_cursor_up_redraws_in_place() -> None:
    text = "bar1 0%\nbar2 0%\n\x1b[A\x1b[A\rbar1 100%\n\rbar2 100%\n"
    assert collapse_progress(text) == "bar1 100%\nbar2 100%\n"


def test_real_tqdm_output_collapses_to_its_final_line() -> None:
    import io

    from tqdm import tqdm

    stream = io.StringIO()
    for _ in tqdm(range(50), file=stream, mininterval=0, ncols=60, ascii=True):
        pass
    lines = collapse_progress(stream.getvalue()).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("100%|") and "50/50" in lines[0]


def test_sgr_colours_become_inline_css_and_text_is_escaped() -> None:
    out = ansi_to_html("\x1b[1;31mError\x1b[0m: <b>&\x1b[38;5;208m256\x1b[38;2;1;2;3mrgb\x1b[m")
    assert '<span style="color:#cd0000;font-weight:bold">Error</span>' in out
    assert ": &lt;b&gt;&amp;" in out
    assert 'color:#ff8700">256</span>' in out
    assert 'color:#010203">rgb</span>' in out


def test_ansi_round_trip_keeps_colours_for_terminals() -> None:
    assert collapse_progress("\x1b[32mok\x1b[0m\n", keep_ansi=True) == "\x1b[0m\x1b[32mok\x1b[0m\n"


def test_escape_sequences_split_across_chunks() -> None:
    log = TerminalLog()
    for piece in ["a\x1b", "[3", "1mred", "\x1b[0", "m b\x1b]0;title\x07c"]:
        log.feed(piece)
    assert log.text() == "ared bc"
    assert 'color:#cd0000">red</span>' in log.html()


def test_private_modes_and_osc_titles_are_dropped() -> None:
    assert collapse_progress("\x1b[?25lhidden cursor\x1b[?25h\x1b]2;t\x1b\\") == "hidden cursor"


def test_line_limit_counts_dropped_lines() -> None:
    log = TerminalLog(max_lines=3)
    log.feed("".join(f"{i}\n" for i in range(10)))
    assert log.text() == "8\n9\n"
    assert log.dropped_lines == 8


def test_stream_decoder_joins_split_utf8_per_stream() -> None:
    data = "héllo→".encode()
    decoder = StreamDecoder()
    parts = [decoder.decode("stdout", data[i : i + 1]) for i in range(len(data))]
    assert "".join(parts) == "héllo→"
    assert decoder.decode("stderr", b"\xff") == "\ufffd"


@given(st.text(alphabet=st.sampled_from(list("ab\r\n\x1b[0123;mAK?")), max_size=60), st.data())
def test_chunking_never_changes_the_result(text: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(text)))
    whole, pieces = TerminalLog(), TerminalLog()
    whole.feed(text)
    pieces.feed(text[:cut])
    pieces.feed(text[cut:])
    assert pieces.text() == whole.text()


def test_strip_ansi() -> None:
    assert strip_ansi("\x1b[31mred\x1b[0m\r") == "red\r"


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


#: Strings of each kind and ending: OSC title by BEL and by ST, an OSC 8 hyperlink, DCS (a
#: sixel), APC with a BEL inside (only ST ends it), an OSC cut short by the next CSI.
STRINGS = (
    "a\x1b]0;title\x07b\x1b]2;t\r\nx\x1b\\c\r\n"
    "\x1b]8;;https://e.org\x1b\\link\x1b]8;;\x1b\\ \x1bPq#0;2;0;0;0\x1b\\d\x1b_x\x07y\x1b\\e\n"
    "\x1b]0;cut short\x1b[31mred\x1b[0m"
)
STRINGS_TEXT = "abc\nlink de\nred"


def test_strings_at_every_single_cut_give_what_one_piece_gives() -> None:
    """A cut anywhere, including between the ESC and the backslash of an ST."""
    whole = fed([STRINGS])
    assert whole.text() == STRINGS_TEXT
    assert whole.html().endswith('<span style="color:#cd0000">red</span>')
    for cut in range(len(STRINGS) + 1):
        assert renderings(fed([STRINGS[:cut], STRINGS[cut:]])) == renderings(whole), cut
    assert renderings(fed(list(STRINGS))) == renderings(whole)


STRING_PIECES = ["a", "\n", "\x07", "\x1b", "\\", "\x1b]0;", "\x1bP", "[31m"]


@given(st.lists(st.sampled_from(STRING_PIECES), max_size=30), st.data())
def test_any_chunking_of_strings_gives_the_same_result(
    pieces: list[str], data: st.DataObject
) -> None:
    """Fed whole, a piece at a time, and cut at up to three characters."""
    text = "".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=3)))
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    whole = renderings(fed([text]))
    assert renderings(fed(pieces)) == whole
    assert renderings(fed(parts)) == whole


@pytest.mark.parametrize("intro", ["\x1b]0;", "\x1bP"])
def test_a_string_over_a_mebibyte_is_dropped_without_being_kept(intro: str) -> None:
    """An unterminated OSC or DCS fed in 4 KiB pieces: nothing of it is kept or shown."""
    body = "".join(f"{i}\t" for i in range(200_000))  # > 1 MiB, no BEL or ESC
    assert len(body) > 1 << 20
    log, pieces = fed(["before\n"]), chunks(intro + body, 4096)
    tracemalloc.start()
    try:
        for piece in pieces:
            log.feed(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10  # a few pieces at most, never the string
    log.feed("\x1b\\after\n")
    assert log.text() == "before\nafter\n"
    assert strip_ansi(f"before\n{intro}{body}\x1b\\after\n") == "before\nafter\n"
