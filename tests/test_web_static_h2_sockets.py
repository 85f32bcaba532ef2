"""
Tests for L{netsuite.web.static}'s limits over HTTP/2 end to end: real
loopback TLS connections negotiated by ALPN, an HTTPS listener serving a
folder, and the h2 library as the client, run by the reactor (L{H2Client}).
A client whose flow-control windows are shut (0) holds its streams' files
for as long as it likes: the files one connection is sent at once
(L{H2_OPEN_FILES}), the requests waiting behind them, the answers that
need no file, one address's share of the files, and a request body that
stops coming.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

from twisted.internet import reactor, task, threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.http import H2_ENABLED

from netsuite.stats import StatsRegistry
from netsuite.status import SimpleStatus
from netsuite.web.site import Limits, makeSite
from netsuite.web.static import H2_OPEN_FILES, StaticFolder
from tests.helpers import connect, waitUntil
from tests.test_web_site import waitForNoConnections
from tests.test_web_site_h2 import HTTPSTestCase, request
from tests.test_web_static import openFilesFor, patterned

if H2_ENABLED:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.settings

#: The size of the file the tests ask for: kept on disk, not in memory.
SIZE = 1024 * 1024

#: The streams a connection may have open at once (its SETTINGS say so).
MAX_STREAMS = 100


class H2Client(Protocol):
    """
    An HTTP/2 client over a real connection: the h2 library's connection,
    driven by the reactor.  Every stream's window is shut (0) unless it is
    asked for with one open, so the server sends it no body; an open
    stream (and the connection) is given a window of L{SIZE} at once, as
    browsers give large windows, and no more.

    @ivar statuses: each answered stream's C{:status}.
    @ivar headers: each answered stream's response headers.
    @ivar bodies: the body bytes each stream has received.
    @ivar ended: how each stream ended: C{"ended"}, or the error code of
        its C{RST_STREAM}.
    @ivar goAway: the error code of the server's GOAWAY, or L{None}.
    @ivar lost: fires when the connection is lost.
    """

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.statuses: dict[int, bytes] = {}
        self.headers: dict[int, dict[bytes, bytes]] = {}
        self.bodies: dict[int, bytes] = {}
        self.ended: dict[int, object] = {}
        self.goAway: int | None = None
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        self.flush()

    def get(
        self,
        path: str,
        *extra: tuple[str, str],
        method: str = "GET",
        window: bool = False,
        endStream: bool = True,
    ) -> int:
        """
        Send a request for C{path} on a new stream, with its window open
        when C{window}; return the stream.
        """
        streamID: int = self.conn.get_next_available_stream_id()
        self.conn.send_headers(streamID, request(method, path, *extra), end_stream=endStream)
        self.bodies[streamID] = b""
        if window:
            self.conn.increment_flow_control_window(SIZE, streamID)
            self.conn.increment_flow_control_window(SIZE)
        self.flush()
        return streamID

    def reset(self, streamID: int) -> None:
        """
        Reset C{streamID} (C{CANCEL}), as a browser leaving a page does.
        """
        self.conn.reset_stream(streamID, h2.errors.ErrorCodes.CANCEL)
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            streamID = getattr(event, "stream_id", None)
            if isinstance(event, h2.events.ResponseReceived):
                self.headers[streamID] = dict(event.headers)
                self.statuses[streamID] = self.headers[streamID][b":status"]
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[streamID] += event.data
            elif isinstance(event, h2.events.StreamEnded):
                self.ended[streamID] = "ended"
            elif isinstance(event, h2.events.StreamReset):
                self.ended[streamID] = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goAway = event.error_code
        self.flush()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost.callback(None)


class StaticHTTP2SocketTests(HTTPSTestCase):
    """
    A folder's files over HTTP/2 and TLS, on real loopback connections.
    """

    timeout = 20

    async def startFolder(self, limits: Limits | None = None) -> tuple[int, StaticFolder, Any]:
        """
        Serve a folder holding C{big.bin} (L{SIZE} bytes, not kept in
        memory) over HTTPS; fail the test on any error the server logs.

        @return: the port, the folder and the listener.
        """
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        self.big = os.path.join(root, "big.bin")
        with open(self.big, "wb") as f:
            f.write(patterned(SIZE))
        status = SimpleStatus(StatsRegistry())
        site = makeSite(status, reactor=reactor, stats=status.stats.forService("http"), root=root, limits=limits)
        port, service, cadata = await self.startHTTPS(site=site)
        self.trustRoot = Certificate.loadPEM(cadata.encode("ascii"))
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.addCleanup(self.assertNothingLogged, events)
        assert site.static is not None
        return port, site.static, service

    def assertNothingLogged(self, events: EventLoggingObserver) -> None:
        """
        No traceback, and nothing at the level of an error, was logged.
        """
        self.assertEqual(self.flushLoggedErrors(), [])
        bad = [event for event in events if event.get("log_level") in (LogLevel.error, LogLevel.critical)]
        self.assertEqual(bad, [])

    async def connectH2(self, port: int) -> H2Client:
        """
        A new L{H2Client} connected to C{port}, HTTP/2 chosen by ALPN;
        aborted when the test ends.
        """
        endpoint = wrapClientTLS(
            optionsForClientTLS("localhost", trustRoot=self.trustRoot, acceptableProtocols=[b"h2"]),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        )
        client = H2Client()
        await connect(self, port, client, endpoint)
        return client

    async def stall(self, client: H2Client, folder: StaticFolder, count: int = H2_OPEN_FILES) -> list[int]:
        """
        Ask for C{big.bin} on C{count} streams whose windows stay shut: each
        is answered (its head) and then holds its file.

        @return: the streams.
        """
        streams = [client.get("/big.bin") for _ in range(count)]
        await waitUntil(lambda: all(streamID in client.statuses for streamID in streams))
        self.assertEqual([client.statuses[streamID] for streamID in streams], [b"200"] * count)
        self.assertEqual(sum(folder._h2Files.values()), count)
        self.assertEqual(openFilesFor(self.big), count)
        return streams

    def waiting(self, folder: StaticFolder) -> list[int]:
        """
        The streams of the requests waiting for a file, in order.
        """
        return [waiting.channel.streamID for queue in folder._h2Waiting.values() for waiting in queue]

    async def served(self, client: H2Client, streamID: int) -> None:
        """
        Wait for C{streamID}'s answer; it is the whole file.
        """
        await waitUntil(lambda: streamID in client.ended)
        self.assertEqual((client.statuses[streamID], client.ended[streamID]), (b"200", "ended"))
        self.assertEqual(client.bodies[streamID], patterned(SIZE))

    async def test_stalledStreamsHoldTheFilesResetOneLetsTheNextIn(self) -> None:
        """
        A client that takes nothing (its windows shut) is sent
        L{H2_OPEN_FILES} files at once; its next request for a file waits,
        holding none and unanswered; when it resets one of the stalled
        streams, the waiting request is sent its file whole.
        """
        port, folder, service = await self.startFolder()
        client = await self.connectH2(port)
        stalled = await self.stall(client, folder)
        waiting = client.get("/big.bin", window=True)
        await waitUntil(lambda: self.waiting(folder) == [waiting])
        self.assertNotIn(waiting, client.statuses)
        self.assertEqual(openFilesFor(self.big), H2_OPEN_FILES)
        client.reset(stalled[0])
        await self.served(client, waiting)
        await waitUntil(lambda: sum(folder._h2Files.values()) == H2_OPEN_FILES - 1)
        self.assertEqual((folder._h2Waiting, openFilesFor(self.big)), ({}, H2_OPEN_FILES - 1))
        self.assertEqual([client.ended.get(streamID) for streamID in stalled[1:]], [None] * (H2_OPEN_FILES - 1))
        client.transport.loseConnection()
        await waitForNoConnections(self, service)
        self.assertEqual((folder._h2Files, folder._producers, openFilesFor(self.big)), ({}, set(), 0))

    async def test_waitingBoundedByTheConnectionsStreams(self) -> None:
        """
        The requests waiting for a file are bounded by the streams a
        connection may have open (100): behind 8 stalled files, 92 wait,
        and a stream past them is refused with C{REFUSED_STREAM} (the
        client may send it again), the connection and the others going
        on; once a stalled stream is reset, the first waiting one is sent
        its file, and a new request is taken.
        """
        port, folder, service = await self.startFolder()
        client = await self.connectH2(port)
        stalled = await self.stall(client, folder)
        waiting = [client.get("/big.bin") for _ in range(MAX_STREAMS - H2_OPEN_FILES)]
        await waitUntil(lambda: self.waiting(folder) == waiting)
        # The client sends on as if it had not read the server's SETTINGS.
        client.conn.remote_settings.max_concurrent_streams = MAX_STREAMS + 10
        client.conn.remote_settings.acknowledge()
        refused = client.get("/big.bin")
        await waitUntil(lambda: refused in client.ended or client.goAway is not None)
        self.assertIsNone(client.goAway)
        self.assertEqual(client.ended[refused], h2.errors.ErrorCodes.REFUSED_STREAM)
        self.assertNotIn(refused, client.statuses)
        self.assertEqual(self.waiting(folder), waiting)
        self.assertEqual(openFilesFor(self.big), H2_OPEN_FILES)
        client.reset(stalled[0])
        await waitUntil(lambda: waiting[0] in client.statuses)
        self.assertEqual(self.waiting(folder), waiting[1:])
        self.assertEqual(openFilesFor(self.big), H2_OPEN_FILES)
        again = client.get("/healthz", window=True)
        await waitUntil(lambda: again in client.ended)
        self.assertEqual((client.statuses[again], client.bodies[again]), (b"200", b"ok\n"))

    async def test_resetWaitingRequestLeavesAtOnce(self) -> None:
        """
        A waiting request whose stream is reset leaves the queue at once,
        not when a file ends, and is never answered; the others keep
        their order and are sent their files as the stalled ones are
        reset; the files all close.
        """
        port, folder, service = await self.startFolder()
        client = await self.connectH2(port)
        stalled = await self.stall(client, folder)
        first, second, third = (client.get("/big.bin", window=True) for _ in range(3))
        await waitUntil(lambda: self.waiting(folder) == [first, second, third])
        client.reset(second)
        await waitUntil(lambda: self.waiting(folder) == [first, third])
        self.assertEqual(sum(folder._h2Files.values()), H2_OPEN_FILES)
        client.reset(stalled[0])
        await self.served(client, first)
        client.reset(stalled[1])
        await self.served(client, third)
        self.assertNotIn(second, client.statuses)
        self.assertEqual(folder._h2Waiting, {})
        for streamID in stalled[2:]:
            client.reset(streamID)
        await waitUntil(lambda: folder._h2Files == {})
        self.assertEqual((folder._producers, openFilesFor(self.big)), (set(), 0))
        self.assertIsNone(client.goAway)

    async def test_connectionLostWithRequestsWaiting(self) -> None:
        """
        A client that goes away while requests wait behind its stalled
        files: the files close, none of the waiting requests opens its
        file or is answered, and nothing is logged as an error (each file's
        end started a waiting request on the dead connection).
        """
        port, folder, service = await self.startFolder()
        client = await self.connectH2(port)
        await self.stall(client, folder)
        for _ in range(4):
            client.get("/big.bin")
        await waitUntil(lambda: len(self.waiting(folder)) == 4)
        opened: list[Any] = []
        realOpen = folder._open

        def watchOpen(path: Any) -> Any:
            opened.append(path)
            return realOpen(path)

        self.patch(folder, "_open", watchOpen)
        client.transport.abortConnection()
        await client.lost
        await waitForNoConnections(self, service)
        await waitUntil(lambda: not folder._producers)
        self.assertEqual(opened, [])
        self.assertEqual((folder._h2Files, folder._h2Waiting, openFilesFor(self.big)), ({}, {}, 0))

    async def test_answersNeedingNoFileWhileTheFilesAreFull(self) -> None:
        """
        With the connection's files all held by stalled streams, a C{304}
        (for the stalled file's own C{ETag}), a C{412}, a C{416} and a
        C{HEAD} are answered at once: they wait for no file.
        """
        port, folder, service = await self.startFolder()
        client = await self.connectH2(port)
        stalled = await self.stall(client, folder)
        etag = client.headers[stalled[0]][b"etag"].decode("ascii")
        cases = {
            client.get("/big.bin", ("if-none-match", etag), window=True): b"304",
            client.get("/big.bin", ("if-match", '"other"'), window=True): b"412",
            client.get("/big.bin", ("range", f"bytes={SIZE}-"), window=True): b"416",
            client.get("/big.bin", method="HEAD", window=True): b"200",
        }
        await waitUntil(lambda: all(streamID in client.ended for streamID in cases))
        self.assertEqual({streamID: client.statuses[streamID] for streamID in cases}, cases)
        self.assertEqual(set(client.ended[streamID] for streamID in cases), {"ended"})
        self.assertEqual((folder._h2Waiting, sum(folder._h2Files.values())), ({}, H2_OPEN_FILES))

    async def test_addressShareOfTheFiles(self) -> None:
        """
        One client address is sent at most its share of the files
        (C{maxOpenFilesPerHost}), whatever connection it asks on: past it,
        a request for a file gets a C{503} with C{Retry-After}, a C{HEAD}
        is still answered, and once one of its files ends the next request
        is sent its file.
        """
        port, folder, service = await self.startFolder()
        folder.maxOpenFilesPerHost = 3
        holder = await self.connectH2(port)
        stalled = await self.stall(holder, folder, 3)
        other = await self.connectH2(port)
        refused = other.get("/big.bin", window=True)
        head = other.get("/big.bin", method="HEAD", window=True)
        await waitUntil(lambda: refused in other.ended and head in other.ended)
        self.assertEqual((other.statuses[refused], other.headers[refused][b"retry-after"]), (b"503", b"1"))
        self.assertEqual(other.statuses[head], b"200")
        self.assertEqual(openFilesFor(self.big), 3)
        holder.reset(stalled[0])
        await waitUntil(lambda: openFilesFor(self.big) == 2)
        await self.served(other, other.get("/big.bin", window=True))

    async def test_clientReadDuringALargeDownload(self) -> None:
        """
        A client that takes a large file as fast as it comes, with windows
        that let the server send all of it at once, is read between the
        server's writes: its PING, sent after 1 MiB, is answered after a
        few MiB more (what the sockets hold), and its RST_STREAM ends the
        download (after the PING sent with it is answered, no more of the
        file comes).  Over TLS, the server read nothing until the whole
        file (64 MiB here, 300 MB in the report) was sent.
        """
        port, folder, service = await self.startFolder()
        size = 64 << 20
        with open(os.path.join(os.path.dirname(self.big), "huge.bin"), "wb") as f:
            f.truncate(size)
        cadata = self.trustRoot.dumpPEM().decode("ascii")

        def download() -> tuple[int, int, int, bytes]:
            """
            Blocking: ask for C{/huge.bin}; PING after 1 MiB; at the ACK,
            reset the stream and PING again; at that ACK, ask for
            C{/healthz}.  Return the bytes of the file received when the
            first PING went and when its ACK came, the bytes the server
            sent after the second ACK (until C{/healthz} is answered), and
            C{/healthz}'s status.
            """
            context = ssl.create_default_context(cadata=cadata)
            context.set_alpn_protocols(["h2"])
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
            raw.settimeout(10)
            raw.connect(("127.0.0.1", port))
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
                conn.initiate_connection()
                conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
                conn.increment_flow_control_window(2**31 - 1 - 65535)
                conn.send_headers(1, request("GET", "/huge.bin"), end_stream=True)
                tls.sendall(conn.data_to_send())
                received = 0
                pingAt = ackAt = afterReset = None
                status = b""
                while not status:
                    data = tls.recv(1 << 20)
                    if not data:
                        break
                    if afterReset is not None:
                        afterReset += len(data)
                    for event in conn.receive_data(data):
                        if isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                            received += len(event.data)
                        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                            return pingAt or 0, received, 0, b"the whole file came first"
                        elif isinstance(event, h2.events.PingAckReceived) and ackAt is None:
                            ackAt = received
                            conn.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
                            conn.ping(b"rst sent")
                        elif isinstance(event, h2.events.PingAckReceived):
                            afterReset = 0
                            conn.send_headers(3, request("GET", "/healthz"), end_stream=True)
                        elif isinstance(event, h2.events.ResponseReceived) and event.stream_id == 3:
                            status = dict(event.headers)[b":status"]
                    if pingAt is None and received >= 1 << 20:
                        pingAt = received
                        conn.ping(b"mid-file")
                    tls.sendall(conn.data_to_send())
                return pingAt or 0, ackAt or 0, afterReset or 0, status

        pingAt, ackAt, afterReset, status = await threads.deferToThread(download)
        self.assertEqual(status, b"200")
        self.assertLess(ackAt - pingAt, 16 << 20)
        self.assertLess(afterReset, 64 * 1024)

    async def test_bodyThatStopsComingTimesOut(self) -> None:
        """
        A request body that stops coming gets a C{408} on its stream after
        the idle timeout, although the client keeps its connection busy
        with PINGs; the connection goes on.
        """
        port, folder, service = await self.startFolder(Limits(idleTimeout=0.5))
        client = await self.connectH2(port)
        upload = client.get("/api/echo", ("content-length", "1000"), method="POST", window=True, endStream=False)
        client.conn.send_data(upload, b"x" * 100)
        client.flush()

        def ping() -> None:
            client.conn.ping(b"still up")
            client.flush()

        pings = task.LoopingCall(ping)
        pings.start(0.1)
        self.addCleanup(pings.stop)
        await waitUntil(lambda: upload in client.ended)
        self.assertEqual(client.statuses[upload], b"408")
        self.assertIn(b"stopped coming", client.bodies[upload])
        self.assertIsNone(client.goAway)
        after = client.get("/healthz", window=True)
        await waitUntil(lambda: after in client.ended)
        self.assertEqual(client.statuses[after], b"200")

