"""
Tests for L{netsuite.chunked}: the chunked body decoder, alone, and fuzzed
against Twisted's for the same results.
"""

from __future__ import annotations

import os
import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import _ChunkedTransferDecoder, _DataLoss, _MalformedChunkedDataError

from netsuite.chunked import MAX_SIZE_LINE, MAX_TRAILER, ChunkedDecoder


def decode(decoderType: Any, pieces: list[bytes], **kwargs: Any) -> tuple[Any, ...]:
    """
    Give C{pieces} to a new decoder of C{decoderType}, then end the body.

    @return: C{("done", data, rest)}, C{("refused", data)} or
        C{("incomplete", data)}, and the decoder.
    """
    data: list[bytes] = []
    rest: list[bytes] = []
    decoder = decoderType(data.append, rest.append, **kwargs)
    for i, piece in enumerate(pieces):
        try:
            decoder.dataReceived(piece)
        except _MalformedChunkedDataError:
            return ("refused", b"".join(data)), decoder
        if rest:
            return ("done", b"".join(data), b"".join([rest[0], *pieces[i + 1 :]])), decoder
    try:
        decoder.noMoreData()
    except _DataLoss:
        return ("incomplete", b"".join(data)), decoder
    raise AssertionError("noMoreData did not raise before the end")  # pragma: no cover


class ChunkedDecoderTests(SynchronousTestCase):
    """
    L{ChunkedDecoder} reads chunked bodies in any pieces, gives the chunks
    of one read as one piece, and refuses a fault on the line that has it.
    """

    def decoder(self, limit: int | None = None) -> tuple[ChunkedDecoder, list]:
        calls: list = []
        return (
            ChunkedDecoder(lambda d: calls.append(("data", d)), lambda e: calls.append(("end", e)), limit),
            calls,
        )

    def assertRefused(self, pieces: list[bytes], problem: str, limit: int | None = None) -> list:
        """
        The last of C{pieces} is refused for C{problem}, and none before it.

        @return: the calls made.
        """
        decoder, calls = self.decoder(limit)
        for piece in pieces[:-1]:
            decoder.dataReceived(piece)
        with self.assertRaises(_MalformedChunkedDataError):
            decoder.dataReceived(pieces[-1])
        self.assertEqual(decoder.problem, problem)
        return calls

    def test_oneReadOneCall(self) -> None:
        """
        The data of every chunk of one read goes on in one call, then the
        end of the body with the bytes after it.
        """
        decoder, calls = self.decoder()
        decoder.dataReceived(b"1\r\na\r\n" * 500 + b"2\r\nb")
        self.assertEqual(calls, [("data", b"a" * 500 + b"b")])
        decoder.dataReceived(b"b\r\n0\r\n\r\nextra")
        self.assertEqual(calls[1:], [("data", b"b"), ("end", b"extra")])
        self.assertTrue(decoder.finished)

    def test_everySplit(self) -> None:
        """
        A body with extensions and trailers, cut anywhere into two or three
        pieces, or given a byte at a time, gives the same data and rest.
        """
        body = b"5;a=b;c=\"d\"\r\nhello\r\n0A\r\n0123456789\r\n000\r\nX-T: 1\r\nY: 2\r\n\r\nnext"
        expected = ("done", b"hello0123456789", b"next")
        for i in range(len(body) + 1):
            self.assertEqual(decode(ChunkedDecoder, [body[:i], body[i:]])[0], expected, i)
            for j in range(i, len(body) + 1, 7):
                self.assertEqual(decode(ChunkedDecoder, [body[:i], body[i:j], body[j:]])[0], expected, (i, j))
        self.assertEqual(decode(ChunkedDecoder, [body[i : i + 1] for i in range(len(body))])[0], expected)

    def test_bulkNotCopied(self) -> None:
        """
        A read that is all chunk data goes on as the very object read.
        """
        decoder, calls = self.decoder()
        decoder.dataReceived(b"100000\r\n")
        piece = os.urandom(65536)
        decoder.dataReceived(piece)
        self.assertIs(calls[0][1], piece)

    def test_dataBeforeTheError(self) -> None:
        """
        The chunks before a fault go on before the error is raised.
        """
        calls = self.assertRefused([b"1\r\na\r\n1\r\nb\r\nzz\r\n"], "malformed chunk size line in the chunked body")
        self.assertEqual(calls, [("data", b"ab")])

    def test_bareLF(self) -> None:
        """
        A size line or a trailer line ending in a bare LF is refused on its
        LF (Twisted waited for a CRLF on a size line, and took the LF into
        a trailer line).
        """
        problem = "a line of the chunked body ends in a bare LF"
        self.assertRefused([b"5\n"], problem)
        self.assertRefused([b"5;x\n"], problem)
        self.assertRefused([b"\n"], problem)
        self.assertRefused([b"1\r\na\r\n", b"0\n"], problem)
        self.assertRefused([b"0\r\nX-T: 1\n"], problem)
        self.assertRefused([b"0\r\nX-T: 1\r\n", b"\n"], problem)
        self.assertRefused([b"0\r\n\n"], problem)

    def test_crlfSplitAcrossReads(self) -> None:
        """
        A CR at the end of one read and its LF at the start of the next end
        the line, in a size line, after a chunk, and in the trailer.
        """
        for pieces in (
            [b"1\r", b"\na\r\n0\r\n\r\n"],
            [b"1\r\na\r", b"\n0\r\n\r\n"],
            [b"1\r\na\r\n0\r\nT: 1\r", b"\n\r\n"],
            [b"1\r\na\r\n0\r\n\r", b"\n"],
        ):
            self.assertEqual(decode(ChunkedDecoder, pieces)[0], ("done", b"a", b""), pieces)

    def test_badStartRefusedAtOnce(self) -> None:
        """
        A size line is refused at the first byte it cannot hold, before its
        end comes: Twisted waited for its CRLF.
        """
        problem = "malformed chunk size line in the chunked body"
        for start in (b"x", b"5 ", b"-5", b"0x5", b";ext", b"5\r5", b"5;a\x00", b"5;a\\b", b"+1"):
            self.assertRefused([start], problem)
        for start in (b"", b"5", b"fF", b"5;", b"5;a=b c", b"5\r", b"5;\x80\xff\r"):
            decoder, calls = self.decoder()
            decoder.dataReceived(start)
            self.assertEqual(calls, [])

    def test_chunkNotEndedByCRLF(self) -> None:
        """
        The two bytes after a chunk's data must be CRLF: a wrong first byte
        is refused at once, and so is a wrong byte after a CR.
        """
        problem = "a chunk of the chunked body does not end with CRLF"
        calls = self.assertRefused([b"1\r\naX"], problem)
        self.assertEqual(calls, [("data", b"a")])
        self.assertRefused([b"1\r\na\r", b"X"], problem)
        self.assertRefused([b"1\r\na\n"], problem)

    def test_sizeLineLength(self) -> None:
        """
        A size line of up to 1,023 bytes before its CRLF is read (Twisted's
        limit); one longer is refused, once 1,025 bytes without an LF have
        come, or at its LF.
        """
        ext = b";" + b"a" * (MAX_SIZE_LINE - 3)
        self.assertEqual(decode(ChunkedDecoder, [b"1" + ext + b"\r\nz\r\n0\r\n\r\n"])[0], ("done", b"z", b""))
        self.assertEqual(decode(ChunkedDecoder, [b"0" * (MAX_SIZE_LINE - 2) + b"1\r\nz\r\n0\r\n\r\n"])[0][0], "done")
        problem = "malformed chunk size line in the chunked body"
        self.assertRefused([b"1" + ext + b"a\r\n"], problem)
        self.assertRefused([b"1" + ext + b"a", b"a"], problem)
        decoder, calls = self.decoder()
        decoder.dataReceived(b"1" + ext + b"a")  # 1,024 bytes: its CRLF may yet come
        self.assertEqual(calls, [])

    def test_hugeSize(self) -> None:
        """
        Without a limit, a chunk may be any size, as in Twisted.
        """
        decoder, calls = self.decoder()
        decoder.dataReceived(b"FFFFFFFFFFFFFFFFFFFFFFFF\r\nabc")
        self.assertEqual(calls, [("data", b"abc")])

    def test_limit(self) -> None:
        """
        Given a limit, chunk sizes adding up to more are refused on the size
        line that goes over it; up to it, the body is read.
        """
        calls = self.assertRefused([b"3\r\nabc\r\n", b"FFFFFFFFFFFFF\r\n"], "request body over 10 bytes", 10)
        self.assertEqual(calls, [("data", b"abc")])
        decoder, calls = self.decoder(10)
        decoder.dataReceived(b"3\r\nabc\r\n7\r\n1234567\r\n0\r\n\r\n")
        self.assertEqual(calls, [("data", b"abc1234567"), ("end", b"")])
        decoder, _ = self.decoder(10)
        with self.assertRaises(_MalformedChunkedDataError):
            decoder.dataReceived(b"3\r\nabc\r\n8\r\n")
        self.assertTrue(decoder.tooLarge)

    def test_trailerLength(self) -> None:
        """
        Trailer lines are dropped; up to 64 KiB of them (with their CRLFs)
        are read, and one byte more is refused, whole or still coming.
        """
        line = b"X: " + b"a" * 1000 + b"\r\n"
        lines = line * (MAX_TRAILER // len(line))
        last = b"Y: " + b"b" * (MAX_TRAILER - len(lines) - 5) + b"\r\n"
        self.assertEqual(len(lines + last), MAX_TRAILER)
        pieces = [b"0\r\n"] + [lines[i : i + 999] for i in range(0, len(lines), 999)] + [last, b"\r\nrest"]
        self.assertEqual(decode(ChunkedDecoder, pieces)[0], ("done", b"", b"rest"))
        problem = "the trailer of the chunked body is too long"
        self.assertRefused([b"0\r\n", lines, b"Y: " + b"b" * (MAX_TRAILER - len(lines) - 4) + b"\r\n"], problem)
        self.assertRefused([b"0\r\n", lines, b"Y: " + b"b" * (MAX_TRAILER - len(lines) - 4)], problem)

    def test_afterTheEnd(self) -> None:
        """
        Data after the end of the body is a programming error, as in
        Twisted.
        """
        decoder, _ = self.decoder()
        decoder.dataReceived(b"0\r\n\r\n")
        self.assertRaises(RuntimeError, decoder.dataReceived, b"x")

    def test_noMoreData(self) -> None:
        """
        A body cut off anywhere before its end is data lost; after its end,
        it is not.
        """
        body = b"3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n"
        for i in range(len(body)):
            self.assertEqual(decode(ChunkedDecoder, [body[:i]])[0][0], "incomplete", i)
        decoder, _ = self.decoder()
        decoder.dataReceived(body)
        decoder.noMoreData()


# Bytes mutations insert: the ones framing is made of, and their neighbours.
_MUTATIONS = b"\r\n\r\n0123456789aAfFgG;= \t\"\\\x00\x7f\x80\xffxX+-"


def _randomBody(rng: random.Random) -> bytes:
    """
    A chunked body and what may follow it: sizes in either case and with
    leading zeros, extensions, trailers; often mutated a little.
    """
    out = []
    for _ in range(rng.randrange(4)):
        size = rng.choice((1, 2, 3, 10, 15, 16, 255, 300))
        digits = b"%x" % size
        if rng.random() < 0.3:
            digits = digits.upper()
        if rng.random() < 0.2:
            digits = b"0" * rng.randrange(1, 4) + digits
        extension = b""
        if rng.random() < 0.3:
            extension = rng.choice((b";a", b";a=b", b';q="x y"', b";a;b=c", b"; a", b";\x80"))
        out.append(digits + extension + b"\r\n")
        out.append(bytes(rng.choice(b"ab\r\n0") for _ in range(size)) + b"\r\n")
    out.append(b"0" * rng.randrange(1, 3) + b"\r\n")
    for _ in range(rng.choice((0, 0, 1, 2))):
        out.append(rng.choice((b"X-T: 1\r\n", b"Expires: x\r\n", b": \r\n")))
    out.append(b"\r\n")
    out.append(rng.choice((b"", b"", b"GET / HTTP/1.1\r\n", b"0\r\n\r\n")))
    body = bytearray(b"".join(out))
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        at = rng.randrange(len(body) + 1)
        kind = rng.randrange(3)
        if kind == 0:
            body[at:at] = bytes([rng.choice(_MUTATIONS)])
        elif kind == 1 and at < len(body):
            del body[at]
        elif at < len(body):
            body[at] = rng.choice(_MUTATIONS)
    return bytes(body)


def _randomPieces(rng: random.Random, body: bytes) -> list[bytes]:
    if rng.random() < 0.1:
        return [body[i : i + 1] for i in range(len(body))]
    cuts = sorted(rng.randrange(len(body) + 1) for _ in range(rng.randrange(4)))
    bounds = [0, *cuts, len(body)]
    return [body[a:b] for a, b in zip(bounds, bounds[1:])]


class AgainstTwistedTests(SynchronousTestCase):
    """
    L{ChunkedDecoder} takes what Twisted's C{_ChunkedTransferDecoder}
    takes, with the same data and the same bytes after the end, and
    refuses what it refuses; where it refuses more, it is for a fault that
    Twisted was still waiting on (a bare LF, a bad size line or chunk end
    whose CRLF had not come) or for a bare LF in a trailer line, which
    Twisted took into the line.
    """

    #: Bodies tried per test run; C{NETSUITE_FUZZ} in the environment asks
    #: for more.
    cases = int(os.environ.get("NETSUITE_FUZZ", "4000"))

    def compare(self, pieces: list[bytes]) -> None:
        """
        Decode C{pieces} with both decoders and check that the outcomes
        agree as the class docstring says.
        """
        ours, decoder = decode(ChunkedDecoder, pieces)
        theirs, twisted = decode(_ChunkedTransferDecoder, pieces)
        if ours == theirs:
            return
        context = (pieces, ours, theirs, decoder.problem)
        self.assertEqual(ours[0], "refused", context)
        self.assertTrue(theirs[1].startswith(ours[1]), context)
        if decoder.problem == "a line of the chunked body ends in a bare LF" and (
            any(b"\n" in line for line in twisted._trailerHeaders) or b"\n" in twisted._buffer
        ):
            return
        self.assertNotEqual(theirs[0], "done", context)
        # Twisted was waiting: the CRLF it waited for brings its refusal.
        again, _ = decode(_ChunkedTransferDecoder, [*pieces, b"\r\n"])
        self.assertEqual(again[0], "refused", context)

    def test_fuzz(self) -> None:
        """
        Random bodies, mostly a little malformed, cut at random.
        """
        rng = random.Random(20261122)
        outcomes = set()
        for _ in range(self.cases):
            body = _randomBody(rng)
            pieces = _randomPieces(rng, body)
            self.compare(pieces)
            outcomes.add(decode(ChunkedDecoder, pieces)[0][0])
        # The bodies reach every outcome.
        self.assertEqual(outcomes, {"done", "refused", "incomplete"})

    def test_smugglingShapes(self) -> None:
        """
        The framing tricks of request smuggling suites, each cut at every
        byte: both decoders agree, or ours refuses what Twisted waited on.
        """
        shapes = [
            b"0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\n0\n\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"-0\r\n\r\n",
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"\\\"\"\r\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhello\r\r\n0\r\n\r\n",
            b"10000000000000005\r\nhello\r\n0\r\n\r\n",
            b"0000000000000000000000000000000000005\r\nhello\r\n0\r\n\r\n",
            b"\xd9\r\n" + b"a" * 0xD9 + b"\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX: y\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\rX\r\n\r\n",
            b"0\r\n\r\r\n\r\n",
            b"\r\n5\r\nhello\r\n0\r\n\r\n",
        ]
        for body in shapes:
            for i in range(len(body) + 1):
                self.compare([body[:i], body[i:]])
            self.compare([body[i : i + 1] for i in range(len(body))])
