"""
Tests for L{netsuite.proxyrules}: the proxy's client and destination rules.
"""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from netsuite import proxyrules
from netsuite.proxyrules import ProxyRules, Refusal, hostNameProblem, parseNetworks
from tests.helpers import hostAddress


class ClientTests(SynchronousTestCase):
    def test_loopbackOnlyByDefault(self) -> None:
        rules = ProxyRules()
        for host in ("127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.1"):
            rules.checkClient(host)
        for host in ("10.0.0.1", "192.0.2.1", "2001:db8::1", "::ffff:10.0.0.1", "not an address"):
            self.assertRaises(Refusal, rules.checkClient, host)

    def test_embeddedIPv4NotUnwrappedForClients(self) -> None:
        """
        A client is judged as an IPv4 address only when IPv4-mapped: 6to4,
        NAT64 and IPv4-compatible addresses are IPv6 hosts (anyone may hold
        C{2002:7f00:1::99}), not loopback clients, and they match IPv6
        networks.
        """
        rules = ProxyRules()
        rules.checkClient("::ffff:127.0.0.1")
        for host in ("2002:7f00:1::99", "64:ff9b::7f00:1", "::127.0.0.1"):
            with self.assertRaises(Refusal, msg=host) as e:
                rules.checkClient(host)
            self.assertIn("does not serve clients from", e.exception.reason)
        rules = ProxyRules(clients=parseNetworks("2002::/16, 64:ff9b::/96"))
        for host in ("2002:7f00:1::99", "64:ff9b::7f00:1"):
            rules.checkClient(host)

    def test_configuredNetworks(self) -> None:
        rules = ProxyRules(clients=parseNetworks("10.0.0.0/8, 2001:db8::/32"))
        rules.checkClient("10.1.2.3")
        rules.checkClient("2001:db8::5")
        with self.assertRaises(Refusal) as e:
            rules.checkClient("127.0.0.1")
        self.assertEqual(e.exception.reason, "this proxy does not serve clients from 127.0.0.1")

    def test_parseNetworks(self) -> None:
        self.assertEqual([str(n) for n in parseNetworks("127.0.0.1, 10.1.2.3/8,::1")],
                         ["127.0.0.1/32", "10.0.0.0/8", "::1/128"])
        for bad in ("", " , ", "10.0.0.0/33", "localhost", "1.2.3.4.5"):
            self.assertRaises(ValueError, parseNetworks, bad)


class DestinationTests(SynchronousTestCase):
    def assertRefused(self, rules: ProxyRules, addresses, port: int, why: str) -> None:
        with self.assertRaises(Refusal) as e:
            rules.checkDestination(addresses, port)
        self.assertIn(why, e.exception.reason)

    def test_publicAllowed(self) -> None:
        ProxyRules().checkDestination(["93.184.216.34", "2606:2800:220:1::"], 80)

    def test_refusedByDefault(self) -> None:
        rules = ProxyRules()
        cases = {
            "127.0.0.1": "loopback",
            "127.255.0.9": "loopback",
            "::1": "loopback",
            "::ffff:127.0.0.1": "loopback",
            "64:ff9b::7f00:1": "loopback",
            "2002:7f00:1::": "loopback",
            "::127.0.0.1": "loopback",
            "169.254.169.254": "link-local",
            "fe80::1": "link-local",
            "fe80::1%eth0": "link-local",
            "0.0.0.0": "unspecified",
            "0.1.2.3": "unspecified",
            "::": "unspecified",
            "224.0.0.1": "multicast",
            "ff02::1": "multicast",
            "255.255.255.255": "broadcast",
            "240.0.0.1": "reserved",
        }
        for address, why in cases.items():
            self.assertRefused(rules, [address], 80, why)

    def test_everyAddressChecked(self) -> None:
        """
        A name that resolves to a public and a refused address is refused,
        whatever the order.
        """
        rules = ProxyRules()
        self.assertRefused(rules, ["93.184.216.34", "127.0.0.1"], 80, "127.0.0.1 is a loopback")
        self.assertRefused(rules, ["169.254.169.254", "93.184.216.34"], 80, "link-local")
        self.assertRefused(rules, [], 80, "no address")

    def test_privateConfigurable(self) -> None:
        private = ["10.0.0.1", "172.16.5.4", "192.168.1.1", "fd00::1", "100.64.0.1", "::ffff:192.168.0.1"]
        ProxyRules().checkDestination(private, 80)
        for address in private:
            self.assertRefused(ProxyRules(allowPrivate=False), [address], 80, "private")

    def test_allowLoopback(self) -> None:
        rules = ProxyRules(allowLoopback=True)
        rules.checkDestination(["127.0.0.1", "::1"], 8080)
        self.assertRefused(rules, ["169.254.169.254"], 80, "link-local")

    def test_ownAddressesRefusedEvenWithLoopbackAllowed(self) -> None:
        rules = ProxyRules(allowLoopback=True)
        rules.addOwnAddress("127.0.0.1", 3128)
        self.assertRefused(rules, ["127.0.0.1"], 3128, "this proxy itself")
        self.assertRefused(rules, ["::ffff:127.0.0.1"], 3128, "this proxy itself")
        rules.checkDestination(["127.0.0.1"], 3129)

    def test_unspecifiedListenerCoversLocalAddresses(self) -> None:
        rules = ProxyRules(allowLoopback=True, localAddresses={parseNetworks("192.0.2.7")[0][0]})
        rules.addOwnAddress("0.0.0.0", 3128)
        for address in ("127.0.0.1", "127.0.0.2", "192.0.2.7", "::1"):
            self.assertRefused(rules, [address], 3128, "this proxy itself")
        rules.checkDestination(["192.0.2.8"], 3128)

    def test_unspecifiedListenerCoversEveryBindableAddress(self) -> None:
        """
        For a listener on an unspecified address, an address this host can
        bind to (a network card's, which the host's name may not resolve
        to) is the proxy's own on the listener's port; it is asked only for
        a destination on that port.
        """
        asked = []

        def isLocal(address: object) -> bool:
            asked.append(str(address))
            return str(address) == "203.0.113.5"

        self.patch(proxyrules, "isLocalAddress", isLocal)
        rules = ProxyRules()
        rules.addOwnAddress("0.0.0.0", 3128)
        self.assertRefused(rules, ["203.0.113.5"], 3128, "203.0.113.5 is this proxy itself")
        self.assertRefused(rules, ["::ffff:203.0.113.5"], 3128, "this proxy itself")
        rules.checkDestination(["203.0.113.6"], 3128)
        rules.checkDestination(["203.0.113.5"], 443)
        self.assertEqual(asked, ["203.0.113.5", "203.0.113.5", "203.0.113.6"])

    def test_isLocalAddress(self) -> None:
        """
        L{proxyrules.isLocalAddress} knows this host's addresses by binding to them:
        loopback is, a documentation address is not.
        """
        try:
            with open("/proc/sys/net/ipv4/ip_nonlocal_bind") as f:
                if f.read().strip() != "0":
                    raise SkipTest("ip_nonlocal_bind is on: every address can be bound")
        except OSError:
            pass
        self.assertTrue(proxyrules.isLocalAddress(ipaddress.ip_address("127.0.0.1")))
        self.assertFalse(proxyrules.isLocalAddress(ipaddress.ip_address("198.51.100.1")))
        self.assertFalse(proxyrules.isLocalAddress(ipaddress.ip_address("2001:db8::1")))

    def test_thisHostsOtherAddressesRefused(self) -> None:
        """
        An address of this host that is not loopback (a network card's)
        reaches what listens on 0.0.0.0 as loopback does: refused unless
        loopback is allowed, on every port.  It went through on any port
        but the proxy's own.
        """
        own = hostAddress()
        self.assertTrue(proxyrules.routesToThisHost(ipaddress.ip_address(own)))
        for port in (80, 22210):
            self.assertRefused(ProxyRules(), [own], port, f"{own} is an address of this host")
            self.assertRefused(ProxyRules(), [f"::ffff:{own}"], port, "an address of this host")
        ProxyRules(allowLoopback=True).checkDestination([own], 80)

    def test_routesToThisHost(self) -> None:
        """
        Loopback routes to this host; a documentation address does not.
        """
        self.assertTrue(proxyrules.routesToThisHost(ipaddress.ip_address("127.0.0.1")))
        self.assertFalse(proxyrules.routesToThisHost(ipaddress.ip_address("198.51.100.1")))
        self.assertFalse(proxyrules.routesToThisHost(ipaddress.ip_address("2001:db8::1")))

    def test_specialPurposeRangesArePrivate(self) -> None:
        """
        With private destinations refused, so are the special-purpose
        ranges no Internet host has (an infrastructure gateway answered on
        198.18.0.1); by default they are allowed as private ones are.
        """
        special = [
            "198.18.0.1", "198.19.255.1", "192.0.2.77", "198.51.100.1", "203.0.113.9", "192.0.0.1", "2001:db8::1",
            # Python counts these as global.
            "192.0.0.8", "192.0.0.9", "192.0.0.10", "fec0::1", "feff::1", "3fff::1", "3fff:fff::1",
        ]
        for address in special:
            self.assertRefused(ProxyRules(allowPrivate=False), [address], 80, "a private address")
        ProxyRules().checkDestination(["198.18.0.1", "203.0.113.9", "192.0.0.9", "fec0::1"], 80)

    def test_connectPorts(self) -> None:
        rules = ProxyRules()
        rules.checkConnectPort(443)
        with self.assertRaises(Refusal) as e:
            rules.checkConnectPort(22)
        self.assertEqual(e.exception.reason, "CONNECT to port 22 is not allowed (allowed: 443)")
        ProxyRules(connectPorts=frozenset({443, 8443})).checkConnectPort(8443)

    def test_hostNameProblem(self) -> None:
        """
        The names getaddrinfo cannot take (and Twisted's resolver would
        never answer for) are found, and said in words; good ones pass.
        """
        for good in ("example.com", "example.com.", "a" * 63 + ".example", "x", ("a" * 49 + ".") * 5 + "abc"):
            self.assertIsNone(hostNameProblem(good), good)
        self.assertIn("empty label", hostNameProblem("a..b"))
        self.assertIn("empty label", hostNameProblem(".a"))
        self.assertIn("longer than 63", hostNameProblem("a" * 64 + ".example"))
        self.assertIn("longer than 253", hostNameProblem(("a" * 49 + ".") * 5 + "abcd"))
