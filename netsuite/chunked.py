"""
A decoder of C{chunked} message bodies (RFC 9112, section 7.1), for the web
server's uploads, the proxy (uploads and answers) and the downloader.

It accepts exactly what Twisted's C{_ChunkedTransferDecoder} accepts, with
the same results, except that it refuses at once what Twisted would wait
on until a timeout: a line that ends in a bare LF (only CRLF ends a line),
a chunk size line that already holds a character it cannot hold, a chunk
not followed by CRLF, and, given a limit, chunk sizes that add up to more
(a 13-digit chunk size is refused on its line, not after that many bytes).

It reads every chunk of a read in one loop and gives them on as one piece:
Twisted's decoder gives each chunk on its own, about 5 microseconds of CPU
a chunk, so a peer sending 1-byte chunks held a CPU with about 1 MB/s.
"""

from __future__ import annotations

import re
from typing import Callable, NoReturn

try:
    # The errors Twisted's HTTP server and client catch from a decoder.
    from twisted.web.http import _DataLoss, _MalformedChunkedDataError as MalformedChunkedBody
except ImportError:  # moved in a later Twisted

    class MalformedChunkedBody(Exception):  # type: ignore[no-redef]
        """
        A chunked body that cannot be read.
        """

    class _DataLoss(Exception):  # type: ignore[no-redef]
        """
        A chunked body that ended before its last chunk.
        """


__all__ = ["ChunkedDecoder", "MalformedChunkedBody", "MAX_SIZE_LINE", "MAX_TRAILER"]

#: The longest chunk size line, without its CRLF, plus one (Twisted's).
MAX_SIZE_LINE = 1024

#: The most bytes of trailer lines, with their CRLFs (Twisted's).
MAX_TRAILER = 64 * 1024

# The characters of a chunk extension Twisted takes (RFC 9112, 7.1.1):
# tab, visible ASCII but a backslash, and every byte from 0x80.
_EXTENSION = rb"\t\x20-\x5b\x5d-\x7e\x80-\xff"
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:;[%s]*)?" % _EXTENSION)
# A whole size line with its CRLF, short enough to need no length check.
_WHOLE_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[%s]{0,512})?\r\n" % _EXTENSION).match
# The start of a size line whose end has not come yet.
_SIZE_START = re.compile(rb"(?:[0-9A-Fa-f]+(?:;[%s]*)?)?\r?" % _EXTENSION)

_SIZE, _DATA, _CRLF, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """
    Reads a C{chunked} body given in any pieces, and gives on the data of
    its chunks and then the bytes after its end.

    @ivar dataCallback: called with the data of the chunks read from each
        piece given to L{dataReceived}, as one C{bytes}, before anything
        else that piece brings.
    @ivar finishCallback: called once, after the last chunk and trailer,
        with the bytes that came after them in the same piece.
    @ivar problem: why the body was refused, once it was (the message of
        the L{MalformedChunkedBody} raised).
    @ivar tooLarge: whether it was refused for the limit.
    """

    problem = ""
    tooLarge = False

    def __init__(
        self,
        dataCallback: Callable[[bytes], None],
        finishCallback: Callable[[bytes], None],
        limit: int | None = None,
    ) -> None:
        """
        @param limit: the most bytes the chunk sizes may add up to, or
            L{None} for no limit.
        """
        self.dataCallback = dataCallback
        self.finishCallback = finishCallback
        self._limit = limit
        self._declared = 0
        self._state = _SIZE
        self._remaining = 0  # of the chunk being read
        self._held = b""  # the start of a size line (or of a CRLF) being read
        self._trailerBytes = 0  # of the trailer lines read
        self._lineBytes = 0  # of the trailer line being read
        self._lastCR = False  # whether that line's last byte so far is CR

    @property
    def finished(self) -> bool:
        """
        Whether the last chunk and the trailer have been read.
        """
        return self._state == _DONE

    def dataReceived(self, data: bytes) -> None:
        """
        Read the next piece of the body.

        @raise MalformedChunkedBody: when the body cannot be read
            (after giving on the data of the chunks before the fault).
        @raise RuntimeError: after the end of the body.
        """
        if self._state == _DONE:
            raise RuntimeError("ChunkedDecoder.dataReceived called after the end of the body")
        if self._held:
            data = self._held + data
            self._held = b""
        pieces: list[bytes] = []
        try:
            rest = self._read(data, pieces)
        finally:
            if pieces:
                self.dataCallback(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        if rest is not None:
            self.finishCallback(rest)

    def _read(self, data: bytes, pieces: list[bytes]) -> bytes | None:
        # Reads all of data; what it holds of the body goes to pieces.
        # Returns the bytes after the end of the body once it ends there.
        end = len(data)
        pos = 0
        state = self._state
        remaining = self._remaining
        limit = self._limit
        try:
            while pos < end:
                if state == _DATA:
                    stop = pos + remaining
                    if stop >= end:
                        pieces.append(data if pos == 0 else data[pos:])
                        remaining = stop - end
                        if not remaining:
                            state = _CRLF
                        return None
                    pieces.append(data[pos:stop])
                    pos = stop
                    state = _CRLF
                if state == _CRLF:
                    if data.startswith(b"\r\n", pos):
                        pos += 2
                        state = _SIZE
                    elif data[pos] != 13 or (pos + 1 < end and data[pos + 1] != 10):
                        self._fail("a chunk of the chunked body does not end with CRLF")
                    else:
                        self._held = data[pos:]
                        return None
                    if pos == end:
                        return None
                if state == _SIZE:
                    line = _WHOLE_SIZE_LINE(data, pos)
                    if line is not None:  # the common case, in one step
                        pos = line.end()
                    else:
                        line = self._sizeLine(data, pos)
                        if line is None:
                            return None
                        pos = line.end() + 2
                    remaining = int(line[1], 16)
                    if limit is not None:
                        self._declared += remaining
                        if self._declared > limit:
                            self.tooLarge = True
                            self._fail(f"request body over {limit} bytes")
                    if remaining:
                        state = _DATA
                        continue
                    state = _TRAILER
                if state == _TRAILER:
                    rest = self._readTrailer(data, pos)
                    if rest is not None:
                        state = _DONE
                    return rest
        finally:
            self._state = state
            self._remaining = remaining
        return None

    def _sizeLine(self, data: bytes, pos: int) -> re.Match[bytes] | None:
        # The size line at pos (its match, without the CRLF); or None, and
        # the line held, when its end has not come yet.
        lf = data.find(b"\n", pos, pos + MAX_SIZE_LINE + 1)
        if lf < 0:
            if len(data) - pos > MAX_SIZE_LINE or _SIZE_START.fullmatch(data, pos) is None:
                self._fail("malformed chunk size line in the chunked body")
            self._held = data[pos:]
            return None
        if lf == pos or data[lf - 1] != 13:
            self._fail("a line of the chunked body ends in a bare LF")
        line = _SIZE_LINE.fullmatch(data, pos, lf - 1)
        if line is None:
            self._fail("malformed chunk size line in the chunked body")
        return line

    def _readTrailer(self, data: bytes, pos: int) -> bytes | None:
        # Trailer lines are counted and dropped, as Twisted drops them; none
        # is held, so a long one sent a byte at a time costs no copies.
        end = len(data)
        while pos < end:
            lf = data.find(b"\n", pos)
            if lf < 0:
                self._lineBytes += end - pos
                self._lastCR = data[-1] == 13
                # Its CRLF to come, as Twisted counts it.
                if self._trailerBytes + self._lineBytes + (1 if self._lastCR else 2) > MAX_TRAILER:
                    self._fail("the trailer of the chunked body is too long")
                return None
            if not (data[lf - 1] == 13 if lf > pos else self._lastCR):
                self._fail("a line of the chunked body ends in a bare LF")
            length = self._lineBytes + lf + 1 - pos
            self._lineBytes = 0
            self._lastCR = False
            if length == 2:
                return data[lf + 1 :]
            self._trailerBytes += length
            if self._trailerBytes > MAX_TRAILER:
                self._fail("the trailer of the chunked body is too long")
            pos = lf + 1
        return None

    def _fail(self, problem: str) -> NoReturn:
        self.problem = problem
        raise MalformedChunkedBody(problem)

    def noMoreData(self) -> None:
        """
        The body's connection ended.

        @raise _DataLoss: unless the body ended before.
        """
        if self._state != _DONE:
            raise _DataLoss("the connection ended before the end of the chunked body")
