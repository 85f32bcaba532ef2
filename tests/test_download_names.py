"""
Safe local file names for downloads (L{netsuite.download.names}).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

from twisted.trial.unittest import SynchronousTestCase

from netsuite.download.names import (
    avoidReserved,
    MAX_NAME_BYTES,
    chooseName,
    FreeNameHints,
    freePath,
    isInside,
    nameFromContentDisposition,
    nameFromURL,
    sanitiseName,
)
from tests.helpers import codecSearch


def _header(raw: bytes) -> str:
    """
    A header value as the engine reads it: UTF-8, each byte that is not
    UTF-8 kept as a C{surrogateescape} character.
    """
    return raw.decode("utf-8", "surrogateescape")


class SanitiseTests(SynchronousTestCase):
    def test_plainNameKept(self) -> None:
        self.assertEqual(sanitiseName("report-2026.pdf"), "report-2026.pdf")
        self.assertEqual(sanitiseName("naïve café.txt"), "naïve café.txt")

    def test_pathsReduceToTheLastSegment(self) -> None:
        """
        Separators of either kind and traversal leave only a basename.
        """
        for hostile in ("../../etc/passwd", "/etc/passwd", "..\\..\\boot.ini", "a/b/../passwd"):
            self.assertNotIn("/", sanitiseName(hostile))
            self.assertNotIn("\\", sanitiseName(hostile))
        self.assertEqual(sanitiseName("../../etc/passwd"), "passwd")
        self.assertEqual(sanitiseName("..\\..\\boot.ini"), "boot.ini")

    def test_dotsAndEmptyFallBack(self) -> None:
        for name in ("", ".", "..", "...", " ", "../", "/", "\x00\x01"):
            self.assertEqual(sanitiseName(name), "index.html", repr(name))

    def test_noLeadingDot(self) -> None:
        self.assertEqual(sanitiseName(".bashrc"), "bashrc")
        self.assertEqual(sanitiseName("..hidden.txt"), "hidden.txt")
        self.assertEqual(sanitiseName("name.txt. . "), "name.txt")

    def test_controlAndBidiCharactersDropped(self) -> None:
        """
        Control characters (C0, DEL, C1), bidirectional overrides and
        zero-width characters are dropped: a name cannot hide its extension
        (C{evil\\u202etxt.exe} would show as C{evilexe.txt}).
        """
        self.assertEqual(sanitiseName("a\nb\rc\td\x00e\x7ff\x85g.txt"), "abcdefg.txt")
        self.assertEqual(sanitiseName("evil\u202etxt.exe"), "eviltxt.exe")
        self.assertEqual(sanitiseName("zero\u200bwidth.txt"), "zerowidth.txt")

    def test_windowsReservedCharactersReplaced(self) -> None:
        self.assertEqual(sanitiseName('a<b>c:d"e|f?g*h.txt'), "a_b_c_d_e_f_g_h.txt")

    def test_lengthCappedKeepingExtension(self) -> None:
        name = sanitiseName("x" * 1000 + ".tar.gz")
        self.assertLessEqual(len(name.encode("utf-8")), MAX_NAME_BYTES)
        self.assertTrue(name.endswith("x.tar.gz"), name)  # the whole double extension, not x.gz
        self.assertEqual(sanitiseName("y" * 300 + ".TAR.xz"), "y" * (MAX_NAME_BYTES - 7) + ".TAR.xz")
        self.assertEqual(sanitiseName("y" * 300 + ".tar"), "y" * (MAX_NAME_BYTES - 4) + ".tar")
        wide = sanitiseName("é" * 300 + ".txt")  # two bytes each: never cut mid-character
        self.assertLessEqual(len(wide.encode("utf-8")), MAX_NAME_BYTES)
        self.assertTrue(wide.endswith(".txt"))
        wide.encode("utf-8").decode("utf-8")


class SourceTests(SynchronousTestCase):
    def test_contentDispositionFilename(self) -> None:
        self.assertEqual(nameFromContentDisposition('attachment; filename="a b.txt"'), "a b.txt")
        self.assertEqual(nameFromContentDisposition("attachment; filename=plain.txt"), "plain.txt")

    def test_contentDispositionExtendedWins(self) -> None:
        """
        RFC 5987 C{filename*} (UTF-8, percent-encoded) wins over
        C{filename}.
        """
        value = "attachment; filename=\"EURO rates.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt"
        self.assertEqual(nameFromContentDisposition(value), "€ rates.txt")

    def test_contentDispositionWithoutName(self) -> None:
        for value in (None, "", "inline", "attachment", "attachment; filename=", ";;;=\"", "\x00"):
            self.assertIsNone(nameFromContentDisposition(value), repr(value))

    def test_urlSegment(self) -> None:
        self.assertEqual(nameFromURL("http://h/files/My%20File.iso?x=1#y"), "My File.iso")
        self.assertIsNone(nameFromURL("http://h/"))
        self.assertIsNone(nameFromURL("http://h"))
        self.assertEqual(nameFromURL("http://h/a/%2e%2e"), "..")

    def test_urlSegmentNotUTF8KeepsItsBytesEncoded(self) -> None:
        """
        Bytes of a segment that are not UTF-8 stay percent-encoded (as
        C{curl -O} keeps them), so that different URLs get different
        names: each was U+FFFD, and C{/%E9} and C{/%F0} were one name.
        """
        self.assertEqual(nameFromURL("http://h/%E9"), "%E9")
        self.assertEqual(nameFromURL("http://h/p%ED%A0%80q"), "p%ED%A0%80q")
        self.assertEqual(nameFromURL("http://h/caf%C3%A9%e9.txt"), "caf\u00e9%E9.txt")
        self.assertEqual(chooseName("http://h/%F0"), "%F0")

    def test_contentDispositionNotUTF8KeepsItsBytesEncoded(self) -> None:
        """
        Bytes of a C{Content-Disposition} name that its charset cannot
        decode (UTF-8 for C{filename}, as the engine reads the header)
        stay percent-encoded, as those of a URL do: each was U+FFFD, so
        C{\xe9t\xe9.txt} and C{\xf0t\xf0.txt} were one name.
        """
        for value, name in (
            (_header(b'attachment; filename="\xe9t\xe9.txt"'), "%E9t%E9.txt"),
            (_header(b'attachment; filename="\xf0t\xf0.txt"'), "%F0t%F0.txt"),
            (_header(b'attachment; filename="caf\xc3\xa9\xe9.txt"'), "caf\u00e9%E9.txt"),
            ("attachment; filename*=UTF-8''%FF%FE.txt", "%FF%FE.txt"),
            ("attachment; filename*=shift_jis''%82%A0%FF.txt", "\u3042%FF.txt"),
            (_header(b"attachment; filename*=UTF-8''a\xe9\xe2\x82\xacb.txt"), "a%E9\u20acb.txt"),
        ):
            self.assertEqual(chooseName("http://h/x.bin", value), name, value)

    def test_bytesSentAsTheyAreInAnExtendedNameKeepTheirValue(self) -> None:
        """
        Bytes of a C{filename*} value sent as they are, not percent-encoded
        (which RFC 5987 does not allow, and servers do), are decoded in its
        charset as the bytes they are, alone, among percent-encoded ones or
        across continuations; those the charset cannot decode stay
        percent-encoded.  A raw C{\xc3\xa9} (é in UTF-8) was taken for the
        one byte C{%E9} and saved as C{%E9.txt}, and in Latin-1 as C{é}.
        """
        for value, name in (
            (_header(b"attachment; filename*=UTF-8''\xc3\xa9.txt"), "\u00e9.txt"),
            (_header(b"attachment; filename*=UTF-8''\xc4\x93.txt"), "\u0113.txt"),
            (_header(b"attachment; filename*=UTF-8''caf\xc3\xa9%C3%A9\xe9.txt"), "caf\u00e9\u00e9%E9.txt"),
            (_header(b"attachment; filename*=iso-8859-1''\xc3\xa9.txt"), "\u00c3\u00a9.txt"),
            (_header(b"attachment; filename*0*=UTF-8''\xc3; filename*1*=\xa9%E2%82; filename*2=\xac.txt"),
             "\u00e9\u20ac.txt"),
            (_header(b"attachment; filename*=\xc3\xa9.txt"), "%C3%A9.txt"),
        ):
            self.assertEqual(chooseName("http://h/x.bin", value), name, value)

    def test_chooseName(self) -> None:
        """
        C{Content-Disposition} first, then the URL, then the default; always
        sanitised.
        """
        self.assertEqual(chooseName("http://h/x.bin", 'attachment; filename="y.bin"'), "y.bin")
        self.assertEqual(chooseName("http://h/x.bin"), "x.bin")
        self.assertEqual(chooseName("http://h/dir/"), "index.html")
        self.assertEqual(chooseName("http://h/a/%2e%2e"), "index.html")
        self.assertEqual(chooseName("http://h/x.bin", 'attachment; filename="../../.ssh/authorized_keys"'),
                         "authorized_keys")
        self.assertEqual(chooseName("http://h/%2F..%2Fetc%2Fpasswd"), "passwd")
        self.assertEqual(chooseName("http://h/x.bin", 'attachment; filename=".."'), "x.bin")


    def test_contentDispositionParameters(self) -> None:
        """
        Parameters are read as Python's email package reads them: C{;} in
        quotes, escaped quotes, RFC 2231 continuations and charsets, names in
        any case; a charset Python does not know leaves the text as it is.
        """
        for value, name in (
            ('attachment; filename="a;b.txt"', "a;b.txt"),
            ('attachment; filename="a\\"b.txt"', 'a"b.txt'),
            ('attachment; filename*0="a"; filename*1="b.txt"', "ab.txt"),
            ("attachment; filename*0*=UTF-8''%E2%82; filename*1*=%AC.txt", "\u20ac.txt"),
            ('attachment; FILENAME = "UP.TXT" ', "UP.TXT"),
            ("attachment; filename*=iso-8859-1'en'%A3%20rates", "\u00a3 rates"),
            ("attachment; filename*=nonesuch''abc", "abc"),
            ("attachment; filename*=base64''QUJD", "QUJD"),
            (";;;filename=a", "a"),
            ('attachment; filename="unterminated;x', '"unterminated;x'),
        ):
            self.assertEqual(nameFromContentDisposition(value), name, value)


class ContentDispositionCostTests(SynchronousTestCase):
    def test_emailParameterParserNotUsed(self) -> None:
        """
        A C{Content-Disposition} is read without the email package's
        parameter parser, whose time is quadratic in the header's length (a
        quoted file name full of C{;}: 2.5 s for 64 KiB);
        C{benchmarks/parse_bench.py} measures it.
        """
        import email.message

        def refuse(*args: object, **kwargs: object) -> NoReturn:
            raise AssertionError("the email package's parameter parser was used")

        self.patch(email.message, "_parseparam", refuse)
        self.assertEqual(nameFromContentDisposition('attachment; filename="' + ";" * 1000 + '"'), ";" * 1000)
        self.assertEqual(nameFromContentDisposition("attachment; filename=a.txt" + "; a=b" * 100), "a.txt")
        self.assertEqual(nameFromContentDisposition("attachment; filename*=UTF-8''%E2%82%AC.txt"), "\u20ac.txt")

    def test_punycodeIsNotDecoded(self) -> None:
        """
        A C{filename*} in C{punycode} is taken as it is: that codec takes time
        quadratic in what it decodes (0.6 s for 64 KiB) and fails on
        non-ASCII bytes.
        """
        for value, name in (
            ("attachment; filename*=punycode''bcher-kva", "bcher-kva"),
            ("attachment; filename*=PunyCode''%FF", "\u00ff"),
        ):
            self.assertEqual(nameFromContentDisposition(value), name)

    def test_unknownCharsetNamesAreNotLookedUp(self) -> None:
        """
        Only the names of Python's own codecs are looked up (Python keeps
        every name it is asked for, unknown ones too); the text in an unknown
        charset is taken as it is.
        """
        asked = codecSearch(self)
        self.assertEqual(nameFromContentDisposition("attachment; filename*=nonesuch-4711''abc"), "abc")
        self.assertEqual(nameFromContentDisposition("attachment; filename*=UTF--8''%C3%A9"), "\u00e9")
        self.assertEqual([name for name in asked if "nonesuch" in name], [])


class FreePathTests(SynchronousTestCase):
    def test_existingFilesNotOverwritten(self) -> None:
        """
        An existing file, or one being downloaded (C{.part}), takes its
        name: the next is C{name.1}, then C{name.2}, as aria2 does.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        self.assertEqual(freePath(directory, "f.iso"), directory / "f.iso")
        (directory / "f.iso").write_bytes(b"old")
        self.assertEqual(freePath(directory, "f.iso"), directory / "f.iso.1")
        (directory / "f.iso.1.part").write_bytes(b"partial")
        self.assertEqual(freePath(directory, "f.iso"), directory / "f.iso.2")
        self.assertEqual(freePath(directory, "f.iso", overwrite=True), directory / "f.iso")
        self.assertEqual((directory / "f.iso").read_bytes(), b"old")

    def test_danglingLinkTakesItsName(self) -> None:
        """
        A symbolic link to nowhere takes its name, as a file does.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        os.symlink("/nonexistent/netsuite", directory / "f.iso")
        os.symlink("/nonexistent/netsuite", directory / "f.iso.1.part")
        self.assertEqual(freePath(directory, "f.iso"), directory / "f.iso.2")

    def test_hintsStartWhereTheLastSearchEnded(self) -> None:
        """
        With hints, a search for a name tries the numbered names from the
        one it last returned, so each of many same-named files costs a few
        look-ups; without them (or once forgotten) it starts from C{name.1}
        and finds the same name.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        for name in ["f.iso"] + [f"f.iso.{n}" for n in range(1, 50)]:
            (directory / name).write_bytes(b"")
        tried = []
        lexists = os.path.lexists
        self.patch(os.path, "lexists", lambda path: tried.append(os.path.basename(path)) or lexists(path))
        hints = FreeNameHints(size=2)
        self.assertEqual(freePath(directory, "f.iso", hints=hints), directory / "f.iso.50")
        (directory / "f.iso.50.part").write_bytes(b"")
        del tried[:]
        self.assertEqual(freePath(directory, "f.iso", hints=hints), directory / "f.iso.51")
        self.assertEqual(tried, ["f.iso", "f.iso.50", "f.iso.50.part", "f.iso.51", "f.iso.51.part"])
        self.assertEqual(freePath(directory, "f.iso"), directory / "f.iso.51")
        # Other names push the least recently used one out.
        for other in ("g", "h"):
            (directory / other).write_bytes(b"")
            self.assertEqual(freePath(directory, other, hints=hints), directory / f"{other}.1")
        del tried[:]
        self.assertEqual(freePath(directory, "f.iso", hints=hints), directory / "f.iso.51")
        self.assertGreater(len(tried), 50)

    def test_isInside(self) -> None:
        directory = Path(self.mktemp())
        self.assertTrue(isInside(directory, directory / "a"))
        self.assertFalse(isInside(directory, directory / "sub" / "a"))
        self.assertFalse(isInside(directory, directory / ".." / "a"))


class HostileInputTests(SynchronousTestCase):
    def test_randomInputAlwaysSafe(self) -> None:
        """
        Whatever the header and URL hold, the name is a plain, non-empty,
        short file name without separators, leading dots or control
        characters, and nothing raises.
        """
        import random

        rng = random.Random(5)
        alphabet = "aZ9./\\:%*?\"'<>|;= \t\r\n\x00\x1b\x7f\x85\u202e\u200b\ud800é€*'\u0000"
        for _ in range(3000):
            header = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
            header = rng.choice(["attachment; filename=", "attachment; filename*=UTF-8''", ""]) + header
            url = "http://h/" + "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
            name = chooseName(url, header)
            self.assertTrue(name)
            self.assertFalse(name.startswith("."), repr(name))
            self.assertFalse(set(name) & set("/\\\x00\n\r\t\x7f\u202e"), repr(name))
            self.assertNotIn(name, (".", ".."))
            self.assertLessEqual(len(name.encode("utf-8", "surrogatepass")), MAX_NAME_BYTES)


class ReservedNameTests(SynchronousTestCase):
    def test_ownFileEndingsAreAvoided(self) -> None:
        """
        A name ending like the downloader's own files gets C{_} added; other
        names are left alone.
        """
        self.assertEqual(avoidReserved("x.part"), "x.part_")
        self.assertEqual(avoidReserved("x.part.json"), "x.part.json_")
        self.assertEqual(avoidReserved("X.PART.JSON.TMP"), "X.PART.JSON.TMP_")
        self.assertEqual(avoidReserved("party.json"), "party.json")
        self.assertEqual(avoidReserved("x.json"), "x.json")



class StorableNameTests(SynchronousTestCase):
    def test_longNameTheLocaleCannotHoldStaysShort(self) -> None:
        """
        A long name whose characters the locale's file names cannot hold is
        percent-encoded, then cut to L{MAX_NAME_BYTES} (encoded
        after the cut, it grew to three times as long).
        """
        import sys

        self.patch(sys, "getfilesystemencoding", lambda: "ascii")
        name = sanitiseName("é" * 150 + ".txt")
        self.assertLessEqual(len(name.encode("ascii")), MAX_NAME_BYTES)
        self.assertTrue(name.startswith("%C3%A9") and name.endswith(".txt"), name)
