"""
Values quoted in messages: what a user or a client gave, made short and
safe to print.
"""

from __future__ import annotations

import unicodedata


def cut(text: str, most: int) -> str:
    """
    C{text} cut after C{most} characters, then followed by its length, for
    a message that shows it as it is.
    """
    return text if len(text) <= most else f"{text[:most]}... ({len(text)} characters)"


def shortened(value: object, most: int = 60) -> str:
    """
    C{repr(value)} (so control characters are shown escaped) for a message
    that quotes it: a string longer than C{most} characters is cut there
    and followed by its length; any other value's text is cut after
    C{most} characters.
    """
    if isinstance(value, str):
        if len(value) <= most:
            return repr(value)
        return f"{value[:most]!r}... ({len(value)} characters)"
    if isinstance(value, int) and value.bit_length() > 64:
        # Python refuses to write out an integer of thousands of digits.
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except ValueError:  # such an integer inside a list
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= most else text[:most] + "..."


def visibleText(text: str) -> str:
    """
    C{text} with its control, format (bidi overrides), surrogate and
    unassigned characters written as backslash escapes (C{\\x1b}), so that
    a terminal shows them rather than obeying them.
    """
    if text.isprintable():
        return text
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in HIDDEN_CATEGORIES else c
        for c in text
    )


#: The Unicode categories of characters a terminal obeys or hides rather
#: than shows: controls, format characters (bidi overrides, zero-width),
#: surrogates, unassigned and private-use characters, line and paragraph
#: separators.
HIDDEN_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Cn", "Co", "Zl", "Zp"))
