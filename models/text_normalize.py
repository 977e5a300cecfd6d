"""Text normalisation for keyword matching: fold the tricks people use to dodge word lists.

Pure functions with no dependency on the service; ``opencc`` is imported lazily.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Callable
from typing import Any

__all__ = [
    "collapse_separators",
    "collapse_separators_with_map",
    "is_cjk",
    "is_word_char",
    "normalize",
]

# Hardcoded rather than scanned at import (a full scan costs ~130 ms); a test checks it still
# covers every Cc/Cf code point of the running unicodedata.
_FORMAT_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
# Invisible characters that are not Cc/Cf but are used the same way to split words.
_INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul fillers
    (0x180B, 0x180D),  # Mongolian variation selectors
    (0x180F, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),  # variation selectors (emoji presentation)
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)

# str.split() treats these as whitespace, so they are left for the final whitespace collapse.
_WHITESPACE_CONTROLS = frozenset(map(ord, "\t\n\v\f\r\x1c\x1d\x1e\x1f\x85"))


def _char_class(ranges: tuple[tuple[int, int], ...], skip: frozenset[int]) -> str:
    parts = []
    for lo, hi in ranges:
        run_start: int | None = None
        for cp in range(lo, hi + 2):
            inside = cp <= hi and cp not in skip
            if inside and run_start is None:
                run_start = cp
            elif not inside and run_start is not None:
                parts.append(f"{re.escape(chr(run_start))}-{re.escape(chr(cp - 1))}")
                run_start = None
    return "[" + "".join(parts) + "]"


_INVISIBLE_RE = re.compile(_char_class(_FORMAT_RANGES + _INVISIBLE_RANGES, _WHITESPACE_CONTROLS))
# Accents are dropped (after NFKD) so "fück" and "fuck" compare equal; the gate lists the blocks
# whose precomposed letters carry them.
_COMBINING_TABLE = dict.fromkeys(range(0x0300, 0x0370))
_ACCENTED_RE = re.compile("[\u00c0-\u024f\u0300-\u036f\u0370-\u04ff\u1e00-\u1fff]")

_CJK_CLASS = (
    "\u2e80-\u2fdf"  # radicals
    "\u3040-\u30ff"  # kana
    "\u3100-\u312f\u31a0-\u31bf"  # bopomofo
    "\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"
    "\U00020000-\U0003134f"
)
_CJK_RE = re.compile(f"[{_CJK_CLASS}]")

_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
_HOMOGLYPHS = {
    # Cyrillic (lower case only: input is case-folded first)
    "а": "a",
    "в": "b",
    "е": "e",
    "і": "i",
    "ј": "j",
    "к": "k",
    "м": "m",
    "н": "h",
    "о": "o",
    "р": "p",
    "с": "c",
    "т": "t",
    "у": "y",
    "х": "x",
    "ѕ": "s",
    "һ": "h",
    "ԁ": "d",
    "ԛ": "q",
    "ԝ": "w",
    "ү": "y",
    "ӏ": "l",
    # Greek
    "α": "a",
    "β": "b",
    "ε": "e",
    "η": "n",
    "ι": "i",
    "κ": "k",
    "ν": "v",
    "ο": "o",
    "ρ": "p",
    "τ": "t",
    "υ": "u",
    "χ": "x",
}
_LOOKALIKE_TABLE = str.maketrans({**_LEET, **_HOMOGLYPHS})
_LOOKALIKE_CLASS = "[" + re.escape("".join(_LEET) + "".join(_HOMOGLYPHS)) + "]"
# A token is a run of latin letters, digits and look-alikes; only tokens with a real latin
# letter are rewritten, so "2024", "$100" and plain Cyrillic words are left alone.
_TOKEN_RE = re.compile(f"(?:[a-z]|{_LOOKALIKE_CLASS})+")
# Such a token always has a latin letter next to a look-alike: a cheap test to skip the rewrite.
_MIXED_RE = re.compile(f"[a-z]{_LOOKALIKE_CLASS}|{_LOOKALIKE_CLASS}[a-z]")
_HAS_LATIN_RE = re.compile("[a-z]")
_REPEAT_RE = re.compile(r"(.)\1\1+")

_CJK_CHAR = f"[{_CJK_CLASS}]"
_WORD = r"[^\W_]"  # a letter or digit of any script
_NON_CJK_WORD = f"[^\\W_{_CJK_CLASS}]"
# Separator = anything that is not a letter or digit (punctuation, symbols, spaces, emoji).
# Only three kinds of separator run change in the collapsed form; everything else is copied.
_COLLAPSIBLE_RE = re.compile(
    # fail fast at letters, which are most positions
    "(?=[\\W_])"
    # between two CJK characters
    f"(?:(?P<cjk>(?<={_CJK_CHAR})[\\W_]+(?={_CJK_CHAR}))"
    # between two single-character latin (etc.) words: "f.u.c.k"
    f"|(?P<single>(?<!{_WORD}{_WORD})(?<={_NON_CJK_WORD})[\\W_]+(?={_NON_CJK_WORD}(?!{_WORD})))"
    # a joiner without whitespace between two latin words: "fuck_you", "kill-yourself"
    f"|(?P<joiner>(?<={_NON_CJK_WORD})(?:[^\\w\\s]|_)+(?={_NON_CJK_WORD})))"
)


@functools.lru_cache(maxsize=1)
def _t2s() -> Callable[[str], str]:
    import opencc  # deferred: loading the dictionaries is not free and many callers never need it

    converter: Any = opencc.OpenCC("t2s")
    lock = threading.Lock()

    def convert(text: str) -> str:
        # The binding gives no thread-safety guarantee; conversion is microseconds anyway.
        with lock:
            return str(converter.convert(text))

    return convert


def _fix_token(match: re.Match[str]) -> str:
    token = match.group()
    if _HAS_LATIN_RE.search(token) is None:
        return token
    return token.translate(_LOOKALIKE_TABLE)


def _squeeze(match: re.Match[str]) -> str:
    # Digits are exempt: "1000" must not become "10".
    return match.group() if match.group(1).isdigit() else match.group(1)


def is_cjk(ch: str) -> bool:
    """True for a Han, kana, bopomofo or Hangul character."""
    return _CJK_RE.match(ch) is not None


def is_word_char(ch: str) -> bool:
    """True for a letter or digit of a space-separated script (a latin word boundary test)."""
    return ch.isalnum() and not is_cjk(ch)


def normalize(text: str) -> str:
    """Fold case, width, accents, traditional Chinese, leetspeak, homoglyphs and invisibles."""
    text = _INVISIBLE_RE.sub("", text)
    text = unicodedata.normalize("NFKC", text).casefold()
    if not text.isascii():
        if _ACCENTED_RE.search(text) is not None:
            text = unicodedata.normalize("NFKD", text).translate(_COMBINING_TABLE)
            text = unicodedata.normalize("NFKC", text)
        if _CJK_RE.search(text) is not None:
            text = _t2s()(text)
    if _MIXED_RE.search(text) is not None:
        text = _TOKEN_RE.sub(_fix_token, text)
    text = _REPEAT_RE.sub(_squeeze, text)
    return " ".join(text.split())


def collapse_separators_with_map(normalized: str) -> tuple[str, list[int]]:
    """Like `collapse_separators`, also returning each output character's index in the input."""
    out: list[str] = []
    index: list[int] = []
    copied = 0  # input position up to which text has been emitted
    chain_end = -2  # end of the previous separator inside a run of single letters
    chain_sep: str | None = None
    for match in _COLLAPSIBLE_RE.finditer(normalized):
        start, end = match.span()
        sep = match.group()
        if match.lastgroup == "single":
            contiguous = start == chain_end + 1
            chain_end = end
            if not contiguous or chain_sep is None or chain_sep == sep:
                chain_sep = sep
                replacement = ""
            else:
                # "f.u.c.k y.o.u": a different separator ends the word instead of joining it.
                chain_sep = None
                replacement = " "
        elif match.lastgroup == "cjk":
            replacement = ""
        else:
            replacement = " "
        if replacement == sep:
            continue
        out.append(normalized[copied:start])
        index.extend(range(copied, start))
        out.append(replacement)
        index.extend(range(start, start + len(replacement)))
        copied = end
    out.append(normalized[copied:])
    index.extend(range(copied, len(normalized)))
    return "".join(out), index


def collapse_separators(normalized: str) -> str:
    """Join words split into single characters by separators ("f.u.c.k", "傻 逼")."""
    return collapse_separators_with_map(normalized)[0]
