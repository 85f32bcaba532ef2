"""
Tests for L{netsuite.text}: values quoted in messages.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from netsuite.text import shortened, visibleText


class ShortenedTests(SynchronousTestCase):
    def test_shortStringsWhole(self) -> None:
        self.assertEqual(shortened("a\x1bb"), "'a\\x1bb'")

    def test_longStringsCutWithTheirLength(self) -> None:
        self.assertEqual(shortened("x" * 100, 5), "'xxxxx'... (100 characters)")

    def test_otherValuesCut(self) -> None:
        self.assertEqual(shortened([1, 2], 60), "[1, 2]")
        self.assertEqual(shortened(list(range(100)), 10), "[0, 1, 2, ...")

    def test_integersPythonWillNotWriteOut(self) -> None:
        huge = int("f" * 5000, 16)
        self.assertEqual(shortened(huge), "an integer of 20000 bits")
        self.assertEqual(shortened([huge]), "a list too large to show")
        self.assertEqual(shortened(2**63), repr(2**63))


class VisibleTextTests(SynchronousTestCase):
    def test_hiddenCharactersEscaped(self) -> None:
        """
        Controls (ESC, BEL), bidi overrides, line separators and lone
        surrogates are written as escapes; other text, spaces and letters
        of any script, stays.
        """
        self.assertEqual(
            visibleText("a\x1b]2;x\x07\x1b[2J \u202e\u2028\udce9 é ☃"),
            "a\\x1b]2;x\\x07\\x1b[2J \\u202e\\u2028\\udce9 é ☃",
        )
        self.assertEqual(visibleText("plain text"), "plain text")
