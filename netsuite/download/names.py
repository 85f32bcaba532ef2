"""
Safe local file names for downloads.

A server chooses a download's name (C{Content-Disposition}) or the URL does
(its last path segment); either may be hostile.  Whatever comes in, the
result is one plain file name inside the output directory: no separators,
no C{..}, no control or bidirectional-override characters, no leading dot,
at most L{MAX_NAME_BYTES} bytes of UTF-8.  An existing file is never
overwritten unless asked: C{name.1}, C{name.2}, ... as aria2 does.
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from email.utils import unquote as unquoteHeader
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from netsuite.charsets import textCodec
from netsuite.text import HIDDEN_CATEGORIES

#: Bytes of UTF-8 a file name may take (most file systems allow 255).
MAX_NAME_BYTES = 200

#: The name of a download whose URL names no file.
DEFAULT_NAME = "index.html"

#: Characters replaced by C{_}: separators, and the characters Windows file
#: systems refuse in a name.  Names Windows reserves for devices (C{CON},
#: C{COM1}, C{nul.txt}) are kept, as curl and aria2 keep them everywhere but
#: on Windows: such a file cannot be opened from Windows, over SMB either.
_UNSAFE = re.compile(r'[/\\<>:"|?*]')


def visible(character: str) -> bool:
    """
    Whether C{character} may reach a file name or a terminal: not one of
    L{HIDDEN_CATEGORIES} (a control, a bidi override, a line separator...).
    """
    return unicodedata.category(character) not in HIDDEN_CATEGORIES


def sanitiseName(name: str, default: str = DEFAULT_NAME) -> str:
    """
    C{name} as one safe plain file name, or C{default} when nothing usable
    is left.

    Only the last segment of a path counts; unsafe characters become C{_};
    leading dots and spaces and trailing dots and spaces go; the name is cut
    to L{MAX_NAME_BYTES}, keeping its extension when it can.
    """
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Bytes of command-line text that were not UTF-8 stay, percent-encoded
    # as in a name from a URL (they were dropped: -o $'caf\xe9' gave caf).
    name = percentUndecoded(name)
    name = unicodedata.normalize("NFC", name)
    name = "".join(c for c in name if visible(c))
    name = _UNSAFE.sub("_", name)
    name = " ".join(name.split())  # tabs, newlines already gone; runs of spaces
    name = name.lstrip(". ").rstrip(". ")
    if not name:
        return default
    return _cut(_storable(name))


def _storable(name: str) -> str:
    """
    C{name} with each character the file system's encoding cannot take
    (an ISO-8859-1 or C locale) percent-encoded as its UTF-8 bytes: such a
    name could not be opened.
    """
    encoding = sys.getfilesystemencoding()
    try:
        name.encode(encoding)
        return name
    except UnicodeEncodeError:
        pass

    def storable(character: str) -> str:
        try:
            character.encode(encoding)
            return character
        except UnicodeEncodeError:
            return "".join("%%%02X" % byte for byte in character.encode("utf-8"))

    return "".join(storable(c) for c in name)


def _cut(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension.encode("utf-8")) > 16 or not stem:
        stem, extension = name, ""
    elif stem.lower().endswith(".tar") and stem[:-4]:
        stem, extension = stem[:-4], stem[-3:] + "." + extension  # x.tar.gz stays a .tar.gz
    room = MAX_NAME_BYTES - (len(extension.encode("utf-8")) + 1 if extension else 0)
    cut = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(". ")
    return f"{cut}.{extension}" if extension else cut


#: Endings of the downloader's own files (a partial file, its state, the
#: state being written): a download is never given one, so that a server
#: cannot plant a state file that a later download would resume from.
RESERVED_SUFFIXES = (".part", ".part.json", ".part.json.tmp")


def avoidReserved(name: str) -> str:
    """
    C{name}, with C{_} added when it ends like one of the downloader's own
    files (L{RESERVED_SUFFIXES}), still at most L{MAX_NAME_BYTES}: a name
    L{sanitiseName} leaves as it is.
    """
    return _cut(name + "_") if name.lower().endswith(RESERVED_SUFFIXES) else name



def _parameters(value: str) -> List[Tuple[str, str]]:
    """
    C{value} cut into C{(name, value)} pairs at each C{;} outside double
    quotes, as L{email.message.Message.get_params} cuts it (the first pair is
    the disposition type), in time linear in the length of C{value}: the
    email module's takes time quadratic in the number of C{;}.
    """
    pairs = []
    start = 0
    while True:
        end = value.find(";", start)
        scanned, quotes = start, 0
        while end > start:
            # A ";" inside quotes (an odd number of unescaped '"' so far) does not cut.
            quotes += value.count('"', scanned, end) - value.count('\\"', scanned, end)
            if quotes % 2 == 0:
                break
            scanned, end = end, value.find(";", end + 1)
        if end < 0:
            end = len(value)
        name, equals, found = value[start:end].partition("=")
        pairs.append((name.strip().lower(), found.strip()) if equals else (name.strip(), ""))
        if end == len(value):
            return pairs
        start = end + 1


#: A parameter of an RFC 2231 file name: C{filename*} (one extended value),
#: C{filename*N} (a continuation) or C{filename*N*} (an extended one).
_EXTENDED = re.compile(r"filename\*(?:([0-9]{1,9})(\*)?)?", re.ASCII)


def _headerBytes(text: str) -> bytes:
    """
    The bytes C{text} was read from: the header is read as UTF-8, with
    C{surrogateescape} characters for the bytes that were not.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate given as text: its UTF-8 form
        return text.encode("utf-8", "surrogatepass")


def _decodeExtended(segments: List[Tuple[str, bool]]) -> str:
    """
    An RFC 2231 value (C{charset'lang'text}, in one or more segments, each
    C{(text, percentEncoded)}) as text.  In a charset L{textCodec} allows
    (US-ASCII when none is given), the percent-encoded bytes and the bytes
    sent as they are (which the RFC does not allow) are decoded together;
    bytes the charset cannot decode are kept as C{surrogateescape}
    characters, to be percent-encoded (L{percentUndecoded}) as a URL's
    are: each was U+FFFD, so that different names were saved as one.  In
    any other charset, the text is taken as it is, each percent-encoded
    byte as the character of that number.
    """
    charset = None
    first, encoded = segments[0]
    if first.count("'") >= 2:
        charset, _, first = first.split("'", 2)
        segments = [(first, encoded)] + segments[1:]
    codec = textCodec(charset or "us-ascii")
    if codec is None:
        return "".join(unquote(text, encoding="latin-1") if encoded else text for text, encoded in segments)
    octets = b"".join(unquote_to_bytes(_headerBytes(text)) if encoded else _headerBytes(text) for text, encoded in segments)
    return octets.decode(codec, "surrogateescape")


def nameFromContentDisposition(value: Optional[str]) -> Optional[str]:
    """
    The file name a C{Content-Disposition} header value gives, preferring
    C{filename*} (RFC 5987 / 6266, or RFC 2231 continuations) to
    C{filename}; L{None} when it gives none or cannot be read.  Not yet
    sanitised.  The work is linear in the length of C{value}.
    """
    if not value:
        return None
    try:
        plain = extended = None
        continued: dict[int, Tuple[str, bool]] = {}
        for key, found in _parameters(value)[1:]:
            if key == "filename":
                plain = plain if plain is not None else unquoteHeader(found)
                continue
            match = _EXTENDED.fullmatch(key)
            if match is None:
                continue
            if match.group(1) is None:
                extended = extended if extended is not None else unquoteHeader(found)
            else:
                continued.setdefault(int(match.group(1)), (unquoteHeader(found), bool(match.group(2))))
        segments = [continued[number] for number in sorted(continued)]
        if extended is not None:
            name = _decodeExtended([(extended, True)]) or plain
        elif any(encoded for _, encoded in segments):
            name = _decodeExtended(segments) or plain
        else:
            name = plain or "".join(text for text, _ in segments)
    except Exception:  # hostile header values: no name, never a crash
        return None
    if not name or not isinstance(name, str):
        return None
    return name


def nameFromURL(url: str) -> Optional[str]:
    """
    The percent-decoded last path segment of C{url}, or L{None} when the
    path ends with C{/} (or is empty).  Not yet sanitised.
    """
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    segment = path.rsplit("/", 1)[-1]
    if not segment:
        return None
    # Bytes that are not UTF-8 stay percent-encoded, as curl -O keeps them:
    # each became U+FFFD, so /%E9 and /%F0 were both saved as one name.
    try:
        raw = segment.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate: as its UTF-8 form
        raw = segment.encode("utf-8", "surrogatepass")
    text = unquote_to_bytes(raw).decode("utf-8", "surrogateescape")
    return percentUndecoded(text)


def percentUndecoded(text: str) -> str:
    """
    C{text} with each byte that was not UTF-8 (a C{surrogateescape}
    character) written as its C{%XX}.
    """
    return _UNDECODED.sub(_percent, text)


def _percent(match: re.Match[str]) -> str:
    return "%%%02X" % (ord(match.group()) - 0xDC00)


_UNDECODED = re.compile("[\udc80-\udcff]")


def chooseName(url: str, contentDisposition: Optional[str] = None) -> str:
    """
    The safe local name of a download: from C{Content-Disposition}, else
    from the URL, else L{DEFAULT_NAME}.
    """
    for found in (nameFromContentDisposition(contentDisposition), nameFromURL(url)):
        if found:
            name = sanitiseName(found, default="")
            if name:
                return name
    return DEFAULT_NAME


def freePath(
    directory: Path,
    name: str,
    *,
    overwrite: bool = False,
    partSuffix: str = ".part",
    hints: Optional[FreeNameHints] = None,
) -> Path:
    """
    Where a download named C{name} goes in C{directory}: C{name} itself, or,
    when it (or its partial file) already exists and C{overwrite} is off,
    the first free C{name.1}, C{name.2}, ...

    This looks at the file system (two C{stat} calls a name tried): call it
    when a download starts, not while bytes flow.  With C{hints}, the
    numbered names are tried from where the last search for C{name} ended,
    so a list of thousands of same-named downloads costs a few calls each
    rather than a search from C{name.1} each time.
    """

    def taken(candidate: Path) -> bool:
        # lexists: a dangling symbolic link takes its name too (exists()
        # said free, the rename found it taken, and asked again forever).
        return os.path.lexists(candidate) or os.path.lexists(candidate.with_name(candidate.name + partSuffix))

    first = directory / name
    if overwrite or not taken(first):
        return first
    key = (str(directory), name)
    number = hints.get(key) if hints is not None else 1
    while True:
        candidate = directory / f"{name}.{number}"
        if not taken(candidate):
            if hints is not None:
                hints.remember(key, number)
            return candidate
        number += 1


class FreeNameHints:
    """
    Where L{freePath} last found a free numbered name, per directory and
    name: the number it returned (tried first next time, since the caller
    may not have used it).  At most C{size} names are remembered, the one
    remembered longest ago forgotten first; a forgotten name is searched
    from C{name.1} again, which finds a free name too, only more slowly.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._numbers: dict[tuple[str, str], int] = {}

    def get(self, key: tuple[str, str]) -> int:
        """
        The number to try first for C{key}: 1 when none is remembered.
        """
        return self._numbers.get(key, 1)

    def remember(self, key: tuple[str, str], number: int) -> None:
        """
        Remember C{number} as the last free one found for C{key}.
        """
        self._numbers.pop(key, None)
        self._numbers[key] = number
        if len(self._numbers) > self.size:
            del self._numbers[next(iter(self._numbers))]


def isInside(directory: Path, path: Path) -> bool:
    """
    Whether C{path} is directly inside C{directory} (a last check before a
    file is opened).
    """
    return os.path.dirname(os.path.abspath(path)) == os.path.abspath(directory)
