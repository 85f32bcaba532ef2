"""
The resume state of a download: a small, human-readable JSON file beside
the C{.part} file (C{NAME.part.json}) naming the URL, the size, the
validators (ETag, Last-Modified) and the byte ranges already on disk.

Ranges are half-open C{[start, end)} pairs, kept sorted and merged.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from twisted.logger import Logger

from netsuite.files import readSmallFile, rewriteInPlace, writeAtomically
from netsuite.text import visibleText

log = Logger()

#: The suffix of a download's bytes while it is not finished.
PART_SUFFIX = ".part"

#: The suffix (after L{PART_SUFFIX}) of its state file.
STATE_SUFFIX = ".json"

VERSION = 1

#: The longest state file read: far more ranges than a download makes.
MAX_STATE_FILE = 1024 * 1024

Range = tuple[int, int]


def addRange(ranges: list[Range], start: int, end: int) -> list[Range]:
    """
    C{ranges} with C{[start, end)} added, sorted and merged.
    """
    if end <= start:
        return list(ranges)
    merged: list[Range] = []
    for first, last in sorted([*ranges, (start, end)]):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def mergeRanges(ranges: Iterable[Range]) -> list[Range]:
    """
    C{ranges} sorted and merged (empty ones dropped).
    """
    merged: list[Range] = []
    for first, last in sorted(r for r in ranges if r[1] > r[0]):  # one sort: a state may hold many
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def gaps(ranges: list[Range], size: int) -> list[Range]:
    """
    The parts of C{[0, size)} that C{ranges} (sorted, merged) does not cover.
    """
    missing: list[Range] = []
    position = 0
    for start, end in ranges:
        if start > position:
            missing.append((position, min(start, size)))
        position = max(position, end)
    if position < size:
        missing.append((position, size))
    return [(s, e) for s, e in missing if e > s]


def clipRanges(ranges: Iterable[Range], end: int) -> list[Range]:
    """
    C{ranges} (sorted, merged) cut at C{end}: what lies past a file's end
    is not on disk, whatever a state file says.
    """
    return [(start, min(stop, end)) for start, stop in ranges if start < end]


def dataExtents(fd: int, end: int) -> list[Range]:
    """
    The parts of the open file C{fd} before C{end} that hold data, not
    holes: a sparse C{.part} (a segmented download's) has holes wherever
    nothing was written, also where a crash lost bytes its state file
    claims.  Where the file system cannot tell, all of it.
    """
    extents: list[Range] = []
    position = 0
    while position < end:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole from here on
                break
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return [(0, end)] if end > 0 else []
            raise
        if start >= end:
            break
        position = os.lseek(fd, start, os.SEEK_HOLE)
        extents.append((start, min(position, end)))
    return extents


def intersectRanges(ranges: Iterable[Range], others: Iterable[Range]) -> list[Range]:
    """
    The bytes in both C{ranges} and C{others} (each sorted and merged).
    """
    first, second = list(ranges), list(others)
    result: list[Range] = []
    i = j = 0
    while i < len(first) and j < len(second):  # one pass: a state may hold many
        low = max(first[i][0], second[j][0])
        high = min(first[i][1], second[j][1])
        if low < high:
            result.append((low, high))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return mergeRanges(result)


def covered(ranges: Iterable[Range]) -> int:
    """
    How many bytes C{ranges} (merged) cover.
    """
    return sum(end - start for start, end in ranges)


def isHeaderValue(value: object) -> bool:
    """
    Whether C{value} can be sent as an HTTP header value: text that
    Latin-1 encodes, without control characters (RFC 9110 5.5).
    """
    if not isinstance(value, str):
        return False
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def _isLength(value: object) -> bool:
    """
    Whether C{value} (from JSON) is a byte count: a whole number of 0 or
    more, not C{true} or C{false}, which Python takes for 1 and 0.
    """
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def statePathFor(partPath: Path) -> Path:
    """
    The state file that goes with C{partPath}.
    """
    return partPath.with_name(partPath.name + STATE_SUFFIX)


@dataclass
class DownloadState:
    """
    What a later run needs to resume a download.

    @ivar url: the URL as the user gave it (without credentials).
    @ivar finalUrl: where redirects led, last time.
    @ivar size: the full size, when known.
    @ivar etag: the strong ETag of the remote file, when it had one.
    @ivar lastModified: its C{Last-Modified}, when it had one.
    @ivar done: the byte ranges already in the C{.part} file.
    @ivar rangesSupported: whether the server answered a Range request
        correctly (a download without it cannot resume).
    @ivar checksum: the checksum the file must match (C{"sha256=HEX"}), if
        one was given.
    @ivar adopted: with C{continueExisting}, the length of the user's own
        file this download continues (its first bytes are never dropped),
        or L{None}.
    """

    url: str
    finalUrl: str = ""
    size: Optional[int] = None
    etag: Optional[str] = None
    lastModified: Optional[str] = None
    done: list[Range] = field(default_factory=list)
    rangesSupported: bool = False
    checksum: Optional[str] = None
    adopted: Optional[int] = None

    def toJSON(self) -> dict:
        """
        The state as a JSON-ready dict.
        """
        return {
            "version": VERSION,
            "url": self.url,
            "finalUrl": self.finalUrl,
            "size": self.size,
            "etag": self.etag,
            "lastModified": self.lastModified,
            "rangesSupported": self.rangesSupported,
            "done": [list(r) for r in self.done],
            "checksum": self.checksum,
            "adopted": self.adopted,
        }

    @classmethod
    def fromJSON(cls, data: object) -> Optional["DownloadState"]:
        """
        A state read from JSON data, or L{None} when the data is not a
        state this version understands.
        """
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return None
        url = data.get("url")
        size = data.get("size")
        done = data.get("done")
        adopted = data.get("adopted")
        if not isinstance(url, str) or not (size is None or _isLength(size)):
            return None
        if not (adopted is None or _isLength(adopted)):
            return None
        etag, lastModified = data.get("etag"), data.get("lastModified")
        if not all(value is None or isHeaderValue(value) for value in (etag, lastModified)):
            return None  # sent back in If-Range: it must be a header value
        if not isinstance(done, list):
            return None
        ranges: list[Range] = []
        for item in done:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(_isLength(n) for n in item)
                or item[0] > item[1]
                or (size is not None and item[1] > size)
            ):
                return None
            ranges.append((item[0], item[1]))

        def text(name: str) -> Optional[str]:
            value = data.get(name)
            return value if isinstance(value, str) else None

        return cls(
            url=url,
            finalUrl=text("finalUrl") or url,
            size=size,
            etag=etag,
            lastModified=lastModified,
            done=mergeRanges(ranges),
            rangesSupported=bool(data.get("rangesSupported")),
            checksum=text("checksum"),
            adopted=adopted,
        )

    def save(self, path: Path) -> None:
        """
        Write the state to C{path} atomically (a temporary file, then a
        rename), so a crash leaves the old state or the new one.  On a full
        disk, which has no room for the temporary file, the state is
        written over the old one in place, if it fits in its space: the
        bytes a download wrote before the disk filled count for its resume.

        @raise OSError: the state could not be written.
        """
        data = (json.dumps(self.toJSON(), indent=2) + "\n").encode("utf-8")
        try:
            writeAtomically(path, data, mode=0o600)
        except OSError as e:
            # Padded with spaces (JSON allows them): a crash leaves the old
            # state or the new one, whole.
            if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not rewriteInPlace(path, data, filler=b" "):
                raise


def loadState(path: Path) -> Optional[DownloadState]:
    """
    The state in C{path}, or L{None} when there is none or it cannot be
    read (a damaged state file means starting over, never a crash).
    """
    try:
        data = json.loads(readSmallFile(path, MAX_STATE_FILE, own=True).decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warn("ignoring unreadable download state {path}: {error}", path=visibleText(str(path)), error=visibleText(str(e)))
        return None
    except RecursionError:
        log.warn("ignoring unreadable download state {path}: nested too deeply", path=visibleText(str(path)))
        return None
    state = DownloadState.fromJSON(data)
    if state is None:
        log.warn("ignoring download state {path}: not a state file this version reads", path=visibleText(str(path)))
    return state
