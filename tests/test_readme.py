"""
The README's promises: the embedding example runs as written, and CI runs
exactly the README's test command.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.application.service import IService
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.helpers import Collector, connect

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def codeBlockAfter(marker: str, language: str) -> str:
    start = README.index(marker)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, start)
    assert match is not None
    return match.group(1)


class EmbeddingExampleTests(TestCase):
    async def test_embeddingExampleServesEcho(self) -> None:
        """
        The README's C{.tac} example, run with port 0, serves echo and
        reports its stats.
        """
        source = codeBlockAfter("<!-- embed-example", "python")
        self.assertLessEqual(len([l for l in source.splitlines() if l.strip()]), 12)
        self.assertIn('"tcp:9007:interface=127.0.0.1"', source)
        namespace: dict = {}
        exec(compile(source.replace("tcp:9007:", "tcp:0:"), "myapp.tac", "exec"), namespace)
        service = IService(namespace["application"])
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        self.assertTrue(any("echo: " in (e.get("log_format") or "") for e in events))
        port = namespace["echo"].port.getHost().port
        client = await connect(self, port, Collector())
        client.transport.write(b"embedded")
        await client.waitFor(8)
        self.assertEqual(b"".join(client.received), b"embedded")
        self.assertEqual(namespace["echo"].stats.bytesIn, 8)


class DownloadExampleTests(TestCase):
    async def test_downloadExampleFetches(self) -> None:
        """
        The README's downloader example, pointed at a local server, saves
        the files with their bytes.
        """
        from twisted.internet import reactor
        from twisted.web import server, static

        source = codeBlockAfter("<!-- download-example", "python")
        served = Path(self.mktemp())
        served.mkdir()
        (served / "a.iso").write_bytes(b"a" * 100_000)
        (served / "b.iso").write_bytes(bytes(range(256)) * 40_000)
        port = reactor.listenTCP(0, server.Site(static.File(str(served))), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        namespace: dict = {"__name__": "example"}
        exec(compile(source, "example.py", "exec"), namespace)
        base = f"http://127.0.0.1:{port.getHost().port}/"
        directory = Path(self.mktemp())
        results = await namespace["fetch"](reactor, [base + "a.iso", base + "b.iso"], str(directory))
        self.assertEqual([r.path.name for r in results], ["a.iso", "b.iso"])
        for name in ("a.iso", "b.iso"):
            self.assertEqual((directory / name).read_bytes(), (served / name).read_bytes())


class CommandsTests(SynchronousTestCase):
    def test_ciRunsTheReadmeTestCommand(self) -> None:
        testCommand = codeBlockAfter("Install the test extras", "sh").strip()
        self.assertIn("python3 -m twisted.trial tests", testCommand)
        ci = (ROOT / ".ci" / "run").read_text().splitlines()
        self.assertIn(testCommand, ci)

    def test_runCommandStartsNetsuite(self) -> None:
        runCommand = codeBlockAfter("Install and run everything", "sh").strip()
        self.assertTrue(runCommand.endswith("twistd -n netsuite"), runCommand)
