"""
netsuite's JSON API (mounted at C{/api}) and health check (C{/healthz}).

C{/api/echo} answers with what it was sent, C{/api/status} with the process's
version, uptime, listeners and per-service counters; later parts of netsuite
add their own sections to the status document (L{APIResource.addSection}) and
their own children under C{/api} (L{APIResource.putChild}).

Every response under C{/api}, errors included, is JSON in UTF-8: an error is
C{{"error": "<one sentence>", "status": <code>}}, sometimes with more fields
(C{"line"} and C{"column"} for malformed JSON, C{"allow"} for a 405).  Bad
input gets a 4xx, never a 500 or a traceback.

The echo handler reads C{request.content} itself, so the site should be built
with C{Site(root, parsePOSTFormSubmission=False)}: otherwise Twisted parses
form bodies into C{request.args} a second time, and answers a malformed
multipart body with its own plain-text 400 before this module sees it.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from datetime import datetime, timezone
from typing import Callable, Dict, List, Mapping, NoReturn, Optional, Tuple
from urllib.parse import parse_qs, quote_from_bytes, unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from netsuite.charsets import textCodec
from netsuite.stats import ServiceStats
from netsuite.status import StatusSource
from netsuite.text import shortened
from netsuite.web.pages import headOnly

__all__ = [
    "Answer",
    "APIError",
    "APIResource",
    "EchoResource",
    "HealthResource",
    "JSONResource",
    "StatusResource",
    "DEFAULT_MAX_BODY",
    "renderJSON",
]

#: Largest request body the echo handler reads, in bytes.
DEFAULT_MAX_BODY = 1024 * 1024

#: Bytes that stay as they are when a query string or form body is prepared
#: for L{parse_qs}: printable ASCII (C{%} escapes included).  Everything else
#: (raw UTF-8, control characters) is percent-encoded first, so that decoding
#: works on the bytes the client sent.
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*"'
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_PARAMETER = re.compile(rf"[ \t]*;[ \t]*(?:({_TOKEN})=({_TOKEN}|{_QUOTED}))?")
_QUOTED_PAIR = re.compile(r"\\(.)")
_TOKEN_AT = re.compile(_TOKEN)

#: A multipart boundary (RFC 2046, section 5.1.1).
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")

#: What follows C{--boundary} on a delimiter line: C{--} on the last one,
#: then optional white space (RFC 2046, section 5.1.1).
_DELIMITER_END = re.compile(rb"(--)?[ \t]*\r?(?:\n|\Z)")
#: The empty line that ends a part's headers.
_HEADERS_END = re.compile(rb"\n\r?\n")
#: A line break followed by white space: a folded header line.
_FOLDED = re.compile(rb"\r?\n(?=[ \t])")
#: Unfolded header lines, each ending with C{\\n} (RFC 5322, section 2.2).
_HEADER_LINES = re.compile(rb"(?:[!-9;-~]+:[^\n]*\n)*")
#: The header lines a multipart part is read by.
_PART_HEADER = re.compile(
    rb"^(content-(?:disposition|type|transfer-encoding)):([^\n]*)", re.I | re.M
)

#: Most parts a multipart body may have (Werkzeug, Starlette and Django
#: stop at 1000 too).
_MAX_PARTS = 1000
#: Most fields a form (or a query string) may have, as Django's
#: C{DATA_UPLOAD_MAX_NUMBER_FIELDS}: Python's parser held the reactor
#: 0.64 s for a 1 MiB form of 500,000 empty fields.
_MAX_FIELDS = 1000
#: Most parameters a header may have (every C{;} counts).
_MAX_PARAMETERS = 64

class APIError(Exception):
    """
    A request the API refuses, rendered as a JSON error body.

    @ivar code: the HTTP status code.
    @ivar message: one sentence saying what was wrong.
    @ivar extra: more fields for the error body.
    """

    def __init__(self, code: int, message: str, **extra: object) -> None:
        Exception.__init__(self, code, message)
        self.code = code
        self.message = message
        self.extra = extra

    def toJSON(self) -> Dict[str, object]:
        """
        The error body: C{{"error": message, "status": code, **extra}}.
        """
        return {"error": self.message, "status": self.code, **self.extra}


class Answer:
    """
    What a C{json_*} handler returns to answer with another status code
    than 200 (a C{201} for something created, say).

    @ivar code: the HTTP status code.
    @ivar value: the JSON-able body.
    """

    def __init__(self, code: int, value: object) -> None:
        self.code = code
        self.value = value


class EncodedJSON:
    """
    A body already encoded as JSON, for a handler to return (or to give
    L{Answer}) when it had to encode its parts anyway: it is sent as it is.

    @ivar data: the UTF-8 JSON text.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _dumps(value: object) -> bytes:
    """
    Encode C{value} as UTF-8 JSON.  Strings that cannot be UTF-8 (lone
    surrogates, which JSON input may contain as C{\\ud800}) are written as
    C{\\u} escapes instead.

    @raise ValueError: C{value} holds NaN or an infinity.
    @raise TypeError: C{value} is not JSON-able.
    @raise RecursionError: C{value} is nested too deeply to encode.
    """
    text = _ENCODER.encode(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, allow_nan=False).encode("ascii")


def _setHeaders(request: Request, contentType: bytes) -> None:
    request.setHeader(b"Content-Type", contentType)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-store")


def setJSONHeaders(request: Request) -> None:
    """
    Set the headers of the API's JSON answers on C{request}.
    """
    _setHeaders(request, b"application/json; charset=utf-8")


def renderJSON(request: Request, value: object, code: int = 200) -> bytes:
    """
    Answer C{request} with C{value} as JSON: set the status code and the
    API's headers, and return the body for a C{render} method to return.

    @param value: a JSON-able value (no NaN or infinities), or
        L{EncodedJSON}.
    """
    body = value.data if isinstance(value, EncodedJSON) else _dumps(value)
    request.setResponseCode(code)
    setJSONHeaders(request)
    return headOnly(request, body)


class JSONResource(Resource):
    """
    A resource answering in JSON.

    Subclasses define C{json_GET}, C{json_POST} ... taking the request and
    returning a JSON-able value (sent with a 200; L{EncodedJSON} when it is
    encoded already), an L{Answer}, or a
    L{Deferred} firing with one of them; or raising (or failing with)
    L{APIError}.
    HEAD is answered like GET, without a body; any other method gets a 405
    JSON error with an C{Allow} header.  An unexpected exception is logged
    and answered with a JSON 500 that shows no traceback.  A path below it
    that no child (L{putChild}) takes is a JSON 404.
    """

    log = Logger()

    def getChild(self, path: bytes, request: Request) -> IResource:
        return _notFound(request)

    def checkHead(self, request: Request, length: Optional[int]) -> None:
        """
        Refuse C{request} from its head alone, before its body (of
        C{length} bytes; L{None}: chunked) is read, and before a client
        that asked is told to send it (C{100 Continue}), as nginx answers
        a 401 or a 413: a subclass raises L{APIError} (after setting any
        response header it needs, such as C{WWW-Authenticate}).  netsuite's
        site calls it for a request with a body; its method, URI and path
        are set.  By default nothing is refused here.
        """

    def _allowed(self) -> List[str]:
        names = [name[5:] for name in dir(self) if name.startswith("json_")]
        if "GET" in names and "HEAD" not in names:
            names.append("HEAD")
        return sorted(names)

    def render(self, request: Request) -> bytes:
        """
        Dispatch to the C{json_<METHOD>} method and render its answer.
        """
        method = request.method.decode("latin-1")
        if method == "HEAD" and not hasattr(self, "json_HEAD"):
            method = "GET"
        handler = getattr(self, "json_" + method, None) if method.isalpha() else None
        try:
            if handler is None:
                allowed = self._allowed()
                request.setHeader(b"Allow", ", ".join(allowed).encode("ascii"))
                raise APIError(
                    405,
                    f"method {request.method.decode('latin-1')!r} is not allowed here; "
                    f"use {', '.join(allowed)}",
                    allow=allowed,
                )
            value = handler(request)
        except Exception:
            return self._renderFailure(request, Failure())
        if isinstance(value, Deferred):
            value.addCallbacks(self._renderLater, self._renderLater, (request,), None, (request,))
            return NOT_DONE_YET
        return self._renderValue(request, value)

    def _renderValue(self, request: Request, value: object) -> bytes:
        try:
            if isinstance(value, Answer):
                return renderJSON(request, value.value, value.code)
            return renderJSON(request, value)
        except Exception:
            return self._renderFailure(request, Failure())

    def _renderFailure(self, request: Request, failure: Failure) -> bytes:
        if failure.check(APIError):
            return renderJSON(request, failure.value.toJSON(), failure.value.code)
        if failure.check(RecursionError):
            # Only a value nested too deeply to encode gets here.
            error = APIError(400, "JSON nested too deeply")
            return renderJSON(request, error.toJSON(), error.code)
        self.log.failure(
            "{method} {uri!r} failed", failure, method=request.method.decode("latin-1"), uri=request.uri
        )
        return renderJSON(request, APIError(500, "internal error").toJSON(), 500)

    def _renderLater(self, result: object, request: Request) -> None:
        """
        Send the answer of a handler that returned a L{Deferred}, unless the
        client has gone meanwhile; should sending it fail, log that and
        close the connection.
        """
        if isinstance(result, Failure):
            body = self._renderFailure(request, result)
        else:
            body = self._renderValue(request, result)
        if getattr(request, "_disconnected", False) or request.finished:
            return
        try:
            request.write(body)
            request.finish()
        except Exception:
            # Never a connection left waiting for an answer that is not coming.
            self.log.failure(
                "{method} {uri!r}: the answer could not be sent", method=request.method.decode("latin-1"), uri=request.uri
            )
            request.loseConnection()


class _NotFound(JSONResource):
    """
    Answers every method with a JSON 404.
    """

    def __init__(self, path: bytes) -> None:
        JSONResource.__init__(self)
        self.path = path

    def render(self, request: Request) -> bytes:
        path = unquote_to_bytes(self.path).decode("utf-8", "replace")
        return renderJSON(
            request, APIError(404, f"no API endpoint at {shortened(path)}").toJSON(), 404
        )

    def getChild(self, path: bytes, request: Request) -> IResource:
        return self


def _notFound(request: Request) -> _NotFound:
    return _NotFound(request.path)


# Parsing request bodies.


def _parseParameters(value: str, position: int, header: str) -> Dict[str, str]:
    """
    Parse the C{;name=value} parameters of a header from C{position} on
    (RFC 9110, section 5.6.6).

    @return: the parameters by lower-case name.
    @raise APIError: 400 when they are malformed, a name repeats, or there
        are more than L{_MAX_PARAMETERS}.
    """
    params: Dict[str, str] = {}
    count = 0
    while position < len(value):
        count += 1
        if count > _MAX_PARAMETERS:
            raise APIError(400, f"{header} has more than {_MAX_PARAMETERS} parameters")
        match = _PARAMETER.match(value, position)
        if match is None or match.end() == position:
            raise APIError(400, f"malformed {header} {shortened(value)}")
        position = match.end()
        name, raw = match.group(1), match.group(2)
        if name is None:
            continue
        name = name.lower()
        if name in params:
            raise APIError(400, f"{header} {shortened(value)} repeats the parameter {name!r}")
        if raw.startswith('"'):
            # "".join(split) unescapes: sub() with a template runs Python code per match.
            raw = "".join(_QUOTED_PAIR.split(raw[1:-1]))
        params[name] = raw
    return params


def _parseContentType(value: str) -> Tuple[str, Dict[str, str]]:
    """
    Parse a C{Content-Type} value (RFC 9110, section 8.3).

    @return: the lower-case media type and its parameters (lower-case names).
    @raise APIError: 400 when C{value} is not a media type.
    """
    value = value.strip(" \t")
    match = _MEDIA_TYPE.match(value)
    if match is None:
        raise APIError(400, f"malformed Content-Type {shortened(value)}")
    mediaType = f"{match.group(1)}/{match.group(2)}".lower()
    return mediaType, _parseParameters(value, match.end(), "Content-Type")


def _checkCharset(charset: str) -> str:
    """
    @return: the name of C{charset}'s codec, when it is one of Python's and
        decodes text, replacing what is not valid (as the form parsers do;
        see L{textCodec}).
    @raise APIError: 400 when it is not: an unknown name, a codec that is
        not a text encoding, or one such as C{idna} or C{punycode} that
        fails even when told to replace.
    """
    name = textCodec(charset)
    if name is None:
        raise APIError(400, f"unsupported charset {shortened(charset)}")
    return name


def _decodeText(data: bytes, charset: str) -> str:
    """
    C{data} decoded with the codec L{_checkCharset} gave, invalid bytes
    replaced.

    @raise APIError: 400 if the codec fails all the same.
    """
    try:
        return data.decode(charset, "replace")
    except ValueError:
        raise APIError(400, f"cannot decode text as {charset!r}") from None


def _rejectConstant(name: str) -> NoReturn:
    raise APIError(400, f"malformed JSON: {name} is not a JSON value")


def _parseFloat(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise APIError(400, f"JSON number out of range: {text[:40]}")
    return value


def _parseJSON(body: bytes, params: Mapping[str, str]) -> object:
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise APIError(400, f"JSON must be UTF-8, not {charset!r}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise APIError(
            400,
            f"body is not valid UTF-8: byte 0x{body[e.start]:02x} at offset {e.start}",
        ) from None
    try:
        return json.loads(text, parse_float=_parseFloat, parse_constant=_rejectConstant)
    except json.JSONDecodeError as e:
        raise APIError(
            400,
            f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}",
            line=e.lineno,
            column=e.colno,
        ) from None
    except RecursionError:
        raise APIError(400, "malformed JSON: nested too deeply") from None
    except ValueError:
        # int() refuses integers with more than sys.get_int_max_str_digits()
        # digits.
        raise APIError(400, "JSON number too large") from None


def _parseQuery(data: bytes, charset: str = "utf-8") -> Dict[str, List[str]]:
    """
    Parse C{application/x-www-form-urlencoded} bytes (a query string or a
    form body) into name -> values, decoding with C{charset}; bytes that are
    not valid in it are replaced with U+FFFD.

    @raise APIError: 413 for more than L{_MAX_FIELDS} fields.
    """
    if not data:
        return {}
    if data.count(b"&") >= _MAX_FIELDS:
        raise APIError(413, f"form has more than {_MAX_FIELDS} fields")
    try:
        return parse_qs(
            quote_from_bytes(data, safe=_URL_SAFE),
            keep_blank_values=True,
            encoding=charset,
            errors="replace",
        )
    except ValueError:
        raise APIError(400, f"cannot decode text as {charset!r}") from None


def _parseDisposition(value: bytes | None) -> Tuple[str, str | None]:
    """
    Read the field name and file name from a multipart part's
    C{Content-Disposition} (RFC 7578, section 4.2).  Non-ASCII bytes in it
    are read as UTF-8, as browsers send them; C{filename*} (RFC 8187) is
    honoured too.

    @return: the name, and the file name or L{None}.
    @raise APIError: 400 when there is no name or the header is malformed.
    """
    if value is None:
        raise APIError(400, "multipart part without a Content-Disposition")
    # Handle the bytes as Latin-1 (one character per byte) until the end.
    text = value.decode("latin-1")
    match = _TOKEN_AT.match(text)
    if match is None:
        raise APIError(400, "malformed Content-Disposition in a multipart part")
    params = _parseParameters(text, match.end(), "Content-Disposition")

    def utf8(raw: str) -> str:
        return raw.encode("latin-1").decode("utf-8", "replace")

    if "name" not in params:
        raise APIError(400, "multipart part without a name")
    filename = params.get("filename")
    if filename is not None:
        filename = utf8(filename)
    extended = params.get("filename*")
    if extended is not None:
        charset, _, rest = extended.partition("'")
        _, _, encoded = rest.partition("'")
        try:
            filename = unquote_to_bytes(encoded).decode(
                _checkCharset(charset or "utf-8"), "replace"
            )
        except (APIError, ValueError):
            pass
    return utf8(params["name"]), filename


def _splitMultipart(body: bytes, boundary: bytes) -> List[bytes]:
    """
    The parts of a multipart body (RFC 2046, section 5.1.1), without the
    preamble, the epilogue, and the line breaks that belong to the
    delimiters.  Each byte of C{body} is looked at a bounded number of times.

    @raise APIError: 400 when the first or the last delimiter is missing;
        413 when there are more than L{_MAX_PARTS} parts.
    """
    delimiter = b"--" + boundary
    # Only at the start of a line (so "--B--B--B..." is one search, not one
    # turn of this loop per copy: 0.17 s a MiB).
    lineStart = b"\n" + delimiter
    parts: List[bytes] = []
    start = -1  # where the current part begins, after the first delimiter
    position = 0
    others = 0
    while True:
        if position == 0 and body.startswith(delimiter):
            found = 0
        else:
            found = body.find(lineStart, position)
            if found < 0:
                raise APIError(400, "malformed multipart body: boundaries not found")
            found += 1
        position = found + len(delimiter)
        end = _DELIMITER_END.match(body, position)
        if end is None:
            # A line that begins with the boundary but is not a delimiter:
            # RFC 2046 5.1.1 forbids it, and each costs a turn here.
            others += 1
            if others > _MAX_PARTS:
                raise APIError(400, "malformed multipart body: the boundary is inside its parts")
            continue
        if start >= 0:
            stop = found - 1
            if body[stop - 1 : stop] == b"\r":
                stop -= 1
            if len(parts) == _MAX_PARTS:
                raise APIError(413, f"multipart body has more than {_MAX_PARTS} parts")
            parts.append(body[start:stop])
        if end.group(1):
            if start < 0:
                raise APIError(400, "malformed multipart body: boundaries not found")
            return parts
        start = end.end()


def _splitPart(part: bytes) -> Tuple[Dict[str, bytes], bytes]:
    """
    Split a multipart part into its headers and its content.

    @return: the headers (lower-case name -> the first value, unfolded and
        stripped), and the content.
    @raise APIError: 400 when a header line is malformed.
    """
    if part.startswith((b"\r\n", b"\n")):
        block, content = b"", part[part.index(b"\n") + 1 :]
    else:
        end = _HEADERS_END.search(part)
        block, content = (part, b"") if end is None else (part[: end.start()], part[end.end() :])
    headers: Dict[str, bytes] = {}
    if not block:
        return headers, content
    block = _FOLDED.sub(b"", block) + b"\n"
    if _HEADER_LINES.fullmatch(block) is None:
        raise APIError(400, "malformed header line in a multipart part")
    for name, value in _PART_HEADER.findall(block):
        headers.setdefault(name.decode("ascii").lower(), value.strip(b" \t\r"))
    return headers, content


def _decodeTransfer(content: bytes, encoding: bytes | None, name: str) -> bytes:
    """
    Undo a part's C{Content-Transfer-Encoding}: C{base64} or
    C{quoted-printable}; anything else is taken as it is.

    @raise APIError: 400 for base64 that cannot be decoded.
    """
    encoding = (encoding or b"").lower()
    if encoding == b"base64":
        try:
            return binascii.a2b_base64(content)
        except binascii.Error:
            raise APIError(400, f"multipart part {shortened(name)} is not valid base64") from None
    if encoding == b"quoted-printable":
        return binascii.a2b_qp(content)
    return content


def _parseMultipart(body: bytes, params: Mapping[str, str]) -> Dict[str, List[object]]:
    """
    Parse a C{multipart/form-data} body (RFC 7578) into name -> values: a
    file is C{{"filename", "content_type", "size"}}, any other part its
    text.  The work is linear in the size of the body; nested multiparts
    are refused.

    @raise APIError: 400 when the body is malformed, 413 when it has more
        than L{_MAX_PARTS} parts.
    """
    boundary = params.get("boundary")
    if boundary is None:
        raise APIError(400, "multipart/form-data without a boundary")
    if _BOUNDARY.fullmatch(boundary) is None:
        raise APIError(400, f"malformed multipart boundary {shortened(boundary)}")
    fields: Dict[str, List[object]] = {}
    for part in _splitMultipart(body, boundary.encode("ascii")):
        headers, content = _splitPart(part)
        name, filename = _parseDisposition(headers.get("content-disposition"))
        mediaType, typeParams = "text/plain", {}
        contentType = headers.get("content-type")
        if contentType is not None:
            mediaType, typeParams = _parseContentType(contentType.decode("latin-1"))
        if mediaType.startswith("multipart/"):
            raise APIError(400, f"multipart part {shortened(name)} holds nested parts")
        content = _decodeTransfer(content, headers.get("content-transfer-encoding"), name)
        if filename is not None:
            value: object = {
                "filename": filename,
                "content_type": mediaType,
                "size": len(content),
            }
        else:
            value = _decodeText(content, _checkCharset(typeParams.get("charset", "utf-8")))
        fields.setdefault(name, []).append(value)
    return fields


def _isJSONType(mediaType: str) -> bool:
    return mediaType == "application/json" or (
        mediaType.startswith("application/") and mediaType.endswith("+json")
    )


def checkBodyLength(length: Optional[int], maxBody: int) -> None:
    """
    @raise APIError: 413 when C{length} (L{None}: not known yet) is over
        C{maxBody}.
    """
    if length is not None and length > maxBody:
        raise APIError(413, f"request body of {length} bytes is over the limit of {maxBody}")


def _readBody(request: Request, maxBody: int) -> bytes:
    content = request.content
    if content is None:
        return b""
    content.seek(0, 2)
    checkBodyLength(content.tell(), maxBody)
    content.seek(0)
    return content.read()


class EchoResource(JSONResource):
    """
    C{/api/echo}: answers C{GET}, C{HEAD} and C{POST} with what the request
    held, as C{{"method", "path", "query", "headers", "body"}}.

      - C{path}: the path, percent-decoded, as UTF-8 (bad bytes become
        U+FFFD); C{query}: name -> list of values, decoded the same way.
      - C{headers}: lower-case name -> value, values decoded as UTF-8 (bad
        bytes become U+FFFD).  A repeated header's values are joined with
        C{", "} (RFC 9110, section 5.3), except C{Cookie}, joined with
        C{"; "} (RFC 6265, section 5.4).
      - C{body}: L{None} for an empty body, whatever its type.  JSON
        (C{application/json} and C{application/*+json}, UTF-8 only) is
        parsed; C{application/x-www-form-urlencoded} and
        C{multipart/form-data} become name -> list of values.  A file in a
        multipart form is C{{"filename", "content_type", "size"}}, never its
        content; other parts are text in their charset (UTF-8 by default).
        Any other type is refused with a 415.

    A body over C{maxBody} bytes gets a 413, and so does a multipart body
    of more than 1000 parts; malformed input gets a 400, and so does a
    header with more than 64 parameters.  The work is linear in the size
    of the body.
    """

    def __init__(self, maxBody: int = DEFAULT_MAX_BODY) -> None:
        JSONResource.__init__(self)
        self.maxBody = maxBody

    def checkHead(self, request: Request, length: Optional[int]) -> None:
        checkBodyLength(length, self.maxBody)

    def json_GET(self, request: Request) -> Dict[str, object]:
        """
        Echo the request.
        """
        body = _readBody(request, self.maxBody)
        query = request.uri.partition(b"?")[2]
        return {
            "method": request.method.decode("latin-1"),
            "path": unquote_to_bytes(request.path).decode("utf-8", "replace"),
            "query": _parseQuery(query),
            "headers": self._headers(request),
            "body": self._parseBody(request, body) if body else None,
        }

    json_POST = json_GET

    def _headers(self, request: Request) -> Dict[str, str]:
        headers = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            key = name.decode("latin-1").lower()
            separator = b"; " if key == "cookie" else b", "
            headers[key] = separator.join(values).decode("utf-8", "replace")
        return headers

    def _parseBody(self, request: Request, body: bytes) -> object:
        contentTypes = request.requestHeaders.getRawHeaders(b"Content-Type")
        if not contentTypes:
            raise APIError(415, "a request body needs a Content-Type")
        if len(contentTypes) > 1:
            raise APIError(400, "more than one Content-Type header")
        mediaType, params = _parseContentType(contentTypes[0].decode("latin-1"))
        if _isJSONType(mediaType):
            return _parseJSON(body, params)
        if mediaType == "application/x-www-form-urlencoded":
            return _parseQuery(body, _checkCharset(params.get("charset", "utf-8")))
        if mediaType == "multipart/form-data":
            return _parseMultipart(body, params)
        raise APIError(
            415,
            f"cannot echo a body of type {mediaType!r}; send application/json, "
            f"application/x-www-form-urlencoded or multipart/form-data",
        )


def _isoTime(posix: float) -> str:
    moment = datetime.fromtimestamp(posix, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StatusResource(JSONResource):
    """
    C{/api/status}: C{{"version", "started", "uptime_seconds", "services"}}
    plus one key per section added with L{addSection}.

    C{started} is ISO 8601 in UTC; C{services} maps every service that has
    stats or listeners to its counters (zero for a service that has none)
    and C{"listeners": [ListenerInfo.toJSON(), ...]}.
    """

    #: Keys of the status document that sections cannot take.
    reserved = frozenset({"version", "started", "uptime_seconds", "services"})

    def __init__(self, status: StatusSource, clock: IReactorTime | None = None) -> None:
        JSONResource.__init__(self)
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.status = status
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self._sections: Dict[str, Callable[[], Mapping[str, object]]] = {}

    def addSection(self, name: str, section: Callable[[], Mapping[str, object]]) -> None:
        """
        Add C{name} to the status document, its value computed on every
        request by calling C{section()}, which must return a JSON-able dict
        and must not block.  A section that raises or returns something that
        is not JSON-able is logged and shown as C{{"error": "unavailable"}}.

        @raise ValueError: C{name} is taken.
        """
        if name in self.reserved or name in self._sections:
            raise ValueError(f"status section {name!r} already exists")
        self._sections[name] = section

    def json_GET(self, request: Request) -> Dict[str, object]:
        """
        The status document.
        """
        started = self.status.started
        byService: Dict[str, List[Dict[str, object]]] = {}
        for listener in self.status.listeners():
            byService.setdefault(listener.service, []).append(listener.toJSON())
        snapshot = self.status.stats.snapshot()
        services = {}
        for name in sorted(set(snapshot) | set(byService)):
            counters = snapshot.get(name)
            if counters is None:
                counters = ServiceStats(name).snapshot()
            services[name] = {**counters, "listeners": byService.get(name, [])}
        document: Dict[str, object] = {
            "version": self.status.version,
            "started": _isoTime(started),
            "uptime_seconds": round(max(0.0, self.clock.seconds() - started), 3),
            "services": services,
        }
        for name, section in self._sections.items():
            try:
                value = section()
                _dumps(value)
            except Exception:
                self.log.failure("status section {name!r} failed", name=name)
                value = {"error": "unavailable"}
            document[name] = value
        return document


class APIResource(Resource):
    """
    C{/api}: C{echo} (L{EchoResource}) and C{status} (L{StatusResource});
    anything else under C{/api} is a JSON 404.

    Later parts of netsuite add children with L{putChild} (a L{JSONResource}
    subclass answers in the same style) and sections of the status document
    with L{addSection}.
    """

    def __init__(
        self,
        status: StatusSource,
        *,
        maxBody: int = DEFAULT_MAX_BODY,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param status: where C{/api/status} reads listeners and stats.
        @param maxBody: largest body C{/api/echo} reads, in bytes.
        @param clock: tells the time for the uptime; the global reactor by
            default.
        """
        Resource.__init__(self)
        self.echo = EchoResource(maxBody)
        self.status = StatusResource(status, clock)
        self.putChild(b"echo", self.echo)
        self.putChild(b"status", self.status)

    def addSection(self, name: str, section: Callable[[], Mapping[str, object]]) -> None:
        """
        Add a section to C{/api/status}; see L{StatusResource.addSection}.
        """
        self.status.addSection(name, section)

    def getChild(self, path: bytes, request: Request) -> IResource:
        return _notFound(request)

    def render(self, request: Request) -> bytes:
        return _notFound(request).render(request)


class HealthResource(Resource):
    """
    C{/healthz}: 200 with C{ok} when every listener of the status source is
    listening; otherwise 503 with one line per listener that is not
    (C{"<service> <endpoint>"}).  Plain text, never cached.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, status: StatusSource) -> None:
        Resource.__init__(self)
        self.status = status

    def render(self, request: Request) -> bytes:
        """
        Answer GET and HEAD; 405 for anything else.
        """
        _setHeaders(request, b"text/plain; charset=utf-8")
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"Allow", b"GET, HEAD")
            return headOnly(request, b"method not allowed; use GET or HEAD\n")
        try:
            down = [info for info in self.status.listeners() if not info.listening]
        except Exception:
            self.log.failure("cannot read listeners for the health check")
            request.setResponseCode(503)
            return headOnly(request, b"status unavailable\n")
        if not down:
            return headOnly(request, b"ok\n")
        request.setResponseCode(503)
        lines = ["not listening:"] + [f"{info.service} {info.endpoint}" for info in down]
        return headOnly(request, ("\n".join(lines) + "\n").encode("utf-8"))
