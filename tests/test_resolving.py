"""
netsuite's name resolver answers every lookup: a C{getaddrinfo} failure of
any kind is "no addresses", where Twisted's left its caller waiting.
"""

from __future__ import annotations

import errno
import gc
import socket
import threading
import time
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet._resolver import GAIResolver
from twisted.internet.base import _ThreePhaseEvent
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IResolutionReceiver
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from netsuite.resolving import LOOKUP_THREADS, AnsweringResolver, installResolver


@implementer(IResolutionReceiver)
class Receiver:
    def __init__(self) -> None:
        self.began = False
        self.addresses: list[Any] = []
        self.complete: defer.Deferred[list[Any]] = defer.Deferred()

    def resolutionBegan(self, resolution: Any) -> None:
        self.began = True

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        self.complete.callback(self.addresses)


class AnsweringResolverTests(TestCase):
    async def resolve(self, resolver: Any, name: str = "example.com") -> list[Any]:
        receiver = Receiver()
        resolver.resolveHostName(receiver, name, 80)
        self.assertTrue(receiver.began)
        return await receiver.complete.addTimeout(5, reactor)

    async def test_anyFailureIsNoAddresses(self) -> None:
        """
        C{getaddrinfo} failing with C{EMFILE} (the process is out of file
        descriptors), or anything else, is no addresses, at once and with
        no error logged: Twisted's resolver never told its receiver.
        """
        for exception in (OSError(errno.EMFILE, "Too many open files"), UnicodeError("label too long"), ValueError()):
            resolver = AnsweringResolver(reactor, getaddrinfo=lambda *args, e=exception: _raise(e))
            self.assertEqual(await self.resolve(resolver), [], exception)
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_failureOfAnotherKindWarnedOnceAMinute(self) -> None:
        """
        A failure other than a DNS error is logged as a warning (an
        operator sees the process ran out of descriptors), at most one a
        minute, the next saying how many came in between.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        resolver = AnsweringResolver(reactor, getaddrinfo=lambda *args: _raise(OSError(errno.EMFILE, "Too many open files")))
        resolver._clock = clock
        for _ in range(3):
            self.assertEqual(await self.resolve(resolver), [])
        clock.advance(60)
        self.assertEqual(await self.resolve(resolver), [])
        warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn("looking up example.com failed (OSError: [Errno 24] Too many open files)", warnings[0])
        self.assertIn("2 more such failures", warnings[1])
        resolver = AnsweringResolver(reactor, getaddrinfo=lambda *args: _raise(socket.gaierror(-2, "unknown")))
        await self.resolve(resolver)
        self.assertEqual(len([e for e in events if e.get("log_level") == LogLevel.warn]), 2, "a DNS error warned")

    async def test_addressesPassed(self) -> None:
        """
        What C{getaddrinfo} finds is passed on; its C{gaierror} is no
        addresses, as in Twisted's.
        """
        found = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 80))]
        resolver = AnsweringResolver(reactor, getaddrinfo=lambda *args: found)
        self.assertEqual(await self.resolve(resolver), [IPv4Address("TCP", "192.0.2.7", 80)])
        resolver = AnsweringResolver(reactor, getaddrinfo=lambda *args: _raise(socket.gaierror(-2, "Name or service not known")))
        self.assertEqual(await self.resolve(resolver), [])

    async def test_realLookup(self) -> None:
        addresses = await self.resolve(AnsweringResolver(reactor), "localhost")
        self.assertIn("127.0.0.1", [address.host for address in addresses])


class OwnThreadsTests(TestCase):
    """
    Lookups run on threads of their own, up to L{LOOKUP_THREADS} at once:
    on the reactor's 10, ten lookups of names whose DNS did not answer
    held every other lookup (and every other use of those threads).
    """

    def blockingResolver(self, threads: int = LOOKUP_THREADS) -> tuple[AnsweringResolver, threading.Event]:
        """
        A resolver whose lookups of names starting with C{slow} wait until
        the event returned is set; others find 192.0.2.1.
        """
        answer = threading.Event()

        def getaddrinfo(host: str, *args: Any) -> list:
            if host.startswith("slow"):
                answer.wait(10)
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 80))]

        resolver = AnsweringResolver(reactor, getaddrinfo=getaddrinfo, threads=threads)
        self.addCleanup(resolver.stop)
        self.addCleanup(answer.set)
        return resolver, answer

    def lookUp(self, resolver: AnsweringResolver, name: str) -> defer.Deferred[list[Any]]:
        receiver = Receiver()
        resolver.resolveHostName(receiver, name, 80)
        return receiver.complete

    async def test_slowLookupsHoldNoOthers(self) -> None:
        """
        Twelve lookups that wait on DNS (more than the reactor's pool has
        threads) leave a lookup of another name, and the reactor's threads,
        free.
        """
        resolver, answer = self.blockingResolver()
        slow = [self.lookUp(resolver, f"slow{i}.example") for i in range(12)]
        found = await self.lookUp(resolver, "fast.example").addTimeout(5, reactor)
        self.assertEqual([address.host for address in found], ["192.0.2.1"])
        self.assertEqual(await threads.deferToThread(lambda: "free").addTimeout(5, reactor), "free")
        self.assertFalse(any(d.called for d in slow))
        answer.set()
        self.assertEqual(await defer.gatherResults(slow).addTimeout(5, reactor), [[]] * 12)

    async def test_threadsBounded(self) -> None:
        """
        No more lookups than the pool's threads run at once: the next one
        waits for a thread.
        """
        resolver, answer = self.blockingResolver(threads=2)
        slow = [self.lookUp(resolver, f"slow{i}.example") for i in range(2)]
        fast = self.lookUp(resolver, "fast.example")
        await deferLater(reactor, 0.2)
        self.assertFalse(fast.called)
        answer.set()
        await defer.gatherResults(slow + [fast]).addTimeout(5, reactor)
        self.assertEqual([address.host for address in fast.result], ["192.0.2.1"])

    async def test_stopAndStartAgain(self) -> None:
        """
        L{AnsweringResolver.stop} ends the pool's threads (as the reactor's
        shutdown does); a later lookup starts them again.
        """
        resolver, answer = self.blockingResolver()
        await self.lookUp(resolver, "fast.example").addTimeout(5, reactor)
        pool = resolver._pool
        resolver.stop()
        await threadsEnded(self, pool)  # once idle: stop does not wait
        found = await self.lookUp(resolver, "fast.example").addTimeout(5, reactor)
        self.assertEqual([address.host for address in found], ["192.0.2.1"])
        self.assertIsNot(resolver._pool, pool)

    async def stopWhileLookingUp(self, stop: Any) -> None:
        """
        Call C{stop} (given the resolver) while a lookup waits on DNS: it
        returns at once (it joined the lookup threads, in the reactor's
        thread: the reactor, and the process's exit, waited for every
        lookup running or queued, each up to its DNS timeout), and the
        lookup's receiver is still told once it ends.
        """
        resolver, answer = self.blockingResolver()
        slow = self.lookUp(resolver, "slow.example")
        await deferLater(reactor, 0.1)
        timer = threading.Timer(3, answer.set)  # the test cannot hang
        timer.start()
        self.addCleanup(timer.cancel)
        started = time.monotonic()
        stop(resolver)
        self.assertLess(time.monotonic() - started, 1)
        self.assertFalse(slow.called)
        answer.set()
        self.assertEqual(await slow.addTimeout(5, reactor), [])

    async def test_stopDoesNotWaitForLookups(self) -> None:
        await self.stopWhileLookingUp(lambda resolver: resolver.stop())

    async def test_queuedLookupsToldAfterStop(self) -> None:
        """
        Lookups queued for a thread when the pool stops still run, and
        their receivers are told; then the threads end.
        """
        resolver, answer = self.blockingResolver(threads=1)
        slow = [self.lookUp(resolver, f"slow{i}.example") for i in range(3)]
        pool = resolver._pool
        resolver.stop()
        answer.set()
        self.assertEqual(await defer.gatherResults(slow).addTimeout(5, reactor), [[]] * 3)
        await threadsEnded(self, pool)

    async def test_shutdownDoesNotWaitForLookups(self) -> None:
        """
        Nor does the reactor's shutdown (its trigger), though the threads
        are daemon threads so that a lookup waiting on DNS would not hold
        up the exit.
        """
        await self.stopWhileLookingUp(lambda resolver: resolver._shutDown())


class ShutdownReactor:
    """
    The global reactor, with a shutdown of its own, fired by the test
    (L{shutdown}: its triggers by phase).
    """

    def __init__(self) -> None:
        self.shutdown = _ThreePhaseEvent()

    def addSystemEventTrigger(self, phase: str, eventType: str, f: Any, *args: Any, **kwargs: Any) -> Any:
        assert eventType == "shutdown", eventType
        return self.shutdown.addTrigger(phase, f, *args, **kwargs)

    def removeSystemEventTrigger(self, handle: Any) -> None:
        self.shutdown.removeTrigger(handle)

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


class PoolLifeTests(TestCase):
    """
    The lookup threads are daemon threads, stopped during the reactor's
    shutdown (one trigger, removed by L{AnsweringResolver.stop}).
    """

    async def lookedUp(self) -> tuple[ShutdownReactor, AnsweringResolver]:
        fake = ShutdownReactor()
        found = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 80))]
        resolver = AnsweringResolver(fake, getaddrinfo=lambda *args: found)
        self.addCleanup(resolver.stop)
        receiver = Receiver()
        resolver.resolveHostName(receiver, "example.com", 80)
        await receiver.complete.addTimeout(5, reactor)
        return fake, resolver

    async def test_daemonThreads(self) -> None:
        _, resolver = await self.lookedUp()
        pool = resolver._pool
        self.assertNotEqual(pool.threads, [])
        self.assertTrue(all(thread.daemon for thread in pool.threads))

    async def test_stoppedDuringShutdown(self) -> None:
        fake, resolver = await self.lookedUp()
        pool = resolver._pool
        self.assertEqual(len(fake.shutdown.during), 1)
        self.assertEqual(fake.shutdown.before + fake.shutdown.after, [])
        fake.shutdown.fireEvent()
        self.assertIsNone(resolver._pool)
        self.assertTrue(pool.joined)
        await threadsEnded(self, pool)
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_stopRemovesTheTrigger(self) -> None:
        fake, resolver = await self.lookedUp()
        self.assertEqual(len(fake.shutdown.during), 1)
        resolver.stop()
        self.assertEqual(fake.shutdown.during, [])
        resolver.stop()  # again: nothing


class SharedLookupTests(TestCase):
    """
    Lookups of the same name at the same time are one lookup: a browser
    opening six connections to a host whose DNS is slow held six threads.
    """

    def setUp(self) -> None:
        self.answer = threading.Event()
        self.looked: list[tuple] = []

        def getaddrinfo(host: str, port: int, *args: Any) -> list:
            self.looked.append((host, port))
            self.answer.wait(10)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))]

        self.resolver = AnsweringResolver(reactor, getaddrinfo=getaddrinfo)
        self.addCleanup(self.resolver.stop)
        self.addCleanup(self.answer.set)

    def lookUp(self, name: str, port: int = 80, receiver: Any = None) -> defer.Deferred[list[Any]]:
        receiver = receiver or Receiver()
        self.resolver.resolveHostName(receiver, name, port)
        self.assertTrue(receiver.began)
        return receiver.complete

    async def test_sameNameOnce(self) -> None:
        """
        Five lookups of a name while the first runs: C{getaddrinfo} is
        called once, and each receiver is told the addresses.  Another
        port is another lookup, and a lookup after the answer a new one
        (nothing is kept).
        """
        same = [self.lookUp("host.example") for _ in range(5)]
        other = self.lookUp("host.example", 443)
        await deferLater(reactor, 0.1)
        self.answer.set()
        found = await defer.gatherResults(same + [other]).addTimeout(5, reactor)
        self.assertEqual([[(a.host, a.port) for a in addresses] for addresses in found], [[("192.0.2.1", 80)]] * 5 + [[("192.0.2.1", 443)]])
        self.assertEqual(sorted(self.looked), [("host.example", 80), ("host.example", 443)])
        await self.lookUp("host.example").addTimeout(5, reactor)
        self.assertEqual(len(self.looked), 3)

    async def test_isRunning(self) -> None:
        """
        L{AnsweringResolver.isRunning} says whether a lookup of a name and
        port runs (one asked for now would share it).
        """
        self.assertFalse(self.resolver.isRunning("host.example", 80))
        found = self.lookUp("host.example")
        self.assertTrue(self.resolver.isRunning("host.example", 80))
        self.assertFalse(self.resolver.isRunning("host.example", 443))
        self.answer.set()
        await found.addTimeout(5, reactor)
        self.assertFalse(self.resolver.isRunning("host.example", 80))

    async def test_aReceiverRaising(self) -> None:
        """
        A receiver that raises is logged, and the others are still told.
        """

        class Raising(Receiver):
            def addressResolved(self, address: Any) -> None:
                raise ValueError("a bug in a receiver")

        broken = Raising()
        self.lookUp("host.example", receiver=broken)
        fine = self.lookUp("host.example")
        self.answer.set()
        found = await fine.addTimeout(5, reactor)
        self.assertEqual([a.host for a in found], ["192.0.2.1"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertFalse(broken.complete.called)


class NoThreadTests(TestCase):
    async def test_noThreadIsNoAddresses(self) -> None:
        """
        A lookup no thread could start for (the process is out of threads)
        is "no addresses", with a warning, and so is the next lookup of
        that name: Twisted's resolver never told the receiver, and every
        later lookup of the name joined the one never answered.
        """
        from netsuite import resolving

        def noThread(*args: object, **kwargs: object) -> None:
            raise RuntimeError("can't start new thread")

        self.patch(resolving, "_daemonThread", noThread)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        resolver = AnsweringResolver(reactor, getaddrinfo=lambda *args: [])
        self.addCleanup(resolver.stop)
        for _ in range(2):
            receiver = Receiver()
            resolver.resolveHostName(receiver, "example.com", 80)
            self.assertEqual(await receiver.complete.addTimeout(5, reactor), [])
        warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertIn("no thread could start for a lookup (can't start new thread)", warnings[0])


async def threadsEnded(testCase: TestCase, pool: Any) -> None:
    """
    Wait (up to 5 s) for every thread of C{pool} to end; fail if one does
    not.
    """
    for _ in range(50):
        if not any(thread.is_alive() for thread in pool.threads):
            return
        await deferLater(reactor, 0.1)
    testCase.fail("the lookup threads did not end")


def _raise(exception: BaseException) -> Any:
    raise exception


class FakeReactor:
    def __init__(self, resolver: Any) -> None:
        self.nameResolver = resolver
        self.installed: list[Any] = []

    def getThreadPool(self) -> Any:
        return None

    def installNameResolver(self, resolver: Any) -> Any:
        self.installed.append(resolver)
        self.nameResolver = resolver


class InstallTests(SynchronousTestCase):
    def test_replacesTwistedsOnce(self) -> None:
        fake = FakeReactor(None)
        fake.nameResolver = GAIResolver(fake)
        installResolver(fake)
        installResolver(fake)
        self.assertEqual([type(r) for r in fake.installed], [AnsweringResolver])

    def test_leavesOneOfYourOwn(self) -> None:
        own = object()
        fake = FakeReactor(own)
        installResolver(fake)
        self.assertEqual(fake.installed, [])
        self.assertIs(fake.nameResolver, own)
