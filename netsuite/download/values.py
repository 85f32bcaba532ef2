"""
Parsing the values a user gives the downloader: sizes, checksums, host
names and which headers are the downloader's own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

import idna
from twisted.internet.abstract import isIPAddress

from netsuite.proxyrules import MAX_LABEL, hostNameProblem
from netsuite.text import shortened

_SIZE = re.compile(r"^\s*([0-9]+)(?:\.([0-9]+))?\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}

#: The largest size L{parseSize} gives, in bytes: the largest file offset.
MAX_SIZE = 2**63 - 1

#: The longest URL a download may have, in bytes of UTF-8 (netsuite-get
#: and the download service).
MAX_URL = 8192

#: Headers the downloader sets itself (or, for C{Accept-Encoding}, keeps
#: to C{identity}, so that nothing is decompressed); a user's value would
#: break it.
RESERVED_HEADERS = frozenset(
    [
        "host",
        "range",
        "if-range",
        "accept-encoding",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
    ]
)

#: The digests a checksum may name, by the names users write.
ALGORITHMS = {
    "sha256": "sha256",
    "sha-256": "sha256",
    "sha512": "sha512",
    "sha-512": "sha512",
    "sha384": "sha384",
    "sha-384": "sha384",
    "sha1": "sha1",
    "sha-1": "sha1",
    "md5": "md5",
}


def urlTooLong(url: str) -> bool:
    """
    Whether C{url} is longer than L{MAX_URL} bytes in UTF-8 (a lone
    surrogate counting as the 3 bytes it would take).
    """
    return len(url) > MAX_URL or len(url.encode("utf-8", "surrogatepass")) > MAX_URL


def parseSize(text: str) -> int:
    """
    A size such as C{500}, C{64K}, C{4M}, C{1.5G} (binary units: 1K is
    1024 bytes) as a number of bytes, exactly (a fraction of a byte is
    dropped).

    @raise ValueError: with a readable sentence when C{text} is not a size,
        or is one over L{MAX_SIZE}.
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{shortened(text)} is not a size (examples: 500, 64K, 4M, 1G)")
    whole, fraction, unit = match.groups()
    scale = _UNITS[unit.lower()]
    whole = whole.lstrip("0")
    # Integers only, so nothing rounds or overflows.  Past 19 digits it is
    # too large; past its 40th digit a fraction cannot change the whole
    # bytes of up to 2**40 times it (k/2**40 has at most 40 decimals).
    size = None
    if len(whole) <= len(str(MAX_SIZE)):
        size = int(whole or "0") * scale
        if fraction:
            fraction = fraction[:40]
            size += int(fraction) * scale // 10 ** len(fraction)
    if size is None or size > MAX_SIZE:
        raise ValueError(f"{shortened(text)} is too large: the most is {MAX_SIZE // 2**40}T")
    return size


def parseChecksum(text: str) -> tuple[str, str]:
    """
    C{"sha256=HEX"} (or aria2's C{"sha-256=HEX"}) as C{(hashlib name,
    lower-case hex digest)}.

    @raise ValueError: with a readable sentence when C{text} is not a
        checksum of a known algorithm with a digest of the right length.
    """
    name, sep, digest = text.strip().partition("=")
    algorithm = ALGORITHMS.get(name.strip().lower())
    if not sep or algorithm is None:
        known = ", ".join(sorted({k for k in ALGORITHMS if "-" not in k}))
        raise ValueError(f"{shortened(text)} is not a checksum: write ALGORITHM=HEX, with ALGORITHM one of {known}")
    digest = digest.strip().lower()
    size = hashlib.new(algorithm).digest_size * 2
    if len(digest) != size or not re.fullmatch(r"[0-9a-f]+", digest):
        raise ValueError(f"{shortened(text)} is not a checksum: a {algorithm} digest is {size} hexadecimal digits")
    return algorithm, digest


#: A header name (RFC 9110 5.1: a token); use with C{fullmatch}.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


# Lone surrogates that are not bytes Python could not decode (those arrive
# as U+DC80..U+DCFF, "surrogateescape", and are sent as the bytes they were).
_NOT_TEXT = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def isText(text: str) -> bool:
    """
    Whether C{text} is text: no lone surrogate (such as a JSON C{"\\ud800"}
    makes) other than those standing for bytes that were not UTF-8.
    """
    return _NOT_TEXT.search(text) is None


#: The URL Standard's forbidden domain code points: a host holding one is
#: refused, also when UTS #46 maps a full-width form to it (＜, ％, a
#: full-width space), rather than sent to a resolver or a proxy.
_FORBIDDEN_IN_HOST = re.compile(r"[\x00-\x20\x7f#%/:<>?@\[\\\]^|]")


def unreadableURLReason(error: ValueError) -> str:
    """
    Why Python's C{urlsplit} could not read a URL (C{error}, what it
    raised), in words.
    """
    text = str(error)
    if "NFKC" in text:
        return "its host holds a character that Unicode normalization (NFKC) makes one of / ? # @ :"
    if not text:
        return "it cannot be parsed"
    return text if len(text) <= 100 else text[:100] + "..."


def asciiHostName(host: str) -> str:
    """
    C{host} (a URL's host, without brackets) as a resolver is given it: a
    name that is not ASCII as browsers and Twisted convert it, by IDNA 2008
    with the UTS #46 mapping, non-transitional (so C{faß.de} is
    C{xn--fa-hia.de}, not C{fass.de}); see L{_idnaName}.

    @raise ValueError: with a readable phrase when no resolver can take it:
        a name IDNA refuses, or one L{hostNameProblem} refuses.
    """
    if ":" in host:  # an IPv6 literal
        if "%" in host:
            raise ValueError("an IPv6 zone ID (the part after %25) cannot be used in a URL")
        return host
    undecoded = bytes(ord(c) - 0xDC00 for c in host if "\udc80" <= c <= "\udcff")
    if undecoded:
        shown = " ".join(f"0x{b:02X}" for b in undecoded[:8])
        raise ValueError(f"the host name holds bytes that are not UTF-8 ({shown})")
    name = host if host.isascii() else _idnaName(host)
    forbidden = _FORBIDDEN_IN_HOST.search(name)
    if forbidden is not None:
        became = "" if name == host else f" is {name!r} once mapped by UTS #46, and"
        raise ValueError(f"the host name {host!r}{became} holds {forbidden.group()!r}, which no host name may hold")
    problem = hostNameProblem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


def bracketedHostProblem(netloc: str) -> Optional[str]:
    """
    Why the host of C{netloc} (a URL's C{[user@]host[:port]}) cannot be
    connected to when it is in brackets but no IPv6 address, in words; or
    L{None}.  Python's C{urlsplit} takes an IPvFuture literal
    (C{[v1.x]}, RFC 3986 3.2.2) and gives its text as the host, which a
    resolver would look up as the name C{v1.x}.
    """
    hostport = netloc.rpartition("@")[2]
    if not hostport.startswith("["):
        return None
    inside = hostport[1:].partition("]")[0]
    if inside[:1] not in ("v", "V"):  # IPvFuture's mark (it may hold colons too)
        try:
            ipaddress.IPv6Address(inside)
            return None
        except ValueError:
            pass
    return f"[{inside}] is not an IPv6 address (an IPvFuture address cannot be connected to)"


def _idnaName(host: str) -> str:
    """
    The non-ASCII name C{host} mapped by UTS #46 (capitals, full-width
    forms, ideographic full stops), non-transitional, and each label that
    is still not ASCII made its IDNA 2008 A-label.  ASCII labels are kept
    as they are, as ASCII names are: L{directHostProblem} judges them.

    @raise ValueError: with a readable phrase when IDNA refuses the name.
    """
    try:
        labels = idna.uts46_remap(host, std3_rules=False, transitional=False).split(".")
        for i, label in enumerate(labels):
            if label.isascii():
                continue
            # An A-label is longer than its label; idna's checks take time
            # in the square of a label's length.
            if len("xn--") + len(label) > MAX_LABEL:
                raise ValueError(f"the host name has a label longer than {MAX_LABEL} characters")
            labels[i] = idna.alabel(label).decode("ascii")
    except idna.IDNAError as e:
        reason = str(e)
        if len(reason) > 100:
            reason = reason[:100] + "..."
        raise ValueError(f"the host name is not valid IDNA ({reason})") from None
    return ".".join(labels)


def directHostProblem(host: str) -> Optional[str]:
    """
    Why Twisted cannot connect to C{host} (a host as L{asciiHostName} gives
    it) without a proxy, in words; or L{None}.  Twisted's C{HostnameEndpoint}
    takes only names IDNA 2008 allows, so C{a_b.com}, C{-a-.com} or C{xn--}
    fail when the connection is tried; an HTTP proxy can still reach them.
    """
    problem = _idnaProblem(host)
    if problem is None:
        return None
    return f"{problem}, so Twisted cannot connect to it"


def fetchHostProblem(url: str, proxied: bool = False, checksCertificates: bool = True) -> Optional[str]:
    """
    Why C{url} (as L{splitURL<netsuite.download.engine.splitURL>} gives it)
    cannot be fetched, in words; or L{None}.  Without a proxy, its host
    must be one Twisted can connect to (L{directHostProblem}); through one
    (C{proxied}), the proxy resolves it, but over C{https} with
    certificates checked it must be one a certificate can be checked for.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not proxied:
        return directHostProblem(host)
    if parts.scheme == "https" and checksCertificates:
        return certificateHostProblem(host)
    return None


def certificateHostProblem(host: str) -> Optional[str]:
    """
    Why no certificate can be checked for C{host} (a host as
    L{asciiHostName} gives it), in words; or L{None}.  Twisted's TLS takes
    only names IDNA 2008 allows, also when a proxy resolves the name.
    """
    problem = _idnaProblem(host)
    if problem is None:
        return None
    return f"{problem}, so no certificate can be checked for it (--insecure checks none)"


def _idnaProblem(host: str) -> Optional[str]:
    if ":" in host or isIPAddress(host):
        return None
    try:
        idna.decode(host)
    except (UnicodeError, ValueError) as e:
        return f"the host name {host!r} is not a valid IDNA name ({e})"
    return None


def asciiProxyURL(proxy: str) -> str:
    """
    C{proxy}, an HTTP proxy's C{[http://][user:password@]host[:port]} URL,
    with its host as L{asciiHostName} gives it.  Twisted resolves a
    non-ASCII name with the IDNA 2003 codec, or refuses it (full-width
    letters): the proxy's host is converted here as a download's is.  A
    URL without a host that can be read is given back as it is.

    @raise ValueError: with a readable phrase when the proxy's host is one
        L{asciiHostName} refuses (an IPv6 zone ID, an empty label, a name
        IDNA refuses) or L{directHostProblem} reports: the proxy is
        connected to directly.
    """
    try:
        parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        host, port = parts.hostname, parts.port
    except ValueError:
        return proxy
    if not host:
        return proxy
    bracketed = bracketedHostProblem(parts.netloc)
    if bracketed is not None:
        raise ValueError(bracketed)
    name = asciiHostName(host)
    problem = directHostProblem(name)
    if problem is not None:
        raise ValueError(problem)
    if parts.netloc.isascii():
        return proxy
    # Built anew, as in splitURL: the host urlsplit gives is lower-cased.
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = userinfo + at + (f"[{name}]" if ":" in name else name) + ("" if port is None else f":{port}")
    return urlunsplit(parts._replace(netloc=netloc))


def slashesAsBrowsersRead(text: str) -> str:
    """
    C{text}, an http or https URL or a reference without a scheme (relative
    to one), with each backslash before its query or fragment read as a
    slash, as the URL Standard (and so browsers) read it:
    C{http://a.example\\@b.example/} is a.example's, and
    C{http:\\\\b.example\\x} is b.example's.  Any other URL is given back
    as it is.
    """
    scheme = _SCHEME.match(text)
    if scheme is not None and scheme.group().lower() not in ("http:", "https:"):
        return text
    end = _QUERY_OR_FRAGMENT.search(text)
    cut = end.start() if end is not None else len(text)
    return text[:cut].replace("\\", "/") + text[cut:]


def asFetched(url: str) -> str:
    """
    C{url} as it is fetched: without white space around it, backslashes
    before its query read as slashes (L{slashesAsBrowsersRead}).
    """
    return slashesAsBrowsersRead(url.strip())


_QUERY_OR_FRAGMENT = re.compile(r"[?#]")

#: A URL's scheme and its colon (RFC 3986 3.1).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def redact(url: str) -> str:
    """
    C{url} with any password replaced by C{***}, for messages and events.
    """
    # Backslashes as the URL is fetched: http://a\\@b/ is a's, not b's.
    url = slashesAsBrowsersRead(url)
    if "//" not in url and "@" in url:
        # No scheme (a proxy given as user:password@host:port, as curl
        # takes it): urlsplit() would read the user as the scheme.
        userinfo, at, rest = url.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        return f"{user}:***@{rest}" if colon else url
    try:
        # urlsplit() drops tabs and line breaks, which the message is about.
        if any(c in url for c in "\t\r\n"):
            raise ValueError("cut by hand")
        parts = urlsplit(url)
    except ValueError:  # unparseable (a bad IPv6 literal): cut by hand
        scheme, slashes, rest = url.partition("//")
        end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
        userinfo, at, hostport = rest[:end].rpartition("@")
        if not slashes or not at or ":" not in userinfo:
            return url
        return f"{scheme}//{userinfo.split(':', 1)[0]}:***@{hostport}{rest[end:]}"
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
