"""Text shown to people (names on the consent page, the service name): one line of plain text.
Control characters and line breaks would break the line; Unicode bidirectional formatting
characters (UAX #9) reorder or hide the text around them, so that a name could read as something
else ("Claude" followed by a right-to-left override)."""

from __future__ import annotations

import unicodedata

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Cc: control characters (tabs, new lines); Cs: lone surrogates; Zl/Zp: line and paragraph breaks.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def unsafe_display_character(text: str) -> str | None:
    """The first character that has no place in one line of plain text, or None."""
    for ch in text:
        if ch in BIDI_CONTROLS or unicodedata.category(ch) in UNSAFE_CATEGORIES:
            return ch
    return None
