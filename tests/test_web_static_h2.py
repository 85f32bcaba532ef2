"""
Tests for L{netsuite.web.static} over HTTP/2, in memory: Twisted's
C{H2Connection} serves a L{StaticFolder} over a transport that pauses it
like a socket whose buffer is full, and the C{h2} library is the client.
"""

from __future__ import annotations

import gzip
import os
from typing import Any, List, Optional, Sequence, Tuple

from twisted.internet.error import ConnectionLost
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from netsuite.limits import SendStall
from netsuite.stats import StatsRegistry
from netsuite.status import SimpleStatus
from netsuite.web.site import Limits, makeSite
from netsuite.web.static import CHUNK_SIZE, H2_MIN_CHUNK_SIZE, H2_OPEN_FILES, StaticFolder
from tests.test_web_static import (
    NotFound,
    ReactorLikeClock,
    SocketLikeTransport,
    TakingSocketTransport,
    openFilesFor,
    patterned,
)

try:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
    from hyperframe.frame import GoAwayFrame
    from twisted.web._http2 import H2Connection

    from netsuite.web.site import NetsuiteH2Connection
except ImportError:
    skip = "Twisted cannot speak HTTP/2 here (the h2 package is missing)"

BIG = 8 * 1024 * 1024
LARGEST_WINDOW = 2**31 - 1


class H2Harness:
    """
    One HTTP/2 connection to C{folder}: Twisted's server side, the C{h2}
    library's client side, and the clock that runs both.

    @ivar events: Every event the client has seen, by stream.
    @ivar bodies: The data each stream has received.
    """

    def __init__(
        self, folder: StaticFolder, clock: ReactorLikeClock, server: Any = None, transport: Any = None
    ) -> None:
        """
        @param server: the server's connection, made and given its site;
            by default Twisted's own C{H2Connection} serving C{folder}.
        @param transport: the server's transport; by default a
            L{SocketLikeTransport}.
        """
        self.clock = clock
        if server is None:
            site = Site(folder, reactor=clock)
            server = H2Connection(reactor=clock)
            server.site = site
            server.requestFactory = site.requestFactory
        self.server = server
        self.transport = transport if transport is not None else SocketLikeTransport()
        self.server.makeConnection(self.transport)
        # As Twisted's HTTP/1-or-2 protocol does once h2 is negotiated.
        self.transport.registerProducer(self.server, True)
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.client.initiate_connection()
        self.events: dict[int, List[Any]] = {}
        self.bodies: dict[int, bytes] = {}
        #: Acknowledge received data (open the windows again).
        self.acknowledge = True

    def largestWindows(self) -> None:
        """
        Announce the largest flow-control windows and frames there are, so
        that flow control never stops the server.
        """
        self.client.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: LARGEST_WINDOW,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: 2**24 - 1,
            }
        )
        self.client.increment_flow_control_window(LARGEST_WINDOW - 65535)
        self.send()
        # The client takes larger frames once the server has acknowledged.
        self.read()

    def streamWindows(self, size: int) -> None:
        """
        Announce stream windows of C{size} bytes, with the connection's
        window as large as it goes.
        """
        self.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: size})
        self.client.increment_flow_control_window(LARGEST_WINDOW - 65535)
        self.send()
        self.read()

    def get(
        self, streamID: int, path: bytes, headers: Sequence[Tuple[bytes, bytes]] = (), method: bytes = b"GET"
    ) -> None:
        self.client.send_headers(
            streamID,
            [
                (b":method", method),
                (b":path", path),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                *headers,
            ],
            end_stream=True,
        )
        self.events.setdefault(streamID, [])
        self.bodies.setdefault(streamID, b"")
        self.send()

    def send(self) -> None:
        """
        Give the server what the client has to send.
        """
        data = self.client.data_to_send()
        if data:
            self.server.dataReceived(data)

    def turns(self, count: int) -> None:
        """
        Let the reactor turn C{count} times.
        """
        for _ in range(count):
            self.clock.advance(0)

    def read(self) -> None:
        """
        The client takes what the server has sent; a stream that ends
        short of its Content-Length is noted as ending short.
        """
        data = self.transport.drain()
        if not data:
            return
        try:
            events = self.client.receive_data(data)
        except h2.exceptions.InvalidBodyLengthError as e:
            for streamID in self.events:
                self.events[streamID].append(("ended short", str(e)))
            return
        for event in events:
            streamID = getattr(event, "stream_id", 0)
            if streamID in self.events:
                self.events[streamID].append(event)
            if isinstance(event, h2.events.DataReceived):
                self.bodies[streamID] += event.data
                if self.acknowledge:
                    self.client.acknowledge_received_data(
                        event.flow_controlled_length, streamID
                    )
        self.send()

    def ended(self, streamID: int) -> Optional[object]:
        """
        How the stream ended: a C{StreamEnded} or C{StreamReset} event (or
        an "ended short" note), or L{None}.
        """
        for event in self.events[streamID]:
            if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset, tuple)):
                return event
        return None

    def readUntilEnded(self, streamID: int, limit: int = 100000) -> object:
        for _ in range(limit):
            self.read()
            ended = self.ended(streamID)
            if ended is not None:
                return ended
            self.clock.advance(0)
        raise AssertionError(f"stream {streamID} did not end")

    def queued(self) -> int:
        """
        The response bytes the server's HTTP/2 connection holds, not sent
        yet.
        """
        return sum(
            len(chunk)
            for queue in self.server._outboundStreamQueues.values()
            for chunk in queue
            if isinstance(chunk, (bytes, memoryview))
        )


class HTTP2Tests(SynchronousTestCase):
    """
    Large files over HTTP/2 follow the socket's pace, whatever window the
    client announces, and a body that cannot be sent whole resets its
    stream.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.big = os.path.join(self.root, "big.bin")
        with open(self.big, "wb") as f:
            f.write(patterned(BIG))
        self.clock = ReactorLikeClock()
        self.makePeer()
        self.bytesRead = 0
        pread = os.pread

        def countingRead(fd: int, size: int, offset: int) -> bytes:
            data = pread(fd, size, offset)
            self.bytesRead += len(data)
            return data

        self.patch(os, "pread", countingRead)

    def makePeer(self) -> None:
        """
        Set C{self.folder} serving C{self.root}, and C{self.peer}, an
        L{H2Harness} connected to it.
        """
        self.folder = StaticFolder(self.root, notFound=NotFound(), clock=self.clock)
        self.peer = H2Harness(self.folder, self.clock)

    def producer(self) -> Any:
        self.assertEqual(len(self.folder._producers), 1, "no file being sent")
        (producer,) = self.folder._producers
        return producer

    def test_largeWindowsDoNotReadTheFileIntoMemory(self) -> None:
        """
        A client that announces 2 GiB windows and then reads nothing gets
        no more read from the file than about what fills the socket; once
        it reads, it gets the whole file.
        """
        peer = self.peer
        peer.largestWindows()
        peer.get(1, b"/big.bin")
        peer.turns(200)
        self.assertLessEqual(self.bytesRead, 2 * CHUNK_SIZE)
        self.assertLessEqual(peer.queued(), 2 * CHUNK_SIZE)
        self.assertEqual(self.producer().offset, self.bytesRead)
        # Three more streams for the same file: each adds only a little.
        for streamID in (3, 5, 7):
            peer.get(streamID, b"/big.bin")
        peer.turns(200)
        self.assertLessEqual(self.bytesRead, 8 * CHUNK_SIZE)
        self.assertLessEqual(peer.queued(), 8 * CHUNK_SIZE)
        self.assertEqual(len(self.folder._producers), 4)
        for streamID in (1, 3, 5, 7):
            self.assertIsInstance(peer.readUntilEnded(streamID), h2.events.StreamEnded)
            self.assertEqual(peer.bodies[streamID], patterned(BIG))
        self.assertEqual(self.folder._producers, set())
        self.assertEqual(openFilesFor(self.big), 0)

    def test_filesAtOnceBounded(self) -> None:
        """
        One connection is sent at most L{H2_OPEN_FILES} files at once; its
        other requests for files wait, hold no file, and go on as those
        end (one reset meanwhile is passed over).  Each stream held a file
        of its own: 16 connections that read nothing took 1,024.
        """
        middle = os.path.join(self.root, "middle.bin")
        with open(middle, "wb") as f:
            f.write(patterned(2 * 1024 * 1024))
        peer = self.peer
        peer.largestWindows()
        streams = list(range(1, 2 * (H2_OPEN_FILES + 4), 2))
        for streamID in streams:
            peer.get(streamID, b"/middle.bin")
        peer.turns(20)
        self.assertEqual(len(self.folder._producers), H2_OPEN_FILES)
        self.assertEqual(openFilesFor(middle), H2_OPEN_FILES)
        reset = streams[-1]
        peer.client.reset_stream(reset)
        peer.send()
        for streamID in streams[:-1]:
            self.assertIsInstance(peer.readUntilEnded(streamID), h2.events.StreamEnded)
            self.assertEqual(peer.bodies[streamID], patterned(2 * 1024 * 1024), streamID)
        self.assertEqual(peer.bodies[reset], b"")
        self.assertEqual(self.folder._producers, set())
        self.assertEqual((self.folder._h2Files, self.folder._h2Waiting), ({}, {}))
        self.assertEqual(openFilesFor(middle), 0)

    def test_waitingRequestsAnsweredWhateverTheyBecome(self) -> None:
        """
        With a connection's L{H2_OPEN_FILES} files being sent: a C{HEAD}
        does not wait (it holds its file for no longer than its answer); a
        request that waited for a file removed meanwhile gets its 404, one
        for a file still there its 200, and each ends (the 503 of one that
        finds the folder's files all taken: the next test).
        """
        middle = os.path.join(self.root, "middle.bin")
        with open(middle, "wb") as f:
            f.write(patterned(2 * 1024 * 1024))
        for name in ("gone.bin", "later.bin"):
            with open(os.path.join(self.root, name), "wb") as f:
                f.write(patterned(100 * 1024))
        peer = self.peer
        peer.largestWindows()
        streams = list(range(1, 2 * H2_OPEN_FILES, 2))
        for streamID in streams:
            peer.get(streamID, b"/middle.bin")
        peer.turns(20)
        head, gone, later = (2 * H2_OPEN_FILES + 1, 2 * H2_OPEN_FILES + 3, 2 * H2_OPEN_FILES + 5)
        peer.get(head, b"/middle.bin", method=b"HEAD")
        peer.get(gone, b"/gone.bin")
        peer.get(later, b"/later.bin")
        self.assertIsInstance(peer.readUntilEnded(head), h2.events.StreamEnded)
        headers = [e for e in peer.events[head] if isinstance(e, h2.events.ResponseReceived)]
        self.assertEqual(dict(headers[0].headers)[b":status"], b"200")
        # ... while the files go on, and the others wait.
        self.assertTrue(any(peer.ended(streamID) is None for streamID in streams))
        self.assertEqual(peer.events[gone], [])
        os.remove(os.path.join(self.root, "gone.bin"))
        self.folder.maxOpenFiles = H2_OPEN_FILES  # the folder's files all taken by this connection
        for streamID in streams:
            self.assertIsInstance(peer.readUntilEnded(streamID), h2.events.StreamEnded)
        for streamID, status in ((gone, b"404"), (later, b"200")):
            self.assertIsInstance(peer.readUntilEnded(streamID), h2.events.StreamEnded)
            [response] = [e for e in peer.events[streamID] if isinstance(e, h2.events.ResponseReceived)]
            self.assertEqual(dict(response.headers)[b":status"], status, streamID)

    def stallFiles(self, waiting: int) -> Tuple[List[int], List[int]]:
        """
        Fill the connection's L{H2_OPEN_FILES} with streams of C{big.bin}
        that the client's windows (never opened again) stall, then ask for
        C{waiting} more: the streams sent, and those waiting.
        """
        peer = self.peer
        peer.acknowledge = False
        sent = list(range(1, 2 * H2_OPEN_FILES, 2))
        more = list(range(2 * H2_OPEN_FILES + 1, 2 * (H2_OPEN_FILES + waiting), 2))
        for streamID in sent + more:
            peer.get(streamID, b"/big.bin")
        peer.turns(20)
        peer.read()
        self.assertEqual(len(self.folder._producers), H2_OPEN_FILES)
        self.assertEqual(len(self.folder._h2Waiting.get(self.peer.server, {})), waiting)
        return sent, more

    def watchOpens(self) -> List[Any]:
        """
        The paths the folder opens from now on (a list that grows).
        """
        opened: List[Any] = []
        realOpen = self.folder._open

        def watchOpen(path: Any) -> Any:
            opened.append(path)
            return realOpen(path)

        self.patch(self.folder, "_open", watchOpen)
        return opened

    def test_resetWaitingRequestLeaves(self) -> None:
        """
        A waiting request whose stream is reset stops waiting at once: reset
        ones were kept until one of the files ended (3.3 KB each: a client
        resetting 30 a second while its files crawled grew the server by
        18 MB in 30 s).
        """
        sent, more = self.stallFiles(3)
        self.peer.client.reset_stream(more[1])
        self.peer.send()
        waiting = self.folder._h2Waiting[self.peer.server]
        self.assertEqual([request.channel.streamID for request in waiting], [more[0], more[2]])
        for streamID in more[::2]:
            self.peer.client.reset_stream(streamID)
        self.peer.send()
        self.assertEqual(self.folder._h2Waiting, {})

    def test_connectionLostWithRequestsWaiting(self) -> None:
        """
        A connection lost while requests wait: none of them is answered or
        opens its file as the files being sent end (Twisted tells the
        streams one at a time; each file's end started a waiting request on
        the lost connection: two critical errors in the log each, its file
        read, and a 200 logged).
        """
        sent, more = self.stallFiles(4)
        opened = self.watchOpens()
        self.peer.server.connectionLost(Failure(ConnectionLost()))
        self.peer.turns(5)
        self.assertEqual(opened, [])
        self.assertEqual((self.folder._producers, self.folder._h2Files, self.folder._h2Waiting), (set(), {}, {}))
        self.assertEqual(openFilesFor(self.big), 0)

    def test_connectionClosedByGoAwayWithRequestsWaiting(self) -> None:
        """
        After the server's GOAWAY (a protocol error), before the connection
        is lost, a file that ends starts no waiting request: h2 refuses to
        send anything then.
        """
        sent, more = self.stallFiles(2)
        self.peer.server.conn.close_connection()
        next(iter(self.folder._producers)).stopProducing()
        self.peer.turns(5)
        self.assertEqual(self.folder._h2Waiting, {})
        self.assertEqual(len(self.folder._producers), H2_OPEN_FILES - 1)

    def test_answersWithoutTheFileDoNotWait(self) -> None:
        """
        A C{304}, a C{412} or a C{416} needs no file: with the connection's
        files all stalled, each is answered at once, as a C{HEAD} is (they
        waited behind the stalled files, for a minute).
        """
        self.stallFiles(0)
        peer = self.peer
        peer.acknowledge = True
        [entry] = self.folder._cache.values()
        etag = entry.identity.etag
        cases = {
            31: ([(b"if-none-match", etag)], b"304"),
            33: ([(b"if-match", b'"nope"')], b"412"),
            35: ([(b"range", b"bytes=99999999-")], b"416"),
        }
        for streamID, (headers, _) in cases.items():
            peer.get(streamID, b"/big.bin", headers)
        for streamID, (_, status) in cases.items():
            self.assertIsInstance(peer.readUntilEnded(streamID, limit=50), h2.events.StreamEnded)
            [response] = [e for e in peer.events[streamID] if isinstance(e, h2.events.ResponseReceived)]
            self.assertEqual(dict(response.headers)[b":status"], status, streamID)
        self.assertNotIn(peer.server, self.folder._h2Waiting)

    def status(self, streamID: int) -> bytes:
        """
        The status stream C{streamID} is answered with, once it ends.
        """
        self.assertIsInstance(self.peer.readUntilEnded(streamID, limit=50), h2.events.StreamEnded)
        [response] = [e for e in self.peer.events[streamID] if isinstance(e, h2.events.ResponseReceived)]
        return dict(response.headers)[b":status"]  # type: ignore[no-any-return]

    def test_answersWithoutTheFileAtTheFolderLimit(self) -> None:
        """
        With the folder's C{maxOpenFiles} files being sent, a C{HEAD}, a
        C{304}, a C{412} and a C{416} are still answered (they got a
        C{503}, though they hold a file only while they are answered),
        holding no file afterwards; another file's C{GET} gets the C{503},
        and so does a C{304} by the ETag of a file that changed since, a
        whole C{200} now.
        """
        self.folder.maxOpenFiles = 1
        peer = self.peer
        peer.acknowledge = False
        peer.client.increment_flow_control_window(LARGEST_WINDOW - 65535)
        peer.get(1, b"/big.bin")
        for _ in range(20):
            peer.read()
            peer.turns(1)
        self.assertEqual(len(peer.bodies[1]), 65535)
        [entry] = self.folder._cache.values()
        etag = entry.identity.etag
        cases = {
            3: ([], b"HEAD", b"200"),
            5: ([(b"if-none-match", etag)], b"GET", b"304"),
            7: ([(b"if-match", b'"nope"')], b"GET", b"412"),
            9: ([(b"range", b"bytes=99999999-")], b"GET", b"416"),
            11: ([], b"GET", b"503"),
        }
        for streamID, (headers, method, _) in cases.items():
            peer.get(streamID, b"/big.bin", headers, method=method)
        for streamID, (_, _, status) in cases.items():
            self.assertEqual(self.status(streamID), status, streamID)
        self.assertEqual(openFilesFor(self.big), 1)
        with open(self.big, "ab") as f:
            f.write(b"more")
        peer.get(13, b"/big.bin", [(b"if-none-match", etag)])
        self.assertEqual(self.status(13), b"503")
        self.assertEqual(len(self.folder._producers), 1)
        self.assertEqual(openFilesFor(self.big), 1)

    def test_unsatisfiableRangeOfAnotherVersionWaits(self) -> None:
        """
        A C{Range} past the end whose C{If-Range} fails is a whole 200, not
        a 416: it waits for a file like any other.
        """
        self.stallFiles(0)
        peer = self.peer
        peer.get(31, b"/big.bin", [(b"range", b"bytes=999999999-"), (b"if-range", b'"other"')])
        peer.turns(5)
        self.assertEqual([r.channel.streamID for r in self.folder._h2Waiting[peer.server]], [31])
        peer.get(33, b"/big.bin", [(b"range", b"bytes=999999999-")])
        peer.acknowledge = True
        self.assertIsInstance(peer.readUntilEnded(33, limit=50), h2.events.StreamEnded)
        [response] = [e for e in peer.events[33] if isinstance(e, h2.events.ResponseReceived)]
        self.assertEqual(dict(response.headers)[b":status"], b"416")

    def test_waitingRequestFindsNoFileFree(self) -> None:
        """
        A request that waited, and then finds the folder's files all taken,
        gets a 503 with C{Retry-After}, and its stream ends.
        """
        middle = os.path.join(self.root, "middle.bin")
        with open(middle, "wb") as f:
            f.write(patterned(2 * 1024 * 1024))
        peer = self.peer
        peer.largestWindows()
        streams = list(range(1, 2 * H2_OPEN_FILES + 2, 2))
        for streamID in streams:
            peer.get(streamID, b"/middle.bin")
        peer.turns(20)
        self.folder.maxOpenFiles = 1
        waiting = streams[-1]
        for streamID in streams[:-1]:
            self.assertIsInstance(peer.readUntilEnded(streamID), h2.events.StreamEnded)
        self.assertIsInstance(peer.readUntilEnded(waiting), h2.events.StreamEnded)
        [response] = [e for e in peer.events[waiting] if isinstance(e, h2.events.ResponseReceived)]
        headers = dict(response.headers)
        self.assertEqual((headers[b":status"], headers[b"retry-after"]), (b"503", b"1"))

    def test_socketFullTooLongResetsTheStream(self) -> None:
        """
        A client that reads nothing for the stall timeout, with windows that
        never run out, has its stream reset and the file closed.
        """
        peer = self.peer
        peer.largestWindows()
        peer.get(1, b"/big.bin")
        peer.turns(10)
        self.assertLessEqual(self.bytesRead, 2 * CHUNK_SIZE)
        producer = self.producer()
        self.assertTrue(producer._stall.watching)
        self.clock.advance(self.folder.stallTimeout - 1)
        self.assertEqual(self.folder._producers, {producer})
        self.clock.advance(2)
        self.assertEqual(self.folder._producers, set())
        self.assertEqual(openFilesFor(self.big), 0)
        ended = peer.readUntilEnded(1)
        self.assertIsInstance(ended, h2.events.StreamReset)
        self.assertLess(len(peer.bodies[1]), BIG)

    def test_stalledWindowResetsTheStream(self) -> None:
        """
        A client that reads the socket but opens no window for the stall
        timeout has its stream reset (RST_STREAM), not ended as if the
        body were complete.
        """
        peer = self.peer
        peer.acknowledge = False
        peer.get(1, b"/big.bin")
        for _ in range(20):
            peer.read()
            peer.turns(1)
        producer = self.producer()
        self.assertTrue(producer._paused)
        self.clock.advance(self.folder.stallTimeout + 1)
        self.assertEqual(self.folder._producers, set())
        # Had the stream been ended instead, the client would see its end
        # (short of the length) once it opens the window.
        peer.acknowledge = True
        peer.client.acknowledge_received_data(len(peer.bodies[1]), 1)
        peer.send()
        ended = peer.readUntilEnded(1)
        self.assertIsInstance(ended, h2.events.StreamReset)
        self.assertEqual(openFilesFor(self.big), 0)

    def shrinkWhileSending(
        self, path: bytes, headers: Sequence[Tuple[bytes, bytes]] = (), streamID: int = 1
    ) -> object:
        """
        GET C{path} on stream C{streamID}, truncate the file once its first
        bytes are out, then read on: how the stream ends.
        """
        peer = self.peer
        peer.get(streamID, path, headers)
        for _ in range(20):
            peer.read()
            peer.turns(1)
        self.assertGreater(len(peer.bodies[streamID]), 0)
        os.truncate(os.path.join(self.root, path.decode("ascii").lstrip("/")), 1000)
        return peer.readUntilEnded(streamID)

    def test_shrunkFileResetsTheStream(self) -> None:
        """
        A file that shrinks while it is sent resets the stream: the client
        does not get a short body that looks complete.
        """
        ended = self.shrinkWhileSending(b"/big.bin")
        self.assertIsInstance(ended, h2.events.StreamReset)
        self.assertEqual(self.folder._producers, set())
        self.assertEqual(openFilesFor(self.big), 0)

    def test_shrunkGzipFileResetsTheStream(self) -> None:
        """
        The same for a body gzipped on the way, which has no
        Content-Length to tell the client that it is short.
        """
        text = os.path.join(self.root, "big.txt")
        with open(text, "wb") as f:
            f.write(os.urandom(BIG // 2).hex().encode("ascii"))
        ended = self.shrinkWhileSending(b"/big.txt", [(b"accept-encoding", b"gzip")])
        self.assertIsInstance(ended, h2.events.StreamReset)
        self.assertEqual(openFilesFor(text), 0)

    def test_gzipOverHTTP2(self) -> None:
        """
        A large text file gzipped on the way arrives whole over HTTP/2.
        """
        text = b"".join(b"line %d of a long text\n" % i for i in range(200000))
        path = os.path.join(self.root, "big.txt")
        with open(path, "wb") as f:
            f.write(text)
        peer = self.peer
        peer.get(1, b"/big.txt", [(b"accept-encoding", b"gzip")])
        self.assertIsInstance(peer.readUntilEnded(1), h2.events.StreamEnded)
        self.assertEqual(gzip.decompress(peer.bodies[1]), text)
        self.assertEqual(openFilesFor(path), 0)



class NetsuiteHTTP2Tests(HTTP2Tests):
    """
    The same through netsuite's own site and HTTP/2 connection (which
    parks a stream whose flow-control window is shut, and tells the file
    when its queue is sent); and a shut window costs no CPU: nothing is
    left to run each turn (the file looked at its queue every turn, and
    Twisted's sending loop took the stream again and again).
    """

    def makePeer(
        self, accessLog: Optional[str] = None, idleTimeout: Optional[float] = None, transport: Any = None
    ) -> None:
        """
        @param idleTimeout: the site's idle timeout, which the connection
            then has (as the site's connections have); by default it has
            none.
        @param transport: the server's transport (see L{H2Harness}).
        """
        status = SimpleStatus(StatsRegistry())
        site = makeSite(
            status,
            reactor=self.clock,
            stats=status.stats.forService("http"),
            root=self.root,
            accessLog=accessLog,
            limits=Limits(idleTimeout=idleTimeout or 60.0),
        )
        site.startFactory()
        self.addCleanup(site.stopFactory)
        self.folder = site.static
        server = NetsuiteH2Connection(site)
        server.site = site
        server.requestFactory = site.requestFactory
        if idleTimeout is not None:
            server.timeOut = site.limits.idleTimeout
        self.peer = H2Harness(self.folder, self.clock, server, transport)

    def assertIdle(self) -> None:
        """
        After some turns, nothing more is read and nothing waits to run
        in the next turn.
        """
        self.peer.turns(5)
        before = self.bytesRead
        self.peer.turns(50)
        self.assertEqual(self.bytesRead, before)
        now = self.clock.seconds()
        self.assertEqual([call for call in self.clock.getDelayedCalls() if call.getTime() <= now], [])

    def readSome(self) -> None:
        for _ in range(20):
            self.peer.read()
            self.peer.turns(1)

    def test_windowShutBySettings(self) -> None:
        """
        A client that shrinks its initial window to 0 in the middle of a
        body: the stream waits, idle, and is reset after the stall timeout.
        """
        peer = self.peer
        peer.streamWindows(1 << 20)
        peer.get(1, b"/big.bin")
        self.readSome()
        self.assertGreater(len(peer.bodies[1]), 0)
        peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        peer.send()
        self.readSome()
        got = len(peer.bodies[1])
        self.assertIdle()
        peer.read()
        self.assertEqual(len(peer.bodies[1]), got)
        self.clock.advance(self.folder.stallTimeout + 1)
        self.assertIsInstance(peer.readUntilEnded(1), h2.events.StreamReset)
        self.assertEqual(self.folder._producers, set())
        self.assertEqual(openFilesFor(self.big), 0)

    def test_connectionWindowShut(self) -> None:
        """
        Large stream windows but a connection window the client does not
        open again: the streams wait, idle, and go on when it opens.
        """
        peer = self.peer
        peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: LARGEST_WINDOW})
        peer.client.increment_flow_control_window(1000000)
        peer.send()
        peer.read()
        peer.acknowledge = False
        for streamID in (1, 3, 5, 7):
            peer.get(streamID, b"/big.bin")
        for _ in range(50):
            self.readSome()
        self.assertEqual(sum(map(len, peer.bodies.values())), 1065535)
        self.assertIdle()
        peer.acknowledge = True
        peer.client.increment_flow_control_window(LARGEST_WINDOW - 1065535)
        peer.send()
        for streamID in (1, 3, 5, 7):
            self.assertIsInstance(peer.readUntilEnded(streamID), h2.events.StreamEnded)
            self.assertEqual(peer.bodies[streamID], patterned(BIG))

    def test_settingsReopenAWindowTheFileFilled(self) -> None:
        """
        A stream whose window the file used up exactly goes on when the
        client raises the initial window in SETTINGS (the file waited for
        the stall reset: only a WINDOW_UPDATE resumed it).
        """
        peer = self.peer
        peer.acknowledge = False
        peer.client.increment_flow_control_window(LARGEST_WINDOW - 65535)
        peer.send()
        peer.get(1, b"/big.bin")
        for _ in range(20):
            peer.read()
            peer.turns(1)
        self.assertEqual(len(peer.bodies[1]), 65535)
        peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: LARGEST_WINDOW})
        peer.send()
        self.assertIsInstance(peer.readUntilEnded(1), h2.events.StreamEnded)
        self.assertEqual(peer.bodies[1], patterned(BIG))

    def test_stallAfterTheConnectionClosed(self) -> None:
        """
        A stream that stalls after the connection sent its GOAWAY (the
        client reads nothing, so the connection waits to close) is
        forgotten without an error (resetting it raised in h2, a traceback
        a stream).
        """
        peer = self.peer
        peer.acknowledge = False
        peer.get(1, b"/big.bin")
        peer.get(3, b"/big.bin")
        for _ in range(20):
            peer.read()
            peer.turns(1)
        peer.server.timeoutConnection()
        self.clock.advance(self.folder.stallTimeout + 1)
        self.assertEqual(self.folder._producers, set())
        self.assertEqual(peer.server.streams, {})
        self.assertEqual(openFilesFor(self.big), 0)

    def test_stallAfterTheIdleTimeoutIsLogged(self) -> None:
        """
        A stream that stalls after the idle timeout's GOAWAY (the client
        reads nothing, so the connection waits to close) is still told it
        is lost: it gets its access-log line, with the bytes sent, and is
        counted, as a stream reset before the GOAWAY is.
        """
        accessLog = self.mktemp()
        self.makePeer(accessLog=accessLog)
        peer = self.peer
        peer.acknowledge = False
        peer.get(1, b"/big.bin")
        self.readSome()
        self.assertEqual(len(peer.bodies[1]), 65535)
        peer.server.timeoutConnection()
        self.assertEqual(peer.server.conn.state_machine.state, h2.connection.ConnectionState.CLOSED)
        self.clock.advance(self.folder.stallTimeout + 1)
        self.clock.advance(1)  # the log is written once a second
        self.assertEqual(peer.server.streams, {})
        with open(accessLog) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('"GET /big.bin HTTP/2" 200 65535 ', lines[0])
        self.assertEqual(peer.server.site.stats.snapshot()["requests"], 1)

    def test_slowSteadyReaderKeepsItsFileAndConnection(self) -> None:
        """
        A client with large windows taking a file slowly but steadily, the
        connection's transport full all along (so that nothing is sent,
        and over TLS nothing read), keeps its stream and its connection:
        what it takes counts, for the file's stall timeout and for the
        connection's idle timeout.  Both cut it before (a 16 MiB window
        read at 3 KB/s over TLS got a GOAWAY after 126 s).  Once it takes
        nothing, its stream is reset and the connection times out.
        """
        self.makePeer(idleTimeout=60.0, transport=TakingSocketTransport())
        peer = self.peer
        peer.largestWindows()
        peer.get(1, b"/big.bin")
        peer.turns(10)
        producer = self.producer()
        self.assertTrue(producer._stall.watching)
        self.assertIsNotNone(peer.server._consumerBlocked)
        step = len(peer.transport.value()) // 400
        for _ in range(200):  # three idle timeouts, half of what waits taken
            self.clock.advance(1)
            peer.client.receive_data(peer.transport.take(step))
        self.assertIsNotNone(peer.server._consumerBlocked, "the test's client took it all")
        self.assertEqual(self.folder._producers, {producer})
        self.assertFalse(peer.transport.disconnecting)
        for _ in range(59):
            self.clock.advance(1)
        self.assertEqual(self.folder._producers, {producer})
        self.assertFalse(peer.transport.disconnecting)
        for _ in range(7):
            self.clock.advance(1)
        self.assertEqual(self.folder._producers, set())
        self.assertTrue(peer.transport.disconnecting)

    def fullTransport(self, size: int = BIG, bufferSize: int = SocketLikeTransport.bufferSize) -> Any:
        """
        A connection with an idle timeout and the largest windows, whose
        transport (a L{TakingSocketTransport} of C{bufferSize}) a file of
        C{size} bytes filled: its output watch is on.
        """
        transport = TakingSocketTransport()
        transport.bufferSize = bufferSize
        self.makePeer(idleTimeout=60.0, transport=transport)
        if size != BIG:
            with open(os.path.join(self.root, "small.bin"), "wb") as f:
                f.write(patterned(size))
        peer = self.peer
        peer.largestWindows()
        peer.get(1, b"/big.bin" if size == BIG else b"/small.bin")
        peer.turns(10)
        self.assertIsNotNone(peer.server._consumerBlocked)
        self.assertTrue(peer.server._sendStall.watching)
        return transport

    def test_resumedConnectionStopsItsWatch(self) -> None:
        """
        Once its transport takes data again, the connection's output watch
        is over.
        """
        transport = self.fullTransport()
        transport.drain()
        self.assertIsNone(self.peer.server._consumerBlocked)
        self.assertFalse(self.peer.server._sendStall.watching)

    def test_connectionLostWithItsTransportFullLeavesNoLook(self) -> None:
        """
        A connection lost while its transport is full leaves no look of
        its output watch pending.
        """
        self.fullTransport()
        self.peer.server.connectionLost(Failure(ConnectionLost()))
        looks = [c for c in self.clock.getDelayedCalls() if getattr(c.func, "__func__", None) is SendStall._look]
        self.assertEqual(looks, [])

    def test_takenSlowlyWithNoStreamOpenStillTimesOut(self) -> None:
        """
        What the client takes counts for the idle timeout only while a
        stream is open, as the frames sent do: a connection whose answers
        all ended, their last bytes taken slowly, gets the idle timeout's
        GOAWAY at the idle timeout.
        """
        transport = self.fullTransport(size=50_000, bufferSize=40_000)
        server = self.peer.server
        self.assertEqual(server.streams, {})
        for _ in range(59):
            self.clock.advance(1)
            transport.take(100)
        self.assertEqual(server.conn.state_machine.state, h2.connection.ConnectionState.SERVER_OPEN)
        self.clock.advance(1)
        self.assertEqual(server.conn.state_machine.state, h2.connection.ConnectionState.CLOSED)

    def test_fileClosedWhileWaitingToBeSentIsNotWatched(self) -> None:
        """
        A file closed (its stream reset) while paused and waiting for its
        connection to send what it gave, told then that it was sent, is
        watched no more: no look of its watch is left, and its client is
        not logged as having taken nothing a stall timeout later.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        transport = SocketLikeTransport()
        transport.bufferSize = 64 * 1024 * 1024
        self.makePeer(transport=transport)
        peer = self.peer
        peer.streamWindows(1 << 24)
        peer.get(1, b"/big.bin")
        peer.turns(4)
        peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        peer.send()
        peer.turns(1)
        producer = self.producer()
        self.assertIn(1, peer.server._sentWaiters)
        self.assertTrue(producer._waitingForTransport)
        producer.pauseProducing()  # as the stream's shut window does
        peer.client.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
        peer.send()
        peer.turns(3)
        self.assertTrue(producer.done)
        self.assertEqual(peer.server._sentWaiters, {})
        self.assertFalse(producer._stall.watching)
        self.clock.advance(self.folder.stallTimeout + 7)
        looks = [c for c in self.clock.getDelayedCalls() if getattr(c.func, "__func__", None) is SendStall._look]
        self.assertEqual(looks, [])
        self.assertEqual([e for e in events if "took nothing" in e.get("log_format", "")], [])

    def test_streamWindowShutNotKeptByAnotherStreamsProgress(self) -> None:
        """
        A stream whose window the client keeps shut is reset at the stall
        timeout while the client takes another stream's data slowly: what
        the connection's transport holds counts for a stream only while its
        window is open.  It counted for every stream, so one stream read at
        a trickle kept the others' files open for as long (300 s measured).
        """
        self.makePeer(idleTimeout=60.0, transport=TakingSocketTransport())
        peer = self.peer
        peer.client.increment_flow_control_window(LARGEST_WINDOW - 65535)
        peer.send()
        peer.acknowledge = False
        peer.get(1, b"/big.bin")
        for _ in range(10):
            peer.read()
            peer.turns(1)
        peer.get(3, b"/big.bin")
        peer.client.increment_flow_control_window(LARGEST_WINDOW - 65535, stream_id=3)
        peer.send()
        peer.turns(10)
        self.assertIsNotNone(peer.server._consumerBlocked)
        step = max(1, len(peer.transport.value()) // 400)
        for _ in range(120):
            self.clock.advance(1)
            for event in peer.client.receive_data(peer.transport.take(step)):
                if isinstance(event, h2.events.DataReceived) and event.stream_id == 3:
                    peer.client.acknowledge_received_data(event.flow_controlled_length, 3)
            peer.send()
        self.assertIsNotNone(peer.server._consumerBlocked, "the test's client took it all")
        self.assertEqual(sorted(p._streamID for p in self.folder._producers), [3])

    def _getWithGoAway(self, errorCode: int) -> None:
        """
        With stream 1 being answered (C{/big.bin}), send in one write a
        request on stream 3, the client's GOAWAY with C{errorCode}, and a
        request on stream 5.  The GOAWAY is written past the client's h2,
        which would take no answer once it had sent one.
        """
        peer = self.peer
        peer.events.setdefault(0, [])  # the connection's own events
        peer.get(1, b"/big.bin")
        self.readSome()
        self.assertEqual(len(self.folder._producers), 1)
        for streamID in (3, 5):
            peer.events.setdefault(streamID, [])
            peer.bodies.setdefault(streamID, b"")
        request = [(b":method", b"GET"), (b":path", b"/big.bin"), (b":scheme", b"https"), (b":authority", b"localhost")]
        peer.client.send_headers(3, request, end_stream=True)
        first = peer.client.data_to_send()
        peer.client.send_headers(5, request, end_stream=True)
        goAway = GoAwayFrame(0, last_stream_id=0, error_code=errorCode).serialize()
        peer.server.dataReceived(first + goAway + peer.client.data_to_send())

    def test_clientsGoAwayLetsItsStreamsFinish(self) -> None:
        """
        The client's GOAWAY (C{NO_ERROR}) lets the streams it opened
        finish, a request in the same read before it too (RFC 9113, 6.8;
        h2 closed at once, dropping them); a stream opened after it is
        refused (C{REFUSED_STREAM}: not processed).  After the last, the
        connection closes with netsuite's GOAWAY.
        """
        peer = self.peer
        self._getWithGoAway(0)
        for streamID in (1, 3):
            self.assertIsInstance(peer.readUntilEnded(streamID), h2.events.StreamEnded)
            self.assertEqual(peer.bodies[streamID], patterned(BIG))
        reset = peer.readUntilEnded(5)
        self.assertIsInstance(reset, h2.events.StreamReset)
        self.assertEqual(reset.error_code, h2.errors.ErrorCodes.REFUSED_STREAM)
        peer.read()
        self.assertTrue(peer.transport.disconnecting)
        terminated = [e for e in peer.events[0] if isinstance(e, h2.events.ConnectionTerminated)]
        self.assertEqual([(e.error_code, e.last_stream_id) for e in terminated], [(h2.errors.ErrorCodes.NO_ERROR, 5)])
        self.assertEqual(peer.server.streams, {})
        self.assertEqual(openFilesFor(self.big), 0)
        self.assertEqual(peer.server.site.stats.snapshot().get("errors", 0), 0)

    def test_clientsGoAwayWithAnErrorEndsTheConnection(self) -> None:
        """
        The client's GOAWAY with an error ends the connection quietly, as
        h2 takes it: the requests of its read are not processed (answering
        them raised in h2, tracebacks a connection and a 500 logged), and
        the stream being answered is dropped.
        """
        peer = self.peer
        peer.acknowledge = False
        self._getWithGoAway(h2.errors.ErrorCodes.PROTOCOL_ERROR)
        self.readSome()
        self.clock.advance(self.folder.stallTimeout + 1)
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(peer.server.streams, {})
        self.assertEqual(peer.events[3] + peer.events[5], [])
        self.assertEqual(self.folder._producers, set())
        self.assertEqual(openFilesFor(self.big), 0)
        self.assertEqual(peer.server.site.stats.snapshot().get("errors", 0), 0)

    def test_smallWindowsReadLittle(self) -> None:
        """
        Streams whose client allows 1000 bytes each, and then reads
        nothing, get no more read from the file than one frame's worth
        each (it was 64 KiB each, so that 100 streams held 6.4 MiB); once
        the client reads, every stream gets the whole file.
        """
        peer = self.peer
        peer.acknowledge = False
        peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        peer.send()
        peer.read()
        streams = (1, 3, 5, 7)
        for streamID in streams:
            peer.get(streamID, b"/big.bin")
        for _ in range(20):
            peer.read()
            peer.turns(1)
        self.assertLessEqual(self.bytesRead, len(streams) * H2_MIN_CHUNK_SIZE)
        for streamID in streams:
            self.assertEqual(len(peer.bodies[streamID]), 1000)
        peer.acknowledge = True
        peer.client.increment_flow_control_window(LARGEST_WINDOW - 65535)
        for streamID in streams:
            peer.client.increment_flow_control_window(LARGEST_WINDOW - 1000, streamID)
        peer.send()
        for streamID in streams:
            self.assertIsInstance(peer.readUntilEnded(streamID), h2.events.StreamEnded)
            self.assertEqual(peer.bodies[streamID], patterned(BIG))

    def test_windowShutFromTheStart(self) -> None:
        """
        A stream asked for with an initial window of 0: its first data is
        queued while the window is shut; a WINDOW_UPDATE sends it all (the
        sending loop was never woken: the stream got no body).
        """
        peer = self.peer
        peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        peer.send()
        peer.read()
        peer.get(1, b"/big.bin")
        self.readSome()
        self.assertEqual(peer.bodies[1], b"")
        self.assertIdle()
        peer.client.increment_flow_control_window(LARGEST_WINDOW - 65535)
        peer.client.increment_flow_control_window(LARGEST_WINDOW, 1)
        peer.send()
        self.assertIsInstance(peer.readUntilEnded(1), h2.events.StreamEnded)
        self.assertEqual(peer.bodies[1], patterned(BIG))

    def test_bodyCutShortResetsWithAnError(self) -> None:
        """
        A body cut short (the file shrank; the client took nothing for the
        stall timeout) resets its stream with C{INTERNAL_ERROR}, as nginx
        does: a reset with C{NO_ERROR} says the answer was complete (RFC
        9113, 8.1), and curl took a gzipped body, which has no
        Content-Length, cut short for a whole one.
        """
        text = os.path.join(self.root, "big.txt")
        with open(text, "wb") as f:
            f.write(os.urandom(BIG // 2).hex().encode("ascii"))
        ended = self.shrinkWhileSending(b"/big.txt", [(b"accept-encoding", b"gzip")])
        self.assertIsInstance(ended, h2.events.StreamReset)
        self.assertEqual(ended.error_code, h2.errors.ErrorCodes.INTERNAL_ERROR)
        peer = self.peer
        peer.acknowledge = False
        peer.get(3, b"/big.bin")
        self.readSome()
        self.clock.advance(self.folder.stallTimeout + 1)
        ended = peer.readUntilEnded(3)
        self.assertIsInstance(ended, h2.events.StreamReset)
        self.assertEqual(ended.error_code, h2.errors.ErrorCodes.INTERNAL_ERROR)

    def test_bodyCutShortIsLogged(self) -> None:
        """
        A stream reset because its body was cut short (the client took
        nothing for the stall timeout; the file shrank) gets its
        access-log line and is counted, as over HTTP/1: its status and the
        body bytes sent, not those still queued.  Such streams were in no
        log, and C{/metrics} did not count them.
        """
        accessLog = self.mktemp()
        self.makePeer(accessLog=accessLog)
        peer = self.peer
        site = peer.server.site
        peer.acknowledge = False
        peer.get(1, b"/big.bin")
        self.readSome()
        self.assertEqual(len(peer.bodies[1]), 65535)
        self.clock.advance(self.folder.stallTimeout + 1)
        self.assertIsInstance(peer.readUntilEnded(1), h2.events.StreamReset)
        peer.acknowledge = True
        peer.client.acknowledge_received_data(65535, 1)
        shrunk = os.path.join(self.root, "shrinks.bin")
        with open(shrunk, "wb") as f:
            f.write(patterned(BIG))
        self.assertIsInstance(self.shrinkWhileSending(b"/shrinks.bin", streamID=3), h2.events.StreamReset)
        self.clock.advance(1)  # the log is written once a second
        with open(accessLog) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertIn('"GET /big.bin HTTP/2" 200 65535 ', lines[0])
        self.assertIn('"GET /shrinks.bin HTTP/2" 200 %d ' % (len(peer.bodies[3]),), lines[1])
        self.assertEqual(site.stats.snapshot()["requests"], 2)

    def test_stalledStreamLogsOnlyWhatWasSent(self) -> None:
        """
        A stream reset by the stall timeout with a chunk of the file still
        queued (its window of 1,000 bytes took only the start of the first
        read) is logged with the 1,000 bytes sent, not with what the file
        gave it: the request is told it is lost before its queue is
        dropped.
        """
        accessLog = self.mktemp()
        self.makePeer(accessLog=accessLog)
        peer = self.peer
        peer.acknowledge = False
        peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        peer.send()
        peer.read()
        peer.get(1, b"/big.bin")
        self.readSome()
        self.assertEqual(len(peer.bodies[1]), 1000)
        self.assertEqual(peer.queued(), H2_MIN_CHUNK_SIZE - 1000)
        self.clock.advance(self.folder.stallTimeout + 1)
        self.assertIsInstance(peer.readUntilEnded(1), h2.events.StreamReset)
        self.clock.advance(1)  # the log is written once a second
        with open(accessLog) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('"GET /big.bin HTTP/2" 200 1000 ', lines[0])

    def stallWithWindowsShut(self, idleTimeout: float, waiting: int) -> Tuple[List[int], List[int]]:
        """
        A new peer, with an idle timeout of C{idleTimeout} seconds, whose
        client shuts its windows and asks for files (see L{stallFiles}):
        the streams sent, which stall, and the C{waiting} ones.
        """
        self.makePeer(idleTimeout=idleTimeout)
        peer = self.peer
        peer.events.setdefault(0, [])
        peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        peer.send()
        peer.read()
        sent, more = self.stallFiles(waiting)
        self.readSome()
        return sent, more

    def stallSilently(self, pingAfter: float) -> Tuple[List[int], List[int]]:
        """
        A client that shuts its windows, asks for 12 files (8 are sent, 4
        wait), sends a PING C{pingAfter} seconds later (while it waits for
        the answers, the idle timeout starts again), and then nothing: the
        clock is moved on to the stall timeout of the files.
        """
        sent, waiting = self.stallWithWindowsShut(60.0, 4)
        peer = self.peer
        self.assertEqual(self.folder.stallTimeout, peer.server.timeOut)
        self.clock.advance(pingAfter)
        peer.client.ping(b"12345678")
        peer.send()
        self.clock.advance(self.folder.stallTimeout - pingAfter)
        self.readSome()
        return sent, waiting

    def test_idleTimeoutWithEveryFileStalled(self) -> None:
        """
        A client that shut its windows and then sends nothing: its files
        stall, and the connection reaches its idle timeout as their stall
        timeout comes (here half a second later: the client's last frame
        came after the files stalled).  It ends with a GOAWAY
        C{NO_ERROR}, as any idle timeout (it was C{PROTOCOL_ERROR}), and
        the requests waiting for its files do not start then: each was
        given its file and its headers for nothing, the GOAWAY following.
        """
        sent, waiting = self.stallSilently(0.5)
        peer = self.peer
        self.clock.advance(1)
        self.readSome()
        [goAway] = [e for e in peer.events[0] if isinstance(e, h2.events.ConnectionTerminated)]
        self.assertEqual(goAway.error_code, h2.errors.ErrorCodes.NO_ERROR)
        for streamID in waiting:
            self.assertEqual(peer.events[streamID], [], streamID)
        self.assertEqual(self.folder._producers, set())
        self.assertEqual(self.folder._h2Waiting, {})
        self.assertEqual(openFilesFor(self.big), 0)

    def test_stalledFilesMakeWayBeforeTheIdleTimeout(self) -> None:
        """
        The same client, whose last frame came 30 s after its files
        stalled: the stalled files are reset, and the waiting requests
        start, the idle timeout still 30 s away.
        """
        sent, waiting = self.stallSilently(30)
        peer = self.peer
        self.assertEqual([e for e in peer.events[0] if isinstance(e, h2.events.ConnectionTerminated)], [])
        for streamID in waiting:
            self.assertIsInstance(peer.events[streamID][0], h2.events.ResponseReceived, streamID)
        self.assertEqual(len(self.folder._producers), len(waiting))

    def test_filesEndingWithAShortIdleTimeout(self) -> None:
        """
        With an idle timeout of 1 s, a client asking for more files than
        L{H2_OPEN_FILES} and reading them all gets them all: each file
        that ends lets a waiting request start.  Every file's end timed the
        connection out, its idle timeout always due within the second, so
        the waiting requests were lost with a GOAWAY (nghttp: none of 12
        processed).
        """
        self.makePeer(idleTimeout=1.0)
        middle = os.path.join(self.root, "middle.bin")
        with open(middle, "wb") as f:
            f.write(patterned(1024 * 1024))
        peer = self.peer
        peer.events.setdefault(0, [])
        peer.largestWindows()
        streams = list(range(1, 2 * (H2_OPEN_FILES + 4), 2))
        for streamID in streams:
            peer.get(streamID, b"/middle.bin")
        while not peer.transport.disconnecting and any(peer.ended(streamID) is None for streamID in streams):
            peer.read()
            self.clock.advance(0)
        peer.read()
        self.assertEqual([e for e in peer.events[0] if isinstance(e, h2.events.ConnectionTerminated)], [])
        for streamID in streams:
            self.assertIsInstance(peer.ended(streamID), h2.events.StreamEnded, streamID)
            self.assertEqual(peer.bodies[streamID], patterned(1024 * 1024), streamID)
        self.assertFalse(peer.transport.disconnecting)

    def test_stalledFileOfABusyConnectionWithAShortIdleTimeout(self) -> None:
        """
        With an idle timeout of 1 s, a client whose files stall but which
        keeps sending (a PING every half second) has its stalled files
        reset by their stall timeout, and the requests waiting for a file
        start: the connection was busy long after the files stalled, and
        does not time out (its idle timeout, always due within the second,
        ended it with its other streams).
        """
        sent, waiting = self.stallWithWindowsShut(1.0, 1)
        peer = self.peer
        for _ in range(int(self.folder.stallTimeout * 2) + 2):
            self.clock.advance(0.5)
            if peer.transport.disconnecting:
                break
            peer.client.ping(b"12345678")
            peer.send()
            peer.read()
        self.readSome()
        self.assertEqual([e for e in peer.events[0] if isinstance(e, h2.events.ConnectionTerminated)], [])
        for streamID in sent:
            self.assertIsInstance(peer.ended(streamID), h2.events.StreamReset, streamID)
        self.assertIsInstance(peer.events[waiting[0]][0], h2.events.ResponseReceived)
        self.assertEqual(len(self.folder._producers), 1)

    def test_shrunkFileResumedByAWindowUpdateOfAStreamResetWithIt(self) -> None:
        """
        A client sends a WINDOW_UPDATE and an RST_STREAM for a stream in
        one packet while its file has shrunk.  The window update resumed
        the file, which found it short and reset the stream, which h2 had
        closed already (the client's reset was read): h2's
        C{StreamClosedError} escaped through C{dataReceived}, a traceback,
        and the connection was lost.  Now a stream h2 has closed has no
        room (L{NetsuiteH2Connection.remainingOutboundWindow}), nothing
        resumes its file, and the reset ends it: it is logged once, and
        the connection goes on.
        """
        accessLog = self.mktemp()
        self.makePeer(accessLog=accessLog)
        peer = self.peer
        peer.events.setdefault(0, [])
        peer.acknowledge = False
        # A stream window the file's reads fill exactly: nothing is left
        # queued when it is shut, and the window update resumes the file.
        peer.streamWindows(4 * H2_MIN_CHUNK_SIZE)
        peer.get(1, b"/big.bin")
        self.readSome()
        self.assertEqual(len(peer.bodies[1]), 4 * H2_MIN_CHUNK_SIZE)
        self.assertEqual(peer.queued(), 0)
        self.assertTrue(self.producer()._paused)
        os.truncate(self.big, 1000)
        peer.client.increment_flow_control_window(65535, 1)
        peer.client.reset_stream(1)
        peer.send()
        self.readSome()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.folder._producers, set())
        self.assertEqual(peer.server.streams, {})
        self.assertEqual(openFilesFor(self.big), 0)
        self.assertFalse(peer.transport.disconnecting)
        peer.acknowledge = True
        with open(os.path.join(self.root, "small.txt"), "wb") as f:
            f.write(b"small")
        peer.get(3, b"/small.txt")
        self.assertIsInstance(peer.readUntilEnded(3), h2.events.StreamEnded)
        self.assertEqual(peer.bodies[3], b"small")
        self.clock.advance(1)  # the log is written once a second
        with open(accessLog) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('"GET /big.bin HTTP/2" 200 %d ' % (4 * H2_MIN_CHUNK_SIZE,), lines[0])
        self.assertEqual(peer.server.site.stats.snapshot()["requests"], 1)

    def makeLoggingPeer(self) -> str:
        """
        L{makePeer} with an access log, whose connection's factory is the
        site, which logs the answers finished; the log's path.
        """
        accessLog = self.mktemp()
        self.makePeer(accessLog=accessLog)
        self.peer.server.factory = self.peer.server.site
        return accessLog

    def resetAllInOneRead(self, reset: List[int], then: bytes) -> None:
        """
        With the connection's files stalled and 4 requests waiting, the
        client resets the streams C{reset} and sends C{then}, in one read.
        """
        peer = self.peer
        for streamID in reset:
            peer.client.reset_stream(streamID, h2.errors.ErrorCodes.CANCEL)
        peer.server.dataReceived(peer.client.data_to_send() + then)

    def loggedStatuses(self, accessLog: str) -> List[Tuple[str, str]]:
        """
        The target and status of each line of the access log, once written.
        """
        self.clock.advance(1)  # the log is written once a second
        with open(accessLog) as f:
            return [(line.split('"')[3].split()[1], line.split('"')[4].split()[0]) for line in f.read().splitlines()]

    def test_waitingRequestsResetWithNothingAfter(self) -> None:
        """
        The client resets a file's stream and the 4 waiting ones in one
        read, with nothing after: h2 has closed the waiting streams (no
        new stream made it forget them), and the file's end starts none
        of them, nor opens their files; each is logged once, 499.
        """
        accessLog = self.makeLoggingPeer()
        sent, waiting = self.stallFiles(4)
        opened = self.watchOpens()
        self.resetAllInOneRead(sent[:1] + waiting, b"")
        self.assertEqual(opened, [])
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(sorted(status for _, status in self.loggedStatuses(accessLog)), ["200"] + ["499"] * 4)

    def test_waitingRequestsResetWithTheNextRequest(self) -> None:
        """
        The client resets, in one read, every stream (8 being sent files,
        4 waiting for one) and opens a new one: h2 forgets the reset
        streams as it reads the new one's HEADERS, before Twisted hears of
        the resets.  The first reset ends a file, and a waiting request
        whose stream is gone does not start (nor open its file): each
        waiting request is logged once, 499, and the new request is
        answered.  They were started on the forgotten stream (h2's
        C{StreamIDTooLowError}): a critical error in the log each, logged
        and counted as 500.
        """
        accessLog = self.makeLoggingPeer()
        with open(os.path.join(self.root, "small.txt"), "wb") as f:
            f.write(b"small")
        sent, waiting = self.stallFiles(4)
        peer = self.peer
        peer.client.send_headers(
            25,
            [(b":method", b"GET"), (b":path", b"/small.txt"), (b":scheme", b"https"), (b":authority", b"localhost")],
            end_stream=True,
        )
        request = peer.client.data_to_send()
        peer.events[25], peer.bodies[25] = [], b""
        opened = self.watchOpens()
        self.resetAllInOneRead(sent + waiting, request)
        self.assertEqual([path for path in opened if path.endswith(b"big.bin")], [])
        peer.acknowledge = True
        peer.client.increment_flow_control_window(LARGEST_WINDOW - 65535)
        peer.send()
        self.assertIsInstance(peer.readUntilEnded(25), h2.events.StreamEnded)
        self.assertEqual(peer.bodies[25], b"small")
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual((self.folder._producers, self.folder._h2Waiting), (set(), {}))
        self.assertEqual(peer.server.streams, {})
        self.assertEqual(openFilesFor(self.big), 0)
        logged = self.loggedStatuses(accessLog)
        self.assertEqual(len(logged), 13, logged)
        self.assertEqual(sorted(status for _, status in logged), ["200"] * 9 + ["499"] * 4)
        self.assertIn(("/small.txt", "200"), logged)
        counted = {key: n for key, n in peer.server.site.metrics._requests.items() if n}
        self.assertEqual(counted, {("GET", "200"): 9, ("GET", "499"): 4})

    def test_waitingRequestsResetWithTheClientsGoAway(self) -> None:
        """
        The same with the client's GOAWAY (C{NO_ERROR}) after resets of
        two of the files and of the waiting requests (a browser closing a
        tab): h2 forgets the reset streams as it counts those left open.
        The waiting requests are logged 499, once each, and the files not
        reset are sent to the end, the connection closing after them.
        """
        accessLog = self.makeLoggingPeer()
        sent, waiting = self.stallFiles(4)
        peer = self.peer
        peer.events.setdefault(0, [])
        goAway = GoAwayFrame(0, last_stream_id=0, error_code=0).serialize()
        self.resetAllInOneRead(sent[:2] + waiting, goAway)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.folder._h2Waiting, {})
        peer.acknowledge = True
        peer.client.increment_flow_control_window(LARGEST_WINDOW - 65535)
        for streamID in sent[2:]:
            peer.client.increment_flow_control_window(LARGEST_WINDOW - 65535, streamID)
        peer.send()
        for streamID in sent[2:]:
            self.assertIsInstance(peer.readUntilEnded(streamID), h2.events.StreamEnded)
            self.assertEqual(peer.bodies[streamID], patterned(BIG))
        peer.read()
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(openFilesFor(self.big), 0)
        logged = self.loggedStatuses(accessLog)
        self.assertEqual(len(logged), 12, logged)
        self.assertEqual(sorted(status for _, status in logged), ["200"] * 8 + ["499"] * 4)
        self.assertEqual(self.flushLoggedErrors(), [])
