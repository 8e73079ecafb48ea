"""A small terminal emulator: ANSI colours to HTML, progress bars collapsed.

Pure functions and one small state machine, no I/O and no IPython, so the
magics, the handle, the live view and tests share them. How a *process* is
presented (status lines, ``ps`` tables) is :mod:`jupyter_exec.render.presentation`.

:class:`TerminalLog` is a tiny line-oriented terminal: it keeps a list of lines
made of styled cells and a cursor, and understands what programs use to draw
progress (``\\r``, backspace, erase-in-line, cursor up/down as tqdm does for
several bars) and SGR colours (16, 256 and 24-bit). Everything else that a
full-screen program might send (cursor addressing, OSC titles, private modes)
is dropped rather than printed as garbage. Feeding it text incrementally gives
the same result as feeding it all at once, even when an escape sequence or a
UTF-8 character is split across chunks (see :class:`StreamDecoder`), in time
linear in the text even for an OSC or DCS string spread over many chunks.

Only the last ``max_lines`` lines are kept; ``dropped_lines`` counts the rest,
so a live view of a chatty process stays small.
"""

from __future__ import annotations

import codecs
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import groupby
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..wire.schema import Chunk

__all__ = [
    "StreamDecoder",
    "Style",
    "TerminalLog",
    "ansi_to_html",
    "collapse_progress",
    "strip_ansi",
]

#: CSI (ESC [ params intermediates final); a string: OSC (ESC ] ... BEL | ESC \\) or
#: DCS, SOS, PM, APC (ESC P|X|^|_ ... ESC \\), which also ends unterminated at the ESC
#: of the next sequence, as in a terminal; other ESC x.
_ESCAPE = re.compile(
    r"\x1b\[(?P<params>[0-?]*)(?P<inter>[ -/]*)(?P<final>[@-~])"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]"
)
#: A possibly unfinished CSI or ESC x at the end of a chunk: wait for more.
_PARTIAL_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|[ -/]*)\Z")
#: What may end a string, by the character after its ESC: BEL or ESC for OSC, ESC for the rest.
_STRING_END = {"]": re.compile("[\x07\x1b]"), **dict.fromkeys("PX^_", re.compile("\x1b"))}

#: xterm's default 16 colours (normal then bright).
_PALETTE_16 = (
    "#000000", "#cd0000", "#00cd00", "#cdcd00", "#0000ee", "#cd00cd", "#00cdcd", "#e5e5e5",
    "#7f7f7f", "#ff0000", "#00ff00", "#ffff00", "#5c5cff", "#ff00ff", "#00ffff", "#ffffff",
)  # fmt: skip
_CUBE = (0, 95, 135, 175, 215, 255)


def _color_256(index: int) -> str:
    if index < 16:
        return _PALETTE_16[index]
    if index < 232:
        index -= 16
        r, g, b = _CUBE[index // 36], _CUBE[(index // 6) % 6], _CUBE[index % 6]
        return f"#{r:02x}{g:02x}{b:02x}"
    level = 8 + 10 * (index - 232)
    return f"#{level:02x}{level:02x}{level:02x}"


@dataclass(frozen=True)
class Style:
    """The SGR attributes of one cell. Colours are CSS colour strings or None."""

    fg: str | None = None
    bg: str | None = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False
    inverse: bool = False
    strike: bool = False
    #: The SGR parameters of the colours (``31``, ``38;5;208``), for re-emitting ANSI.
    fg_code: str | None = None
    bg_code: str | None = None

    @cached_property
    def ansi(self) -> str:
        """:meth:`sgr`, computed once per style (rendering asks for it on every run)."""
        return self.sgr()

    @cached_property
    def inline_css(self) -> str:
        """:meth:`css`, computed once per style."""
        return self.css()

    def sgr(self) -> str:
        """This style as one SGR sequence (after a reset), for terminals."""
        codes = [str(c) for c, on in _FLAG_CODES if getattr(self, on)]
        codes += [c for c in (self.fg_code, self.bg_code) if c]
        return f"\x1b[{';'.join(codes)}m" if codes else ""

    def css(self) -> str:
        fg, bg = (self.bg, self.fg) if self.inverse else (self.fg, self.bg)
        if self.inverse:
            fg = fg or "var(--jp-layout-color0, #fff)"
            bg = bg or "var(--jp-content-font-color0, #000)"
        parts = []
        if fg:
            parts.append(f"color:{fg}")
        if bg:
            parts.append(f"background-color:{bg}")
        if self.bold:
            parts.append("font-weight:bold")
        if self.dim:
            parts.append("opacity:0.7")
        if self.italic:
            parts.append("font-style:italic")
        decorations = [
            n for n, on in (("underline", self.underline), ("line-through", self.strike)) if on
        ]
        if decorations:
            parts.append("text-decoration:" + " ".join(decorations))
        return ";".join(parts)


PLAIN = Style()


def _apply_sgr(style: Style, params: str) -> Style:
    """The style after ``ESC [ params m``."""
    codes = [int(p) if p.isdigit() else 0 for p in re.split("[;:]", params)] if params else [0]
    i = 0
    while i < len(codes):
        code = codes[i]
        i += 1
        if code == 0:
            style = PLAIN
            continue
        if code in (38, 48):
            start = i
            color, i = _extended_color(codes, i)
            if color is not None:
                sgr = ";".join(str(c) for c in codes[start - 1 : i])
                if code == 38:
                    style = replace(style, fg=color, fg_code=sgr)
                else:
                    style = replace(style, bg=color, bg_code=sgr)
            continue
        style = _simple_sgr(style, code)
    return style


def _extended_color(codes: list[int], i: int) -> tuple[str | None, int]:
    if i < len(codes) and codes[i] == 5 and i + 1 < len(codes):
        return _color_256(codes[i + 1] % 256), i + 2
    if i < len(codes) and codes[i] == 2 and i + 3 < len(codes):
        r, g, b = (min(c, 255) for c in codes[i + 1 : i + 4])
        return f"#{r:02x}{g:02x}{b:02x}", i + 4
    return None, len(codes)


_SGR_FLAGS: dict[int, tuple[str, bool]] = {
    1: ("bold", True), 2: ("dim", True), 3: ("italic", True), 4: ("underline", True),
    7: ("inverse", True), 9: ("strike", True), 21: ("underline", True),
    22: ("bold", False), 23: ("italic", False), 24: ("underline", False),
    27: ("inverse", False), 29: ("strike", False),
}  # fmt: skip


_FLAG_CODES = (
    (1, "bold"),
    (2, "dim"),
    (3, "italic"),
    (4, "underline"),
    (7, "inverse"),
    (9, "strike"),
)


def _simple_sgr(style: Style, code: int) -> Style:
    if code in _SGR_FLAGS:
        name, value = _SGR_FLAGS[code]
        style = replace(style, **{name: value})  # type: ignore[arg-type]
        return replace(style, dim=False) if code == 22 else style
    if 30 <= code <= 37:
        return replace(style, fg=_PALETTE_16[code - 30], fg_code=str(code))
    if 90 <= code <= 97:
        return replace(style, fg=_PALETTE_16[code - 90 + 8], fg_code=str(code))
    if 40 <= code <= 47:
        return replace(style, bg=_PALETTE_16[code - 40], bg_code=str(code))
    if 100 <= code <= 107:
        return replace(style, bg=_PALETTE_16[code - 100 + 8], bg_code=str(code))
    if code == 39:
        return replace(style, fg=None, fg_code=None)
    if code == 49:
        return replace(style, bg=None, bg_code=None)
    return style


#: Controls other than ``\n``: a chunk of text without them is whole lines of characters.
_CONTROL_NOT_LF = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
#: The style after an SGR sequence, by (id of the style before, params): logs repeat
#: a handful. Each entry holds the style before, so its id is not reused meanwhile.
_SGR_CACHE: dict[tuple[int, str], tuple[Style, Style]] = {}


def _sgr_cached(style: Style, params: str) -> Style:
    found = _SGR_CACHE.get((id(style), params))
    if found is None:
        if len(_SGR_CACHE) >= 4096:  # 24-bit colours could grow it without end
            _SGR_CACHE.clear()
        after = _apply_sgr(style, params)
        # One PLAIN object, so `is PLAIN` finds every unstyled write.
        found = _SGR_CACHE[id(style), params] = (style, PLAIN if after == PLAIN else after)
    return found[1]


class TerminalLog:
    """A scrolling, line-oriented terminal that output is fed into.

    ``feed()`` accepts decoded text in any chunking; ``text()``, ``ansi()`` and
    ``html()`` render the current state.

    ``lines`` holds each line's characters as one string, and a parallel list the
    style of each character, or None for a line with no style at all (most output):
    a chunk of plain lines is stored by ``str.split`` and ``list.extend``, without
    a Python step per character, so megabytes of output render in well under a second.

    Strings (OSC ``ESC ]``: titles, hyperlinks; DCS ``ESC P``, SOS, PM, APC) are
    never shown, whatever their length: a string ends at its terminator (BEL for
    OSC, ST ``ESC \\`` for all) or, unterminated, at the ESC of the next sequence,
    as xterm ends it; until then every character is dropped. A string that
    never ends (``cat`` of a binary, a crashed program) swallows the output after
    it, as in a terminal. Its characters are not kept: a string split over many
    chunks costs no memory, and each chunk is scanned once, so any length takes
    linear time.
    """

    def __init__(self, max_lines: int = 1000) -> None:
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self.max_lines = max_lines
        self.lines: list[str] = [""]
        self._styles: list[list[Style] | None] = [None]
        self.row = 0
        self.col = 0
        self.style = PLAIN
        self.dropped_lines = 0
        #: An unfinished CSI or ESC x (a few characters), joined to the next chunk.
        self._pending = ""
        #: Inside a string: what ends it. Its characters are dropped as they come, not kept.
        self._string_end: re.Pattern[str] | None = None
        #: The chunk before ended with an ESC inside the string: ST, or the next sequence.
        self._string_esc = False

    def feed(self, text: str) -> None:
        if self._string_end is not None:
            text = self._skip_string(text, self._string_end)
            if not text:
                return
        text = self._hold_unfinished(self._pending + text)
        # "\r\n" is "\n" (a line feed starts at column 0), and a pty sends it for every line.
        text = text.replace("\r\n", "\n")
        # [text, params, inter, final, text, ...]; final is None for escapes other than CSI.
        parts = _ESCAPE.split(text)
        self._put_text(parts[0])
        for i in range(1, len(parts), 4):
            if parts[i + 2]:
                self._csi(parts[i], parts[i + 1], parts[i + 2])
            self._put_text(parts[i + 3])
        self._trim()

    def _hold_unfinished(self, text: str) -> str:
        """``text`` without the unfinished sequence at its end, which is held for later.

        A CSI or ESC x goes to ``_pending``; a string (OSC, DCS...) only sets
        ``_string_end``, and ``feed`` skips the rest of it in the chunks to come.
        """
        self._pending = ""
        last = text.rfind("\x1b")  # an unfinished sequence starts at the last ESC...
        if last < 0:
            return text
        end = _STRING_END.get(text[last + 1 : last + 2])
        if end is not None:
            if end.search(text, last + 2):
                return text  # an OSC ended by BEL
            self._string_end = end
            return text[:last]
        if last == len(text) - 1:  # ...or at the ESC before it, if that ESC is half an ST
            start = text.rfind("\x1b", 0, last)
            end = _STRING_END.get(text[start + 1 : start + 2]) if start >= 0 else None
            if end is not None and not end.search(text, start + 2, last):
                self._string_end, self._string_esc = end, True
                return text[:start]
        if _PARTIAL_ESCAPE.match(text, last):
            self._pending = text[last:]
            return text[:last]
        return text

    def _skip_string(self, text: str, end: re.Pattern[str]) -> str:
        """The text after the string ``feed`` is inside, or "" if it goes on past ``text``."""
        if self._string_esc:
            text, self._string_esc = "\x1b" + text, False
        found = end.search(text)
        if found is None:
            return ""
        i = found.start()
        if i == len(text) - 1 and text[i] == "\x1b":
            self._string_esc = True
            return ""
        self._string_end = None
        if text[i] == "\x07":
            return text[i + 1 :]
        # ESC \ (ST) ends the string; any other ESC ends it too and begins the next sequence.
        return text[i + 2 :] if text[i + 1] == "\\" else text[i:]

    # -- rendering -------------------------------------------------------------

    def _visible(self) -> tuple[list[str], list[list[Style] | None]]:
        lines, styles = self.lines, self._styles
        # A final empty line is just "the cursor is at the start of a new line".
        if len(lines) > 1 and not lines[-1]:
            lines, styles = lines[:-1], styles[:-1]
        return lines, styles

    def _ends_with_newline(self) -> bool:
        return len(self.lines) > 1 and not self.lines[-1]

    def text(self) -> str:
        """Plain text: colours dropped, progress collapsed, trailing newline kept."""
        return "\n".join(self._visible()[0]) + ("\n" if self._ends_with_newline() else "")

    def ansi(self) -> str:
        """Like :meth:`text` but colours re-emitted as SGR sequences (for terminals)."""
        lines, styles = self._visible()
        if styles.count(None) == len(styles):  # no colour anywhere (most output)
            return self.text()
        body = "\n".join([_ansi_line(*pair) for pair in zip(lines, styles, strict=True)])
        return body + ("\n" if self._ends_with_newline() else "")

    def html(self) -> str:
        """The lines as HTML (no ``<pre>`` wrapper): escaped, colours as inline CSS."""
        lines, styles = self._visible()
        if styles.count(None) == len(styles):
            return html.escape("\n".join(lines), quote=False)
        return "\n".join([_html_line(*pair) for pair in zip(lines, styles, strict=True)])

    # -- the state machine -----------------------------------------------------

    def _put_text(self, text: str) -> None:
        pos = 0
        for match in _CONTROL_NOT_LF.finditer(text):
            self._put_lines(text[pos : match.start()])
            self._control(match.group())
            pos = match.end()
        self._put_lines(text[pos:])

    def _put_lines(self, text: str) -> None:
        """Characters and line feeds (no other control): whole new lines in bulk."""
        if "\n" not in text:
            if text:
                self._write(text)
            return
        parts = text.split("\n")
        if parts[0]:
            self._write(parts[0])
        rest = parts[1:]
        while rest and self.row < len(self.lines) - 1:  # the cursor was moved up: overwrite
            self.row += 1
            self.col = 0  # a pipe's "\n" and a pty's "\r\n" both start at column 0
            if rest[0]:
                self._write(rest[0])
            rest = rest[1:]
        if not rest:
            return
        # From the last line on, each part is a new line of its own.
        self.lines.extend(rest)
        if self.style is PLAIN:
            self._styles.extend([None] * len(rest))
        else:
            style = self.style
            self._styles.extend([style] * len(part) if part else None for part in rest)
        self.row = len(self.lines) - 1
        self.col = len(rest[-1])

    def _write(self, text: str) -> None:
        line, styles = self.lines[self.row], self._styles[self.row]
        # Every style equal to PLAIN is PLAIN (see _sgr_cached), so `is` is enough.
        if styles is None and self.style is not PLAIN:
            styles = self._styles[self.row] = [PLAIN] * len(line)
        col, end = self.col, self.col + len(text)
        if col > len(line):
            if styles is not None:
                styles.extend([PLAIN] * (col - len(line)))
            line += " " * (col - len(line))
        self.lines[self.row] = line[:col] + text + line[end:]
        if styles is not None:
            styles[col:end] = [self.style] * len(text)
        self.col = end

    def _control(self, ch: str) -> None:
        if ch == "\r":
            self.col = 0
        elif ch == "\b":
            self.col = max(0, self.col - 1)
        elif ch == "\t":
            self._write(" " * (8 - self.col % 8))
        # BEL and other C0 controls draw nothing.

    def _csi(self, params: str, inter: str, final: str) -> None:
        if inter or params.startswith("?"):
            return  # private modes (cursor visibility, bracketed paste...)
        if final == "m":
            self.style = _sgr_cached(self.style, params)
            return
        n = int(params) if params.isdigit() else 0
        if final == "K":
            self._erase_in_line(n)
        elif final == "A":
            self.row = max(0, self.row - max(n, 1))
        elif final in "BE":
            self.row = min(len(self.lines) - 1, self.row + max(n, 1))
            if final == "E":
                self.col = 0
        elif final == "C":
            self.col += max(n, 1)
        elif final == "D":
            self.col = max(0, self.col - max(n, 1))
        elif final == "G":
            self.col = max(n, 1) - 1
        elif final == "J" and n in (2, 3):
            self.dropped_lines += len(self.lines) - 1
            self.lines, self._styles = [""], [None]
            self.row = self.col = 0

    def _erase_in_line(self, n: int) -> None:
        """``ESC [ n K``: to the end of the line (0), from its start (1), all of it (2)."""
        line, styles, col = self.lines[self.row], self._styles[self.row], self.col
        if n == 0:
            self.lines[self.row] = line[:col]
            if styles is not None:
                del styles[col:]
        elif n == 1:
            blank = min(col, len(line))
            self.lines[self.row] = " " * blank + line[col:]
            if styles is not None:
                styles[:col] = [PLAIN] * blank
        else:
            self.lines[self.row] = ""
            self._styles[self.row] = None

    def _trim(self) -> None:
        excess = len(self.lines) - self.max_lines
        if excess > 0:
            del self.lines[:excess]
            del self._styles[:excess]
            self.row = max(0, self.row - excess)
            self.dropped_lines += excess


def _ansi_line(line: str, styles: list[Style] | None) -> str:
    if styles is None:
        return line
    out: list[str] = []
    current = PLAIN
    for style, start, end in _runs(styles):
        if style is not current:  # runs differ, and only PLAIN equals PLAIN
            out.append("\x1b[0m" + style.ansi)
            current = style
        out.append(line[start:end])
    if current is not PLAIN:
        out.append("\x1b[0m")
    return "".join(out)


def _html_line(line: str, styles: list[Style] | None) -> str:
    if styles is None:
        return html.escape(line, quote=False)
    out: list[str] = []
    for style, start, end in _runs(styles):
        chunk = html.escape(line[start:end], quote=False)
        css = style.inline_css
        out.append(f'<span style="{css}">{chunk}</span>' if css else chunk)
    return "".join(out)


def _runs(styles: list[Style]) -> list[tuple[Style, int, int]]:
    """(style, start, end) of each run of equal styles in a line, neighbours unequal."""
    runs: list[tuple[Style, int, int]] = []
    start = 0
    for _, group in groupby(styles, key=id):  # one Style.__eq__ per change, not per cell
        same = list(group)
        end = start + len(same)
        if runs and runs[-1][0] == same[0]:  # equal styles from different sequences
            runs[-1] = (runs[-1][0], runs[-1][1], end)
        else:
            runs.append((same[0], start, end))
        start = end
    return runs


class StreamDecoder:
    """Incremental UTF-8 decoding, one decoder per stream (stdout, stderr, pty).

    A multi-byte character split across two chunks decodes once both arrive;
    invalid bytes become U+FFFD instead of failing.
    """

    def __init__(self) -> None:
        self._decoders: dict[str, codecs.IncrementalDecoder] = {}

    def decode(self, stream: str, data: bytes, final: bool = False) -> str:
        decoder = self._decoders.get(stream)
        if decoder is None:
            decoder = self._decoders[stream] = codecs.getincrementaldecoder("utf-8")("replace")
        return decoder.decode(data, final)

    def decode_chunks(self, chunks: Iterable[Chunk]) -> str:
        """The text of output chunks, in order, each through its stream's decoder."""
        return "".join(self.decode(c.stream, c.data) for c in chunks)


def ansi_to_html(text: str, max_lines: int = 100_000) -> str:
    """Render terminal text as HTML spans (escaped; wrap it in ``<pre>`` yourself)."""
    log = TerminalLog(max_lines)
    log.feed(text)
    return log.html()


def collapse_progress(text: str, max_lines: int = 100_000, *, keep_ansi: bool = False) -> str:
    """Text as a terminal would show it: each ``\\r``-redrawn line in its final state."""
    log = TerminalLog(max_lines)
    log.feed(text)
    return log.ansi() if keep_ansi else log.text()


def strip_ansi(text: str) -> str:
    """Drop escape sequences but keep every other character (no ``\\r`` handling).

    An OSC or DCS string is dropped through its terminator, or without one up
    to the next ESC or the end of ``text``, as :class:`TerminalLog` drops it.
    """
    return _ESCAPE.sub("", text)
