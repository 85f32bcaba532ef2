"""
netsuite's parallel downloader: the engine (L{Downloader}), its command
line (C{netsuite-get}) and the download service.

    from netsuite.download import Downloader
    d = Downloader(reactor).download("https://example.com/big.iso", "downloads")
"""

from .engine import DownloadRequest, DownloadResult, Downloader, DownloadSettings, Job
from .errors import (
    BadURL,
    ChecksumMismatch,
    ConnectionFailed,
    DownloadError,
    DownloadTimeout,
    HTTPStatusError,
    LocalFileError,
    RedirectError,
    RemoteChanged,
    TooLarge,
)
from .values import parseChecksum, parseSize

__all__ = [
    "BadURL",
    "ChecksumMismatch",
    "ConnectionFailed",
    "DownloadError",
    "DownloadRequest",
    "DownloadResult",
    "DownloadSettings",
    "DownloadTimeout",
    "Downloader",
    "HTTPStatusError",
    "Job",
    "LocalFileError",
    "RedirectError",
    "RemoteChanged",
    "TooLarge",
    "parseChecksum",
    "parseSize",
]
