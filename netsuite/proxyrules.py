"""
Who may use the HTTP proxy, and where it may connect.

L{ProxyRules} answers two questions, each with L{None} (allowed) or a
L{Refusal} saying why not, in one sentence for the client's 403:

  - L{ProxyRules.checkClient}: is this client's address in an allowed
    network (by default loopback only)?
  - L{ProxyRules.checkDestination}: may the proxy connect to this port on
    these addresses?  Asked after DNS resolution, about every address the
    name resolved to, so that a name cannot point the proxy at a refused
    address (DNS rebinding, C{localtest.me}, cloud metadata at
    169.254.169.254).

Refused by default: loopback and this host's other addresses (unless
C{allowLoopback}; L{routesToThisHost}), link-local,
unspecified, multicast and broadcast addresses, and the proxy's own
listening addresses (a request to itself would loop): for a listener on an
unspecified address, every address of this host on its port
(L{isLocalAddress}).  Private ranges
(RFC 1918, IPv6 unique local, and the special-purpose ranges no Internet
host has) are allowed unless C{allowPrivate} is off.
Destinations written as IPv6 forms of an IPv4 address (C{::ffff:127.0.0.1},
NAT64 C{64:ff9b::7f00:1}, 6to4 C{2002:7f00:1::}) are judged as the IPv4
address they reach.  A client is judged as the IPv4 address it holds only
when IPv4-mapped (C{::ffff:a.b.c.d}, an IPv4 client of a dual-stack socket):
in the other forms it is an IPv6 host, whatever its bits look like.  CONNECT
is allowed to the ports in C{connectPorts} only (default 443).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Callable, FrozenSet, Iterable, Optional, Sequence, Tuple, Union

__all__ = [
    "ProxyRules",
    "Refusal",
    "isLocalAddress",
    "routesToThisHost",
    "parseNetworks",
    "DEFAULT_CLIENTS",
    "DEFAULT_CONNECT_PORTS",
]

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Clients allowed by default: this machine only.
DEFAULT_CLIENTS: Tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)

#: Ports CONNECT may reach by default.
DEFAULT_CONNECT_PORTS: FrozenSet[int] = frozenset({443})

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("fc00::/7"),
)
#: Ranges no Internet host has that Python's C{is_global} lets through:
#: IPv6 site-local (deprecated, RFC 3879, but still routed inside some
#: sites), all of the IETF's 192.0.0.0/24 (192.0.0.8, 9 and 10 count as
#: global there), and IPv6's newer documentation prefix (RFC 9637), which
#: Python 3.11 does not know.
_NOT_GLOBAL = (
    ipaddress.ip_network("fec0::/10"),
    ipaddress.ip_network("192.0.0.0/24"),
    ipaddress.ip_network("3fff::/20"),
)


#: The longest DNS name, without its final dot (RFC 1035, 2.3.4).
MAX_HOST_NAME = 253

#: The longest label of a DNS name.
MAX_LABEL = 63


def hostNameProblem(name: str) -> Optional[str]:
    """
    What makes the ASCII DNS name C{name} one no resolver can take (an
    empty label, a label over L{MAX_LABEL} characters, more than
    L{MAX_HOST_NAME} in all, one final dot aside), in words; or L{None}.
    getaddrinfo fails such a name with an error Twisted's resolver does not
    report, so the proxy and the downloader refuse it first.
    """
    bare = name[:-1] if name.endswith(".") else name
    labels = bare.split(".")
    if not all(labels):
        return "the host name has an empty label (a dot at its start, or two in a row)"
    if any(len(label) > MAX_LABEL for label in labels):
        return f"the host name has a label longer than {MAX_LABEL} characters"
    if len(bare) > MAX_HOST_NAME:
        return f"the host name is longer than {MAX_HOST_NAME} characters"
    return None


class Refusal(Exception):
    """
    A client or destination the rules refuse; C{reason} is one sentence.
    """

    def __init__(self, reason: str) -> None:
        Exception.__init__(self, reason)
        self.reason = reason


def parseNetworks(text: str) -> Tuple[Network, ...]:
    """
    Networks from a comma-separated list (C{"127.0.0.1, 10.0.0.0/8, ::1"}); a
    bare address is a network of one.

    @raise ValueError: an entry is not an address or network (one sentence).
    """
    networks = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    if not networks:
        raise ValueError("no network given")
    return tuple(networks)


def _probe(address: Address, ask: Callable[[socket.socket], bool]) -> bool:
    """
    C{ask} of a UDP socket of C{address}'s family (nothing is sent); false
    if the socket cannot be made or C{ask} fails.
    """
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            return ask(probe)
    except (OSError, ValueError):
        return False


def isLocalAddress(address: Address) -> bool:
    """
    Whether C{address} is one of this host's own addresses: a socket of its
    family can bind to it (on any interface, without listing them; with
    Linux's C{ip_nonlocal_bind} on, every address can).
    """

    def bind(probe: socket.socket) -> bool:
        probe.bind((str(address), 0))
        return True

    return _probe(address, bind)


def routesToThisHost(address: Address) -> bool:
    """
    Whether the system routes C{address} to this host itself: the source
    address it would send from is C{address} itself, as for any of the
    host's own addresses on any interface (C{192.0.2.2} of eth0 reaches
    what listens on 0.0.0.0 as loopback does).  Unlike a bind, Linux's
    C{ip_nonlocal_bind} does not make every address pass.
    """

    def sourceIsItself(probe: socket.socket) -> bool:
        probe.connect((str(address), 9))
        return _address(probe.getsockname()[0]) == address

    return _probe(address, sourceIsItself)


def _address(value: Union[str, Address]) -> Address:
    address = ipaddress.ip_address(value.split("%", 1)[0] if isinstance(value, str) else value)
    return _embeddedIPv4(address) or address


def _embeddedIPv4(address: Address) -> Optional[ipaddress.IPv4Address]:
    """
    The IPv4 address an IPv6 address stands for, if it is one of the forms
    that reach an IPv4 host: IPv4-mapped, IPv4-compatible, NAT64, 6to4.
    """
    if address.version != 6:
        return None
    assert isinstance(address, ipaddress.IPv6Address)
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    packed = int(address)
    if packed >> 32 == 0 and packed > 1:  # ::a.b.c.d (deprecated, still routed by some)
        return ipaddress.IPv4Address(packed)
    return None


@dataclass
class ProxyRules:
    """
    The proxy's client and destination rules.

    @ivar clients: networks clients may connect from.
    @ivar allowLoopback: allow loopback destinations (local development,
        tests); the proxy's own addresses stay refused.
    @ivar allowPrivate: allow private destinations (RFC 1918, IPv6 unique
        local, 100.64.0.0/10).
    @ivar connectPorts: ports CONNECT may reach.
    @ivar ownAddresses: C{(address, port)} the proxy listens on; an
        unspecified address stands for every address of this host: loopback,
        those a socket can bind to (L{isLocalAddress}, asked only for a
        destination on that port) and L{localAddresses}.
    @ivar localAddresses: more addresses to take as this host's own, for
        listeners on an unspecified address.
    """

    clients: Sequence[Network] = DEFAULT_CLIENTS
    allowLoopback: bool = False
    allowPrivate: bool = True
    connectPorts: FrozenSet[int] = DEFAULT_CONNECT_PORTS
    ownAddresses: set = field(default_factory=set)
    localAddresses: set = field(default_factory=set)

    def addOwnAddress(self, host: str, port: int) -> None:
        """
        Note that the proxy listens on C{host}:C{port}.
        """
        self.ownAddresses.add((_address(host), port))

    def checkClient(self, host: str) -> None:
        """
        @raise Refusal: C{host} is not in an allowed network.
        """
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            raise Refusal("this proxy does not serve clients that are not on IP") from None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not any(address in network for network in self.clients):
            raise Refusal(f"this proxy does not serve clients from {address}")

    def checkConnectPort(self, port: int) -> None:
        """
        @raise Refusal: CONNECT to C{port} is not allowed.
        """
        if port not in self.connectPorts:
            allowed = ", ".join(str(p) for p in sorted(self.connectPorts)) or "none"
            raise Refusal(f"CONNECT to port {port} is not allowed (allowed: {allowed})")

    def checkDestination(self, addresses: Iterable[Union[str, Address]], port: int) -> None:
        """
        Check every address a destination resolved to.

        @raise Refusal: any of them is refused (naming which and why), or
            there are none.
        """
        found = False
        for value in addresses:
            found = True
            address = _address(value)
            why = self._refused(address, port)
            if why is not None:
                raise Refusal(f"the destination {address} is {why}")
        if not found:
            raise Refusal("the destination has no address")

    def _refused(self, address: Address, port: int) -> Optional[str]:
        if self._isOwn(address, port):
            return "this proxy itself"
        if address.is_unspecified or address in _THIS_NETWORK:
            return "an unspecified address"
        if address.is_loopback:
            return None if self.allowLoopback else "a loopback address"
        if not self.allowLoopback and routesToThisHost(address):
            return "an address of this host"
        if address.is_link_local:
            return "a link-local address"
        if address.is_multicast:
            return "a multicast address"
        if address.version == 4 and int(address) == 0xFFFFFFFF:
            return "the broadcast address"
        if address in _SHARED or any(address in network for network in _PRIVATE):
            return None if self.allowPrivate else "a private address"
        if not self.allowPrivate and (not address.is_global or any(address in net for net in _NOT_GLOBAL)):
            # Special-purpose ranges (198.18.0.0/15, the documentation
            # ranges, 192.0.0.0/24, site-local): no Internet host has them.
            return "a private address"
        if address.is_reserved:
            return "a reserved address"
        return None

    def _isOwn(self, address: Address, port: int) -> bool:
        for own, ownPort in self.ownAddresses:
            if ownPort != port:
                continue
            if own == address:
                return True
            if own.is_unspecified and (
                address.is_loopback
                or address.is_unspecified
                or address in self.localAddresses
                or isLocalAddress(address)
            ):
                return True
        return False
