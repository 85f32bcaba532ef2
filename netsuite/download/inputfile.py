"""
The input file of C{netsuite-get -i FILE}: a list of downloads, in the
spirit of aria2's C{--input-file}.

One URL a line, starting in the first column.  Options for that download
follow on indented lines, one C{key=value} each::

    # comments and blank lines are ignored
    https://example.com/big.iso
      out=debian.iso
      checksum=sha256=0123...ef
    https://example.com/other.tar.gz
      dir=archives
      header=Authorization: Bearer abc123
      header=X-Trace: 1

The keys are C{out} (the file name), C{checksum} (C{TYPE=HEX}), C{dir}
(the directory, relative to the current one) and C{header} (C{Name: value},
repeatable).  Unlike aria2, a line holds one URL: TAB-separated mirror lists
are refused, as are unknown keys and options before the first URL.

Parsing is a pure function: L{parseInputFile} takes text and returns
L{InputJob}s, raising L{InputFileError} (which names the line) for anything
it cannot use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional
from urllib.parse import urlsplit

from netsuite.text import shortened

from .engine import splitURL
from .errors import DownloadError
from .values import (
    HEADER_NAME,
    MAX_URL,
    RESERVED_HEADERS,
    asciiHostName,
    isText,
    redact,
    slashesAsBrowsersRead,
    unreadableURLReason,
    urlTooLong,
)

__all__ = ["InputFileError", "InputJob", "OPTION_KEYS", "checkDirectory", "checkURL", "checkName", "parseHeader",
           "parseInputFile"]

#: The keys an option line may use.
OPTION_KEYS = ("out", "checksum", "dir", "header")

class InputFileError(ValueError):
    """
    The input file cannot be used; C{str()} is one sentence naming the line.

    @ivar line: the 1-based line number at fault.
    """

    def __init__(self, source: str, line: int, problem: str) -> None:
        super().__init__(f"{source}, line {line}: {problem}")
        self.line = line


@dataclass
class InputJob:
    """
    One download read from an input file: the fields of a
    L{netsuite.download.DownloadRequest} that the file can set.

    @ivar line: the line of the URL, for messages about this job.
    @ivar directory: L{None} when the file gives no C{dir=} (the command
        line's C{-d} then applies).
    """

    url: str
    line: int = 0
    name: Optional[str] = None
    checksum: Optional[str] = None
    directory: Optional[str] = None
    headers: Dict[str, str] = field(default_factory=dict)


def checkURL(url: str) -> None:
    """
    Refuse what cannot be an http or https URL to download, or is longer
    than L{MAX_URL} bytes in UTF-8.

    @raise ValueError: with a readable sentence (a password in C{url}
        shown as C{***}, control characters escaped).
    """
    shown = redact(url)
    if urlTooLong(url):
        raise ValueError(f"{shortened(shown)} is longer than {MAX_URL} bytes")
    if _hasControl(url.replace("\t", " ")):  # a TAB has the sentence below
        raise ValueError(f"{shown!r} is not a URL: it holds a control character")
    if any(c.isspace() for c in url):
        raise ValueError(f"{shown!r} is not a URL: it holds spaces or tabs (write spaces as %20)")
    url = slashesAsBrowsersRead(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise ValueError(f"{shown!r} is not a URL that can be read: {unreadableURLReason(e)}") from None
    if not parts.scheme or "://" not in url:
        raise ValueError(f"{shown!r} is not a URL: write it with http:// or https:// in front")
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{shown!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{shown!r} names no host")
    if parts.port == 0:
        raise ValueError(f"{shown!r} names port 0, which cannot be connected to")
    if not isText(url):
        raise ValueError(f"{shown!r} is not valid text (it holds a lone surrogate)")
    try:
        asciiHostName(parts.hostname)
    except ValueError as e:
        raise ValueError(f"{shown!r}: {e}") from None
    try:
        splitURL(url)  # what the downloader will do with it
    except DownloadError as e:
        raise ValueError(str(e)) from None


def checkName(name: str) -> None:
    """
    Refuse an output file name that is not one plain file name, or holds
    control characters.

    @raise ValueError: with a readable sentence.
    """
    if not name.strip():
        raise ValueError("the output file name is empty")
    if _hasControl(name):
        raise ValueError(f"the output file name {name!r} holds a control character")
    if "/" in name or "\\" in name:
        raise ValueError(f"the output file name {name!r} holds a directory; give the directory with -d or dir=")
    if name.strip() in (".", ".."):
        raise ValueError(f"{name!r} is not a file name")


def checkDirectory(directory: str) -> None:
    """
    Refuse a directory name no file system takes (a NUL) or that holds
    other control characters.

    @raise ValueError: with a readable sentence.
    """
    if _hasControl(directory):
        raise ValueError(f"the directory {directory!r} holds a control character")


def _hasControl(text: str) -> bool:
    # C0 and C1 controls and DEL: a NUL is refused by every file system.
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def parseHeader(text: str) -> tuple[str, str]:
    """
    C{"Name: value"} as C{(name, value)}.

    @raise ValueError: with a readable sentence when it is not a header the
        downloader may send.
    """
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise ValueError(f"{text!r} is not a header: write it as 'Name: value'")
    if not HEADER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a header name")
    if any(c in value for c in "\r\n"):
        raise ValueError(f"the value of the header {name!r} holds a line break")
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        raise ValueError(f"the value of the header {name!r} holds a control character")
    if not isText(value):
        raise ValueError(f"the value of the header {name!r} is not text")
    if name.lower() in RESERVED_HEADERS:
        raise ValueError(f"the header {name!r} is set by netsuite-get itself and cannot be given")
    return name, value


def parseInputFile(
    text: str, source: str = "input file", checkChecksum: Optional[Callable[[str], object]] = None
) -> List[InputJob]:
    """
    The downloads an input file lists, in order.

    @param text: the file's contents.
    @param source: how messages name the file (its path, or C{"standard
        input"}).
    @param checkChecksum: called with each C{checksum=} value; raises
        L{ValueError} with a readable sentence for a bad one (the engine's
        C{parseChecksum}).  By default any C{TYPE=HEX} is taken.
    @raise InputFileError: at the first line that cannot be used.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    jobs: List[InputJob] = []
    # Lines end at LF only, as in aria2: the other characters splitlines()
    # takes for line ends (form feed, U+2028, ...) stay, and are refused.
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        line = line.rstrip(_BLANK)
        stripped = line.lstrip(_BLANK)
        if not stripped or stripped.startswith("#"):
            continue

        def fail(problem: str) -> InputFileError:
            return InputFileError(source, number, problem)

        if line[0] not in _BLANK:
            if "\t" in line:
                raise fail("TAB-separated mirror URLs are not supported; give one URL a line")
            try:
                checkURL(line)
            except ValueError as e:
                raise fail(str(e)) from None
            jobs.append(InputJob(url=line, line=number))
            continue

        key, sep, value = stripped.partition("=")
        key, value = key.strip(_BLANK), value.strip(_BLANK)
        if not jobs:
            raise fail("an option line (indented) comes before any URL")
        if not sep:
            raise fail(f"{stripped!r} is not an option: write key=value, with key one of {', '.join(OPTION_KEYS)}")
        if key not in OPTION_KEYS:
            raise fail(f"unknown option {key!r} (known: {', '.join(OPTION_KEYS)})")
        if not value:
            raise fail(f"{key}= needs a value")
        job = jobs[-1]
        try:
            if key == "header":
                name, headerValue = parseHeader(value)
                if name.lower() in (n.lower() for n in job.headers):
                    raise ValueError(f"the header {name!r} is given twice for this URL")
                job.headers[name] = headerValue
                continue
            if getattr(job, _FIELDS[key]) is not None:
                raise ValueError(f"{key}= is given twice for this URL")
            if key == "out":
                checkName(value)
            elif key == "dir":
                checkDirectory(value)
            elif key == "checksum":
                algorithm, equals, digest = value.partition("=")
                if not equals or not algorithm.strip() or not digest.strip():
                    raise ValueError(f"{value!r} is not a checksum: write TYPE=HEX, e.g. sha256=...")
                if checkChecksum is not None:
                    checkChecksum(value)
            setattr(job, _FIELDS[key], value)
        except ValueError as e:
            raise fail(str(e)) from None
    return jobs


_FIELDS = {"out": "name", "checksum": "checksum", "dir": "directory"}

#: What indents a line, and is stripped from either end of one.
_BLANK = " \t"
