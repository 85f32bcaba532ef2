"""
What can go wrong with a download.

Every error's C{str()} is one sentence a user can read; C{retryable} says
whether the engine tries again (connection trouble, timeouts, 5xx and 429)
or gives up at once (other 4xx, refused redirects, checksum mismatches).
"""

from __future__ import annotations

from typing import Optional

from ..text import visibleText


def printable(text: str) -> str:
    """
    C{text} with every character L{visible} refuses (controls, zero-width
    and bidi-override characters among them) written as an escape
    (C{\\x1b}, C{\\u202e}): a server's words in a message must not move a
    terminal's cursor, set its title or reorder what it shows.
    """
    return visibleText(text)


class DownloadError(Exception):
    """
    A download failed; C{str(error)} is one readable sentence.

    @ivar retryable: whether trying again may help.
    @ivar retryAfter: seconds the server asked us to wait, or L{None}.
    """

    retryable = False
    retryAfter: Optional[float] = None

    def __init__(self, message: str) -> None:
        message = printable(message)  # it may quote what a server sent
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadURL(DownloadError):
    """
    The URL is not one netsuite fetches: not http or https, no host, or
    unreadable.
    """


class HTTPStatusError(DownloadError):
    """
    The server answered with an error status.  5xx, 408 and 429 are worth
    retrying; the rest of 4xx never are.
    """

    def __init__(self, message: str, status: int, retryAfter: Optional[float] = None) -> None:
        super().__init__(message)
        self.status = status
        self.retryAfter = retryAfter
        self.retryable = status >= 500 or status in (408, 429)


class RedirectError(DownloadError):
    """
    Too many redirects, or a redirect to a scheme other than http/https.
    """


class TooLarge(DownloadError):
    """
    The file is bigger than the size cap.
    """


class ChecksumMismatch(DownloadError):
    """
    The finished file does not have the expected digest.
    """


class DownloadTimeout(DownloadError):
    """
    Connecting, waiting for the response head, or waiting for body bytes took
    too long (retryable), or the whole download took longer than allowed
    (not retryable).
    """

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ConnectionFailed(DownloadError):
    """
    The connection could not be made or broke before the body was complete.
    """

    retryable = True


class LocalFileError(DownloadError):
    """
    The file could not be written (disk full, permissions, ...).
    """


class RemoteChanged(DownloadError):
    """
    The remote file kept changing while it was downloaded.
    """
