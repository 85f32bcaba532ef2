"""
Which charsets netsuite decodes text in: Python's own text codecs that
decode with replacement, looked up without Python remembering the names
clients make up.
"""

from __future__ import annotations

import codecs
import encodings
import pkgutil
from encodings.aliases import aliases as _ALIASES
from typing import Optional

#: Every name Python's own codecs answer to, normalised as
#: L{encodings.normalize_encoding} does.  Only these are looked up: Python
#: remembers every name it was asked for, the unknown ones too.
_CODEC_NAMES = frozenset(
    [*_ALIASES, *_ALIASES.values()] + [module.name for module in pkgutil.iter_modules(encodings.__path__)]
)


def textCodec(charset: str) -> Optional[str]:
    """
    The name of C{charset}'s codec, or L{None} unless it is one of Python's
    and decodes text, replacing what is not valid: not C{base64} (not
    text), nor C{idna} or C{punycode}, which fail even when told to replace
    (C{punycode} on any non-ASCII byte, and in time quadratic in what it
    decodes).
    """
    short = len(charset) <= 40 and charset.isascii()
    key = encodings.normalize_encoding(charset.lower()) if short else ""
    if key not in _CODEC_NAMES and key.replace(".", "_") not in _CODEC_NAMES:
        return None
    try:
        name = codecs.lookup(key).name
        b"x\xff".decode(name, "replace")
    except (LookupError, ValueError):
        return None
    return name
