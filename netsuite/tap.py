"""
C{twistd netsuite}: command-line and TOML options, and the composition of
every service into one L{MultiService}.

Every setting is described once, in L{SETTINGS}; the flags, the TOML keys
and the help text all come from that table.  A flag given on the command
line wins over the config file, which wins over the default.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import functools
import os
import re
import signal
import stat
import sys
import time
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from twisted.application.service import IService, MultiService
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.python import usage

from netsuite import __version__
from netsuite.accesslog import holdAccessLog, releaseAccessLog
from netsuite.echo import (
    makeDaytimeService,
    makeDiscardService,
    makeEchoService,
    makeEchoUDPService,
)
from netsuite.files import claimLocksForThisProcess, lockForThisProcess, readSmallFile
from netsuite.listen import ConnectionBudget, ListenError, parseDatagramEndpoint, parseStreamEndpoint
from netsuite.resolving import installResolver
from netsuite.rooms import HISTORY_BYTES, MAX_HISTORY, NOTICE_RATE, PRIVATE_RATE, ROOM_RATE
from netsuite.stats import StatsRegistry
from netsuite.text import shortened
from netsuite.status import ListenerInfo
from netsuite.tls import (
    TLSConfigError,
    chainWarnings,
    checkHandshake,
    defaultDataDirectory,
    ensureSelfSigned,
    fingerprint,
    keyWarnings,
    loadPEM,
    serverOptions,
)

log = Logger()

#: The largest config file read.
MAX_CONFIG_FILE = 1024 * 1024

#: The largest C{count} a setting takes unless it names its own bound: the
#: largest whole number every float holds exactly.
MAX_COUNT = 2**53

_PORT = re.compile(r"[0-9]{1,5}")

#: A number as a flag gives it: ASCII digits, a sign, a point, an exponent
#: (C{float} also takes other scripts' digits and underscores), or C{inf}
#: and C{nan}, which get their own message.
_DECIMAL = re.compile(r"\s*[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)\s*", re.I)


class ConfigError(SystemExit):
    """
    A setting is unusable.  It ends the program with its message as one
    line on stderr and exit status 1 (twistd would otherwise print its whole
    help text before the message).
    """

    def __init__(self, message: str) -> None:
        SystemExit.__init__(self, f"netsuite: {message}")
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Setting:
    """
    One option: a C{--name} flag and the TOML key C{name}.

    @ivar kind: C{"listen"} (repeatable stream endpoint), C{"udp"}
        (repeatable UDP address), C{"flag"}, C{"seconds"}, C{"rate"} (above
        0), C{"limit"} (a number, 0 for none), C{"count"}, C{"path"},
        C{"networks"} (comma-separated addresses and networks) or
        C{"ports"} (comma-separated port numbers).
    @ivar most: the largest value of a C{"count"} (default: L{MAX_COUNT}).
    """

    name: str
    kind: str
    default: Any
    help: str
    most: int = MAX_COUNT


def _listen(name: str, default: Sequence[str], what: str) -> Setting:
    return Setting(name, "listen", list(default), what)


def _tlsListen(name: str, port: int, service: str) -> Setting:
    return _listen(
        name,
        [f"tcp:{port}:interface=127.0.0.1"],
        f"Where {service} listens with TLS, when TLS is on (repeatable).",
    )


SETTINGS: List[Setting] = [
    Setting("config", "path", None, "Read settings from this TOML file (flags win)."),
    # Listeners.  Plain stream endpoints, then the TLS ones; see README.
    _listen("http", ["tcp:8080:interface=127.0.0.1"], "Where HTTP listens (repeatable)."),
    _tlsListen("https", 8443, "HTTP"),
    _listen("chat", ["tcp:8023:interface=127.0.0.1"], "Where chat listens (repeatable)."),
    _tlsListen("chat-tls", 8992, "chat"),
    _listen("echo", ["tcp:8007:interface=127.0.0.1"], "Where TCP echo listens (repeatable)."),
    _tlsListen("echo-tls", 9007, "TCP echo"),
    Setting(
        "echo-udp",
        "udp",
        ["udp:8007:interface=127.0.0.1"],
        "Where UDP echo listens: udp:PORT[:interface=ADDR] (repeatable).",
    ),
    _listen("daytime", ["tcp:8013:interface=127.0.0.1"], "Where daytime listens (repeatable)."),
    _tlsListen("daytime-tls", 9013, "daytime"),
    _listen("discard", [], "Where discard listens (repeatable; off unless given)."),
    _listen("discard-tls", [], "Where discard listens with TLS (repeatable)."),
    _listen("proxy", ["tcp:3128:interface=127.0.0.1"], "Where the HTTP proxy listens (repeatable)."),
    _tlsListen("proxy-tls", 3129, "the HTTP proxy"),
    # Turning services off.
    Setting("no-http", "flag", False, "Do not run the HTTP server."),
    Setting("no-chat", "flag", False, "Do not run the chat server."),
    Setting("no-echo", "flag", False, "Do not run echo (TCP, TLS or UDP)."),
    Setting("no-daytime", "flag", False, "Do not run daytime."),
    Setting("no-proxy", "flag", False, "Do not run the HTTP proxy."),
    Setting("no-downloads", "flag", False, "Do not run the download service (/api/downloads)."),
    # TLS.
    Setting("tls", "flag", False,
            "Turn TLS listeners on; without --tls-cert, use a self-signed "
            "certificate for localhost kept in the data directory."),
    Setting("tls-cert", "path", None,
            "PEM certificate (chain allowed) for the TLS listeners; turns TLS on."),
    Setting("tls-key", "path", None, "PEM private key for --tls-cert (default: read from it)."),
    Setting("tls-handshake-timeout", "seconds", 30.0,
            "Seconds a TLS client may take, from connecting, to finish its handshake (0: forever)."),
    Setting("data-dir", "path", None,
            "Directory for netsuite's own files "
            "(default: $XDG_DATA_HOME/netsuite or ~/.local/share/netsuite)."),
    # HTTP.
    Setting("http-root", "path", None,
            "Serve this folder at / (like twistd web --path); default: no folder."),
    Setting("http-follow-symlinks", "flag", False,
            "Serve symlinks in --http-root that point outside it."),
    Setting("http-h2c", "flag", False,
            "HTTP: let plain connections speak HTTP/2 with prior knowledge "
            "(h2c, as curl --http2-prior-knowledge); TLS ones choose it by ALPN."),
    Setting("http-access-log", "path", None,
            "Append the HTTP access log (combined format) to this file "
            "(default: the twistd log)."),
    Setting("http-max-body", "count", 1048576, "HTTP: bytes of request body accepted (413 above)."),
    Setting("http-max-request-line", "count", 8192,
            "HTTP: bytes in the request line or one header line (414 / 431 above)."),
    Setting("http-max-header-size", "count", 16384,
            "HTTP: bytes in all request headers together (431 above)."),
    Setting("http-max-headers", "count", 100, "HTTP: header lines in one request (431 above)."),
    Setting("http-header-timeout", "seconds", 15.0,
            "HTTP: seconds from a request's first byte to the end of its headers (408 after)."),
    Setting("http-idle-timeout", "seconds", 60.0,
            "HTTP: seconds a keep-alive connection may wait for its next request."),
    # Proxy.
    Setting("proxy-clients", "networks", "127.0.0.0/8, ::1",
            "Proxy: networks clients may use it from, comma-separated (403 for others)."),
    Setting("proxy-allow-loopback", "flag", False,
            "Proxy: allow loopback destinations (local development, tests)."),
    Setting("proxy-deny-private", "flag", False,
            "Proxy: refuse private destinations (10/8, 172.16/12, 192.168/16, fc00::/7, "
            "100.64/10)."),
    Setting("proxy-connect-ports", "ports", "443", "Proxy: ports CONNECT may reach, comma-separated."),
    Setting("proxy-users", "path", None,
            "Proxy: require Basic proxy auth against this users file "
            "(made with netsuite-proxy-user)."),
    Setting("proxy-forwarded-for", "flag", False,
            "Proxy: tell origins the client's address (X-Forwarded-For, Forwarded)."),
    Setting("proxy-access-log", "path", None,
            "Append the proxy's access log to this file (default: the twistd log)."),
    Setting("proxy-connect-timeout", "seconds", 10.0,
            "Proxy: seconds to resolve and connect to an origin (504 after)."),
    Setting("proxy-read-timeout", "seconds", 60.0,
            "Proxy: seconds an origin may stay silent during a response (504 before it starts)."),
    Setting("proxy-tunnel-idle-timeout", "seconds", 300.0,
            "Proxy: seconds a CONNECT tunnel may carry nothing before it is closed."),
    Setting("proxy-idle-timeout", "seconds", 60.0,
            "Proxy: seconds a client's keep-alive connection may wait for its next request."),
    Setting("proxy-header-timeout", "seconds", 15.0,
            "Proxy: seconds from a request's first byte to the end of its headers (408 after)."),
    Setting("proxy-max-tunnels", "count", 1024, "Proxy: CONNECT tunnels open at once (0: no limit)."),
    Setting("proxy-lookups-per-client", "count", 16,
            "Proxy: name lookups one client address may have running at once; its others wait (0: no limit)."),
    Setting("proxy-pool-per-host", "count", 64,
            "Proxy: idle connections kept open to each origin for the next request (0: none)."),
    # Downloads.
    Setting("download-dir", "path", None,
            "Where the download service saves files (default: downloads in the data directory)."),
    Setting("api-token", "text", None,
            "Bearer token /api/downloads wants (default: generated once, kept in api-token in the data directory); "
            "at least 16 characters.  The config file keeps it out of ps."),
    Setting("download-connections", "count", 8, "Downloads: connections in all."),
    Setting("download-per-host", "count", 4, "Downloads: connections to one server."),
    Setting("download-segments", "count", 4, "Downloads: connections one file may use."),
    Setting("download-max-size", "count", 0, "Downloads: largest file accepted, in bytes (0: no limit)."),
    Setting("download-rate", "count", 0, "Downloads: bytes a second for all downloads together (0: no limit)."),
    Setting("download-lowest-speed", "count", 0,
            "Downloads: bytes a second a connection must bring over 30 s, else it is tried again (0: no limit)."),
    Setting("download-allow-loopback", "flag", False,
            "Downloads: allow loopback destinations (refused by default, like the proxy's)."),
    Setting("download-deny-private", "flag", False,
            "Downloads: refuse private destinations (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10)."),
    # Echo family.
    Setting("chat-history", "count", 20,
            f"Chat: lines of a room replayed on joining it (0: none; at most {MAX_HISTORY}).",
            most=MAX_HISTORY),
    Setting("chat-history-bytes", "count", HISTORY_BYTES,
            "Chat: bytes of a room's lines kept for that, at most (the oldest make room)."),
    Setting("chat-max-line", "count", 4096, "Chat: bytes in one line (longer lines are refused)."),
    Setting("chat-rate", "limit", 5.0, "Chat: lines a second one client may send (0: no limit)."),
    Setting("chat-burst", "count", 10, "Chat: lines one client may send at once, above --chat-rate."),
    Setting("chat-line-queue", "count", 50,
            "Chat: lines one client sends past its flood budget that wait their turn (8 KiB at most, or one line "
            "of --chat-max-line if longer), rather than be dropped (0: none wait)."),
    Setting("chat-host-rate", "limit", 20.0,
            "Chat: lines a second all clients from one address may send together, in bursts of twice that "
            "(0: no limit; --chat-rate 0 turns it off too)."),
    Setting("chat-private-rate", "count", PRIVATE_RATE,
            "Chat: bytes a second of private messages one client may be sent, by everyone together "
            "(bursts of 4 s; 0: no limit)."),
    Setting("chat-room-rate", "count", ROOM_RATE,
            "Chat: bytes a second of lines one room may be sent, by its members together "
            "(bursts of 4 s; 0: no limit)."),
    Setting("chat-notice-rate", "limit", NOTICE_RATE,
            "Chat: join, leave and new-name notices a second one room is sent one by one, in bursts of 20; "
            "past it, they are told in one line a second (0: no limit)."),
    Setting("chat-max-output", "count", 262144,
            "Chat: bytes waiting for one client before it is disconnected as not reading."),
    Setting("chat-name-timeout", "seconds", 30.0, "Chat: seconds a client may take to give its name (0: forever)."),
    Setting("chat-idle-timeout", "seconds", 0.0,
            "Chat: seconds a named client may stay silent (0: forever; a client that vanished is dropped "
            "within 2 minutes anyway)."),
    Setting("chat-max-clients", "count", 1000, "Chat: clients at once (0: no limit)."),
    Setting("chat-max-clients-per-host", "count", 50,
            "Chat: clients at once from one address (0: no limit)."),
    Setting("chat-max-rooms", "count", 1000, "Chat: rooms that may exist at once."),
    Setting("echo-idle-timeout", "seconds", 300.0,
            "Seconds without input before a TCP echo or discard connection is "
            "closed (0: never)."),
    Setting("echo-udp-rate", "rate", 100.0, "UDP echo: datagrams a second per source host."),
    Setting("echo-udp-bandwidth", "rate", 1048576.0, "UDP echo: bytes a second per source host."),
    Setting("echo-udp-total-rate", "rate", 1000.0, "UDP echo: datagrams a second, all sources."),
    Setting("echo-udp-total-bandwidth", "rate", 8388608.0,
            "UDP echo: bytes a second, all sources."),
    # Everything.
    Setting("max-connections", "count", 4096,
            "Connections open at once on each listener; more are closed at once "
            "(0: no limit)."),
    Setting("max-connections-per-host", "count", 256,
            "Connections open at once from one address, on all listeners together (0: no limit)."),
    Setting("max-connections-total", "count", 0,
            "Connections open at once on all listeners together, a proxied one counting "
            "twice (0: as many as the open-file limit allows, keeping some for the rest)."),
    Setting("grace", "seconds", 5.0,
            "Seconds open connections get to finish when netsuite stops."),
    Setting("linger-time", "rate", 30.0,
            "Once a service closes a connection, seconds in all it is read on "
            "(what comes dropped) for the client's close, like nginx's lingering_time."),
    Setting("linger-timeout", "rate", 5.0,
            "Seconds without a byte from the client after which such a connection "
            "ends, like nginx's lingering_timeout."),
]

_BY_NAME: Dict[str, Setting] = {s.name: s for s in SETTINGS}
#: The flags that name where a service listens.
_LISTENERS = frozenset(s.name for s in SETTINGS if s.kind in ("listen", "udp"))


def _meant(name: str, names: Sequence[str]) -> tuple[str, str] | None:
    """
    The setting an unknown flag or key C{name} most likely meant, and an
    example value to show with it (C{http-port}: C{http} and its default
    endpoint), or L{None}.
    """
    listener = re.fullmatch(r"(.+)-(?:port|listen|bind|addr|address|endpoint)", name)
    if listener is not None:
        close = difflib.get_close_matches(listener.group(1), sorted(_LISTENERS), n=1)
        if close:
            setting = _BY_NAME[close[0]]
            return setting.name, f" {setting.default[0]}" if setting.default else " ENDPOINT"
    close = difflib.get_close_matches(name, names, n=1)
    return (close[0], "") if close else None

#: Each service: its listener settings (plain, TLS) and the flag that turns it
#: off.
SERVICES: Dict[str, tuple[str | None, str | None, str | None]] = {
    "http": ("http", "https", "no-http"),
    "chat": ("chat", "chat-tls", "no-chat"),
    "echo": ("echo", "echo-tls", "no-echo"),
    "daytime": ("daytime", "daytime-tls", "no-daytime"),
    "discard": ("discard", "discard-tls", None),
    "proxy": ("proxy", "proxy-tls", "no-proxy"),
}


def _describeDefault(setting: Setting) -> str:
    if setting.kind in ("listen", "udp"):
        return ", ".join(setting.default) if setting.default else "none"
    if setting.kind == "flag":
        return "off"
    if setting.kind in ("networks", "ports"):
        return str(setting.default)
    if setting.default is None:
        return ""
    value = setting.default
    return str(int(value)) if float(value).is_integer() else str(value)


def _makeHandler(setting: Setting) -> Callable[..., None]:
    default = _describeDefault(setting)
    doc = setting.help + (f" [default: {default}]" if default else "")
    if setting.kind == "flag":

        def flag(self: "Options") -> None:
            self._given[setting.name] = True

        flag.__doc__ = doc
        return flag

    def parameter(self: "Options", value: str) -> None:
        if setting.kind in ("listen", "udp"):
            self._given.setdefault(setting.name, []).append(value)
        else:
            self._given[setting.name] = value

    parameter.__doc__ = doc
    return parameter


class Options(usage.Options):
    """
    Options of C{twistd netsuite}; after parsing, every setting of
    L{SETTINGS} is a key holding its final, checked value, and
    C{options["tls-options"]} holds the server TLS options (or L{None}).
    """

    synopsis = "[options]"
    longdesc = (
        "Runs netsuite's network services in one process: HTTP, chat, TCP and "
        "UDP echo, daytime, discard, an HTTP proxy and a download service "
        "(/api/downloads).  Listeners are Twisted "
        "endpoint strings (tcp:PORT:interface=ADDR, tcp6:..., ssl:..., "
        "unix:PATH, systemd:...); every listener flag repeats.  All listen on "
        "loopback by default.  Settings may also come from a TOML file "
        "(--config) using the flag names as keys; flags win."
    )

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self._given: Dict[str, Any] = {}
        self._where: Dict[str, str] = {}

    def where(self, name: str) -> str:
        """
        How to name setting C{name} in a message: its flag, or its key in the
        config file it came from.
        """
        return self._where.get(name, "--" + name)

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        """
        Parse the command line; a flag that is unknown, or lacks its value,
        ends the program with one line on stderr (see L{ConfigError}).
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            raise ConfigError(self._usageMessage(str(e))) from None

    def parseArgs(self, *args: str) -> None:
        """
        Refuse arguments: netsuite takes options only.
        """
        if args:
            raise usage.UsageError(f"unexpected argument {shortened(args[0])} (options start with --)")

    def _usageMessage(self, message: str) -> str:
        unknown = re.fullmatch(r"option --(.+) not recognized", message, re.S)
        if unknown is not None:
            name = unknown.group(1)
            message = f"unknown option {shortened('--' + name)}"
            meant = _meant(name, [option.rstrip("=") for option in self.longOpt])
            if meant is not None:
                setting, example = meant
                message += f" (did you mean --{setting}{example}?)"
        return f"{message.rstrip('.')}; twistd netsuite --help lists every option"

    def opt_version(self) -> None:
        """
        Print netsuite's version and exit.
        """
        print(f"netsuite {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        config: Dict[str, Any] = {}
        configDir = Path.cwd()
        if "config" in self._given:
            configPath = Path(self._given["config"])
            config = loadConfig(configPath)
            configDir = configPath.parent
        for setting in SETTINGS:
            if setting.name in self._given:
                self[setting.name] = _check(
                    setting, self._given[setting.name], "--" + setting.name, Path.cwd()
                )
            elif setting.name in config:
                self._where[setting.name] = f"{setting.name!r} in {str(configPath)!r}"
                self[setting.name] = _check(
                    setting, config[setting.name], self.where(setting.name), configDir
                )
            else:
                self[setting.name] = (
                    _check(setting, setting.default, setting.name, Path.cwd())
                    if setting.kind in ("networks", "ports")
                    else setting.default
                )
        _checkDirectories(self)
        _checkDownloadDirectory(self)
        _lockDataDirectory(self)
        self["tls-material"], self["tls-options"], self["tls-fingerprint"] = _loadTLS(self)
        _checkHTTPFiles(self)
        _checkTLSListeners(self)
        _checkListenersUsed(self)
        # 0 does not mean "none" for these (it did for others): every
        # connection, or every request, would be refused.
        for name in (
            "proxy-connect-timeout",
            "proxy-read-timeout",
            "proxy-tunnel-idle-timeout",
            "proxy-idle-timeout",
            "proxy-header-timeout",
            "http-idle-timeout",
            "http-header-timeout",
        ):
            if not self[name] > 0:
                raise ConfigError(f"{self.where(name)}: expected more than 0 seconds")
        for name in (
            "download-connections",
            "download-per-host",
            "download-segments",
            "http-max-request-line",
            "http-max-header-size",
            "http-max-headers",
            "chat-max-line",
        ):
            if self[name] < 1:
                raise ConfigError(f"{self.where(name)}: expected 1 or more")


for _setting in SETTINGS:
    setattr(Options, "opt_" + _setting.name.replace("-", "_"), _makeHandler(_setting))
del _setting


#: The smallest rate, or time above 0, taken.
MIN_RATE = 1e-9

#: The most parts a dotted key in a config file may have: Python's TOML
#: parser takes time in the square of a key's parts (50,000 took 39 s).
MAX_KEY_PARTS = 32


def _deepKeyLine(text: str) -> int | None:
    """
    The number of the first line with a key (in a C{[table]} header, before
    an C{=}, in an inline table) of more than L{MAX_KEY_PARTS} dotted
    parts, or L{None}.  Dots are counted outside quotes, from one of
    C{=,[]{}} to the next, so a value's dots (in strings, or a float's)
    never add up.
    """
    for number, line in enumerate(text.split("\n"), 1):
        if line.count(".") < MAX_KEY_PARTS:
            continue
        dots, quote, i = 0, "", 0
        while i < len(line):
            c = line[i]
            if quote:
                if c == "\\" and quote == '"':
                    i += 1
                elif c == quote:
                    quote = ""
            elif c in "\"'":
                quote = c
            elif c == "#":
                break
            elif c in "=,[]{}":
                dots = 0
            elif c == ".":
                dots += 1
                if dots >= MAX_KEY_PARTS:
                    return number
            i += 1
    return None


def loadConfig(path: Path) -> Dict[str, Any]:
    """
    Read a TOML config file whose keys are netsuite's flag names.

    @raise ConfigError: the file is unreadable, not TOML, or has an unknown
        key.
    """
    try:
        raw = readSmallFile(path, MAX_CONFIG_FILE, follow=True)
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}")
    except ValueError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})"
        )
    # Some editors on Windows start a UTF-8 file with a byte order mark.
    text = text.removeprefix("\ufeff")
    deep = _deepKeyLine(text)
    if deep is not None:
        raise ConfigError(
            f"config file {str(path)!r}, line {deep}: a key of more than {MAX_KEY_PARTS} dotted parts "
            "(netsuite's keys have one)"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}")
    except RecursionError:
        raise ConfigError(f"config file {str(path)!r} nests arrays or tables too deeply") from None
    except ValueError:
        # Python's own limit on the digits of a decimal integer.
        raise ConfigError(f"config file {str(path)!r} holds a number too long to read") from None
    config: Dict[str, Any] = {}
    spelled: Dict[str, str] = {}
    for key, value in data.items():
        name = key.replace("_", "-")
        if name not in _BY_NAME or name == "config":
            meant = _meant(name, [s for s in _BY_NAME if s != "config"])
            hint = ""
            if meant is not None:
                setting, example = meant
                hint = f" (did you mean {setting!r}{' = ' + repr(example.strip()) if example else ''}?)"
            raise ConfigError(f"config file {str(path)!r}: unknown key {shortened(key)}{hint}")
        if name in config:
            raise ConfigError(
                f"config file {str(path)!r}: {spelled[name]!r} and {key!r} are one setting, given twice"
            )
        config[name] = value
        spelled[name] = key
    return config


def _check(setting: Setting, value: Any, where: str, base: Path) -> Any:  # noqa: C901
    """
    Check and convert one setting's value.

    @param where: how to name the setting in a message (flag or TOML key).
    @param base: the directory relative paths are resolved against.
    """
    kind = setting.kind
    if kind in ("listen", "udp"):
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{where}: expected an endpoint string or a list of them")
        seen = set()
        for description in values:
            if description in seen:
                raise ConfigError(f"{where}: {shortened(description)} is listed twice")
            seen.add(description)
            try:
                if kind == "udp":
                    parseDatagramEndpoint(description)
                else:
                    parseStreamEndpoint(None, description)
            except ValueError as e:
                raise ConfigError(f"{where}: {e}")
        return list(values)
    if kind == "flag":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {shortened(value)}")
        return value
    if kind == "text":
        if not isinstance(value, str) or len(value) < 16 or any(c.isspace() or not c.isprintable() for c in value):
            raise ConfigError(f"{where}: expected at least 16 printable characters without spaces")
        return value
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a file or directory name")
        if "\0" in value:
            raise ConfigError(f"{where}: {shortened(value)} cannot be a file name (it holds a NUL character)")
        return str(base / os.path.expanduser(value))
    if kind == "networks":
        from netsuite.proxyrules import parseNetworks

        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected addresses or networks separated by commas")
        try:
            return parseNetworks(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}")
    if kind == "ports":
        if isinstance(value, list):
            items = value
        elif isinstance(value, str):
            items = value.replace(",", " ").split()
        else:
            items = [value]
        ports = set()
        for item in items:
            if isinstance(item, str):
                item = item.strip()
                port = int(item) if _PORT.fullmatch(item) else 0
            else:
                port = item if isinstance(item, int) and not isinstance(item, bool) else 0
            if not 0 < port < 65536:
                raise ConfigError(f"{where}: {shortened(item)} is not a port number (1-65535)")
            ports.add(port)
        return frozenset(ports)
    # Numbers: flags arrive as text, TOML as numbers.  Text is ASCII:
    # float() and Decimal() also take other scripts' digits and 1_0.
    if isinstance(value, bool) or (isinstance(value, str) and not (value.isascii() and _DECIMAL.fullmatch(value))):
        raise ConfigError(f"{where}: expected a number, got {shortened(value)}")
    if kind == "count":
        return _count(value, where, setting.most)
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(f"{where}: expected a finite number") from None
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {shortened(value)}") from None
    if not (number == number and abs(number) != float("inf")):
        raise ConfigError(f"{where}: expected a finite number, got {shortened(value)}")
    if kind == "seconds" and number < 0:
        raise ConfigError(f"{where}: expected 0 or more seconds, got {shortened(value)}")
    if kind == "rate" and number <= 0:
        raise ConfigError(f"{where}: expected a number above 0, got {shortened(value)}")
    if kind == "limit" and number < 0:
        raise ConfigError(f"{where}: expected 0 (no limit) or more, got {shortened(value)}")
    if kind in ("rate", "limit") and 0 < number < MIN_RATE:
        # Its inverse, a wait, would be too long to be a wait (or infinite).
        raise ConfigError(f"{where}: {shortened(value)} is too small; expected {MIN_RATE:g} or more")
    return number


def _count(value: Any, where: str, most: int) -> int:
    """
    Check a C{"count"}: a whole number from 0 to C{most}, read exactly (a
    TOML integer is taken as it is, text as a decimal number, never through
    a float that would round it).

    @param value: the flag's text or the TOML value (not a bool).
    @param where: how to name the setting in a message.
    """
    if isinstance(value, int):
        number: int | Decimal = value
    elif isinstance(value, (str, float)):
        try:
            number = Decimal(value)  # exact: 1e3, 20.0 and 2**63 alike
        except (InvalidOperation, ValueError):
            raise ConfigError(f"{where}: expected a number, got {shortened(value)}") from None
        if not number.is_finite():
            raise ConfigError(f"{where}: expected a finite number, got {shortened(value)}")
    else:
        raise ConfigError(f"{where}: expected a number, got {shortened(value)}")
    # Compared before anything else, so that 1e999999999 is never written
    # out as an integer.
    if number > most:
        raise ConfigError(f"{where}: expected at most {most}, got {shortened(value)}")
    if number < 0 or number != int(number):
        raise ConfigError(f"{where}: expected a whole number, 0 or more, got {shortened(value)}")
    return int(number)


def _dataDirectory(options: Options) -> Path:
    """
    The directory netsuite keeps its state in: C{--data-dir}, or the
    default one.
    """
    return Path(options["data-dir"] or defaultDataDirectory())


def _checkHTTPFiles(options: Options) -> None:
    """
    Check the HTTP folder and access log now, so that a mistake is one line
    at start rather than a 404 for every request or a lost log.
    """
    root = options["http-root"]
    if root is not None and not os.path.isdir(root):
        raise ConfigError(f"{options.where('http-root')}: {root!r} is not a directory")
    for name, off in (("http-access-log", "no-http"), ("proxy-access-log", "no-proxy")):
        accessLog = options[name]
        if accessLog is not None:
            _checkLogFile(accessLog, options.where(name))
            if options[off]:
                releaseAccessLog(accessLog)  # no log will take it
    users = options["proxy-users"]
    if users is not None:
        from netsuite.proxyauth import UsersFileError, loadUsers

        try:
            options["proxy-user-table"] = loadUsers(users)
        except UsersFileError as e:
            raise ConfigError(f"{options.where('proxy-users')}: {e}")
    if _keepsDecoyKey(options):
        from netsuite.proxyauth import DECOY_KEY_FILE, loadOrCreateDecoyKey

        keyFile = _dataDirectory(options) / DECOY_KEY_FILE
        try:
            options["proxy-decoy-key"] = loadOrCreateDecoyKey(str(keyFile))
        except ValueError as e:
            raise ConfigError(str(e))
        except OSError as e:
            raise ConfigError(f"{keyFile}: the proxy's key cannot be kept there ({e.strerror or e})")


def _checkTLSListeners(options: Options) -> None:
    """
    Refuse an C{ssl:} endpoint given to a TLS listener flag (C{--https}):
    netsuite would wrap its TLS in TLS again, and every client would fail.
    """
    for plain, secure, _ in SERVICES.values():
        for description in options[secure] if secure else ():
            if description.split(":", 1)[0] == "ssl":
                raise ConfigError(
                    f"{options.where(secure)}: {shortened(description)} is TLS already; "
                    f"give it to --{plain}, and --{secure} a tcp: endpoint"
                )


def _checkListenersUsed(options: Options) -> None:
    """
    Refuse a TLS listener given (as a flag or in the config file) while
    TLS is off; warn of a listener of a service turned off, and of a TLS
    setting that nothing uses.
    """

    def given(name: str) -> bool:
        # (An empty list turns a listener off: nothing is given.)
        return (name in options._given or name in options._where) and bool(options[name])

    for service, (plain, secure, off) in SERVICES.items():
        if off and options[off]:
            for name in (plain, secure):
                if name and given(name):
                    log.warn(
                        "{where} is given, but {off} turns {service} off: it is not listened on",
                        where=options.where(name),
                        off=options.where(off),
                        service=service,
                    )
        elif secure and given(secure) and options["tls-options"] is None:
            # As nginx refuses "listen ... ssl" without a certificate.
            raise ConfigError(
                f"{options.where(secure)} needs TLS: give --tls (a self-signed certificate) or --tls-cert"
            )
    if options["no-echo"] and given("echo-udp"):
        log.warn(
            "{where} is given, but {off} turns echo off: it is not listened on",
            where=options.where("echo-udp"),
            off=options.where("no-echo"),
        )
    if given("tls-handshake-timeout") and options["tls-options"] is None:
        log.warn("{where} is given, but TLS is off", where=options.where("tls-handshake-timeout"))


def _checkLogFile(path: str, where: str) -> None:
    """
    Check that a log can be appended to C{path}, creating the file if it is
    missing, without waiting: a FIFO no process reads is refused (its log
    would go nowhere).  A regular file, C{/dev/null}, a terminal, a pipe
    that something reads (as C{/dev/stdout} is under C{| tee}) or a socket
    (C{/dev/stdout} under systemd) are accepted; the descriptor opened is
    kept for the log (see L{holdAccessLog}).

    @param where: how to name the setting in a message.
    @raise ConfigError: it cannot be written.
    """
    try:
        fd = holdAccessLog(path)
    except OSError as e:
        if e.errno == errno.ENXIO and _isFIFO(path):
            raise ConfigError(f"{where}: cannot write {path!r}: it is a FIFO that no process reads") from None
        raise ConfigError(f"{where}: cannot write {path!r}: {e.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        releaseAccessLog(path)
        raise ConfigError(f"{where}: cannot write {path!r}: not a regular file")


def _isFIFO(path: str) -> bool:
    """
    Whether C{path} is a FIFO (without opening it).
    """
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _checkDirectories(options: Options) -> None:
    """
    Refuse now, in one line, a data or download directory that a file
    stands in the way of (it is created at start when missing, and would
    fail there with a traceback).
    """
    for name in ("data-dir", "download-dir"):
        directory = options[name]
        if directory is None or (name == "download-dir" and options["no-downloads"]):
            continue
        blocked = _notADirectory(Path(directory))
        if blocked == Path(directory):
            raise ConfigError(f"{options.where(name)}: {directory!r} is not a directory")
        if blocked is not None:
            raise ConfigError(
                f"{options.where(name)}: {directory!r} cannot be created: {str(blocked)!r} is not a directory"
            )


def _checkDownloadDirectory(options: Options) -> None:
    """
    Refuse, in one line, a C{--download-dir} that is the data directory or
    lies inside it, other than in its C{downloads} subdirectory (the
    default): the data directory keeps the API token, the TLS and proxy
    keys and the lock by name, and a server names the files saved in the
    download directory (C{Content-Disposition: filename="api-token"} made
    one, which became the token at the next start without
    C{--api-token}).  One that holds the data directory further down is
    accepted: files are saved in it, never below it.
    """
    given = options["download-dir"]
    if given is None or options["no-downloads"]:
        return
    data = _dataDirectory(options)
    below = _placeIn(Path(given), data)
    if below is None or below[:1] == ("downloads",):
        return
    what = "the data directory" if options["data-dir"] else "netsuite's default data directory"
    why = (
        "a download named api-token would become the token"
        if not below
        else "only its downloads subdirectory may hold downloads"
    )
    raise ConfigError(
        f"{options.where('download-dir')}: {given!r} {'is' if not below else 'is inside'} {what} {str(data)!r}, "
        f"where netsuite keeps its API token and keys: {why}; give a directory outside it, or leave the setting "
        f"out for {str(data / 'downloads')!r}"
    )


def _placeIn(path: Path, directory: Path) -> tuple[str, ...] | None:
    """
    Where C{path} lies in C{directory}, both with their links followed
    (and C{..} taken away): the names below C{directory} that lead to it
    (none: it is C{directory}), or L{None} when it is not inside.
    """
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(directory))
    if real == base or base in real.parents:
        return real.parts[len(base.parts) :]
    return None


def _lockDataDirectory(options: Options) -> None:
    """
    When netsuite keeps files in its data directory (the API token, the
    download service's downloads, a self-signed certificate), make it
    (private to its user) and take it for this process: a second netsuite
    given the same one is refused in one line.  Two shared it, each
    rewriting the job list from its own memory (the other's jobs were
    lost), and when started together, each making its own token or
    certificate over the other's.
    """
    if (
        options["no-downloads"]
        and not (options["tls"] and not options["tls-cert"])
        and not _keepsDecoyKey(options)
    ):
        return
    directory = _dataDirectory(options)
    where = options.where("data-dir") if options["data-dir"] else "the data directory"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise ConfigError(f"{where}: cannot use {str(directory)!r}: {e.strerror or e}")
    try:
        holder = lockForThisProcess(directory / DATA_LOCK)
    except OSError as e:
        raise ConfigError(f"{where}: cannot lock {str(directory / DATA_LOCK)!r}: {e.strerror or e}")
    if holder is not None:
        raise ConfigError(
            f"{where}: {str(directory)!r} is in use by another netsuite ({holder}); give this one its own --data-dir"
        )
    try:
        mode = directory.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        # An existing one keeps its mode (it may be shared on purpose).
        log.warn(
            "the data directory {path} is open to other users (mode {mode:o}): they may list and read what "
            "is downloaded into it; chmod 700 it",
            path=str(directory),
            mode=stat.S_IMODE(mode),
        )


def _keepsDecoyKey(options: Options) -> bool:
    """
    Whether the proxy keeps the key of its unknown names' costs in the data
    directory (it runs, and asks for users).
    """
    return not options["no-proxy"] and options["proxy-users"] is not None


#: The lock file a netsuite holds in its data directory (and, for its
#: download service, in its download directory).
DATA_LOCK = ".netsuite.lock"


def _notADirectory(path: Path) -> Path | None:
    """
    The first of C{path} and its parents that exists and is not a
    directory (so that C{path} cannot be made one), or L{None}.
    """
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return None if os.path.isdir(candidate) else candidate
    return None


def _loadTLS(
    options: Options,
) -> tuple[tuple[list, object] | None, CertificateOptions | None, str | None]:
    """
    Load (or, for a bare C{--tls}, create) the certificate chain and key for
    the TLS listeners: them, the server options made of them (which is
    where OpenSSL refuses what it will not serve), and the fingerprint.
    """
    cert, key = options["tls-cert"], options["tls-key"]
    if key and not cert:
        raise ConfigError("--tls-key needs --tls-cert")
    if not cert and not options["tls"]:
        return None, None, None
    try:
        if not cert:
            directory = _dataDirectory(options) / "tls"
            certPath, keyPath, created = ensureSelfSigned(directory)
            if created:
                log.info("created a self-signed certificate for localhost in {d}", d=str(directory))
            cert, key = str(certPath), str(keyPath)
        chain, privateKey = loadPEM(cert, key)
        # The self-signed one is renewed before it expires.
        for problem in chainWarnings(chain, cert) + keyWarnings(privateKey) if options["tls-cert"] else ():
            log.warn("TLS: {problem}", problem=problem)
        tlsOptions = serverOptions(chain, privateKey)
        checkHandshake(tlsOptions, privateKey)
        return (chain, privateKey), tlsOptions, fingerprint(chain[0])
    except TLSConfigError as e:
        raise ConfigError(str(e))


class NetsuiteService(MultiService):
    """
    Every netsuite listener, one named child each; also the
    L{netsuite.status.StatusSource} the HTTP service reports from.

    @ivar stats: the counters of every service, by service name.
    @ivar started: when it was built (POSIX time).
    @ivar http: the HTTP service's L{netsuite.web.site.NetsuiteSite}
        (every HTTP listener serves it), when HTTP runs.
    @ivar chat: the chat service's L{netsuite.chat.ChatFactory} (its rooms
        and members), when chat runs.
    @ivar proxy: the proxy's L{netsuite.proxy.ProxyFactory}, when it runs.
    @ivar downloads: the L{netsuite.download.service.DownloadService}, when
        it runs.
    @ivar budget: the connection limits all stream listeners share.
    """

    version = __version__
    http: Any = None
    chat: Any = None
    proxy: Any = None
    downloads: Any = None
    #: twistd's own options, when twistd runs it (see L{_tellTwistd}).
    twistdConfig: Any = None

    def __init__(self, stats: StatsRegistry) -> None:
        MultiService.__init__(self)
        self.stats = stats
        self.started = time.time()
        self.budget = ConnectionBudget()

    def listeners(self) -> List[ListenerInfo]:
        """
        Every listener, in start order (a L{netsuite.status.StatusSource}).
        """
        return [child.info() for child in self if hasattr(child, "info")]  # type: ignore[attr-defined]

    def privilegedStartService(self) -> None:
        """
        Start listening everywhere; if any listener fails, stop the others
        and exit with one readable line.
        """
        claimLocksForThisProcess()  # twistd may be a daemon now, a new process
        try:
            MultiService.privilegedStartService(self)
        except ListenError as e:
            for child in self:
                port = getattr(child, "port", None)
                if port is not None:
                    port.stopListening()
                    child.port = None
            self._tellTwistd(str(e))
            raise ConfigError(str(e))

    def _tellTwistd(self, message: str) -> None:
        """
        Under a daemonizing twistd, hand C{message} to the process waiting
        in the terminal, and remove the pid file.  twistd does both only
        for an C{Exception}, not for the C{SystemExit} a L{ConfigError} is,
        and its waiting process never ended (the pipe it reads is its own
        too).
        """
        twistd = self.twistdConfig
        pipe = twistd.get("statusPipe") if twistd is not None else None
        if pipe is None:
            return
        twistd["statusPipe"] = None
        with contextlib.suppress(OSError):
            os.write(pipe, b"1 " + f"netsuite: {message}".encode("utf-8", "backslashreplace")[:98])
            os.close(pipe)
        pidfile = twistd.get("pidfile")
        with contextlib.suppress(OSError, ValueError):
            with open(pidfile, "rb") as f:
                own = int(f.read(32)) == os.getpid()
            if own:
                os.remove(pidfile)

    def abortConnections(self) -> int:
        """
        Abort at once the connections of the listeners that are stopping,
        rather than at the end of their grace period.

        @return: how many were aborted.
        """
        aborted = 0
        for child in self:
            tracker = getattr(child, "tracker", None)
            if tracker is not None and tracker.stopping:
                aborted += tracker.abortAll()
        return aborted

    def startService(self) -> None:
        # twistd listens in privilegedStartService; twist and embedding
        # applications go straight here.
        if not any(getattr(child, "port", None) for child in self):
            self.privilegedStartService()
        MultiService.startService(self)


def _hasTerminal() -> bool:
    """
    Whether this process has a controlling terminal: one started from a
    shell, tmux or C{docker run -t} has; a daemon, or one run by systemd,
    supervisord or Docker without C{-t}, has not.
    """
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return False
    os.close(fd)
    return True


class StopSignals:
    """
    SIGINT and SIGTERM for a process that runs a L{NetsuiteService}: the
    first goes to the reactor's own handler, which stops it (connections
    get the grace period to close); one that comes while netsuite is still
    stopping aborts the connections still open at once.  Twisted's handler
    took a second signal to C{reactor.stop()} again, which raised
    C{ReactorNotRunning}: a critical traceback in the log, and nothing
    done.

    SIGHUP (unless the process was started ignoring it, as by C{nohup}):
    for a process with a controlling terminal (a shell's, tmux's, C{docker
    run -t}'s), the terminal went away, and netsuite stops as for SIGTERM;
    one without (a daemon, or run by systemd, supervisord or Docker without
    C{-t}) got it from an operator expecting a reload, and logs and ignores
    it (netsuite has nothing to reload).  Either way it killed the process
    at once, with no goodbye to chat users and the pid file left behind.

    nginx's SIGQUIT (its graceful stop) is a SIGTERM here; its SIGUSR2 (a
    binary upgrade) is logged and ignored; and SIGUSR1 without a twistd log
    file to reopen too.  Each killed the process at once.

    @ivar stopping: the reactor is stopping (by a signal or otherwise).
    @ivar terminal: the process has a controlling terminal (L{None}: look
        when installing).
    """

    stopping = False

    def __init__(self, reactor: Any, root: NetsuiteService, terminal: bool | None = None) -> None:
        self._reactor = reactor
        self._root = root
        self.terminal = terminal

    def install(self) -> None:
        """
        Stand in front of the reactor's handlers; call once it runs (it
        installs them as it starts).
        """
        for number in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(number)
            if callable(handler):
                signal.signal(number, functools.partial(self.received, handler))
        quit, term = getattr(signal, "SIGQUIT", None), signal.getsignal(signal.SIGTERM)
        if quit is not None and signal.getsignal(quit) in (signal.SIG_DFL, None) and callable(term):
            # nginx's graceful stop; by default it ended the process at once
            # (and dumped its core).  As SIGTERM, which twistd ends the
            # process with once stopped (SIGQUIT would dump its core then).
            signal.signal(quit, functools.partial(self._quit, term))
        user2 = getattr(signal, "SIGUSR2", None)
        if user2 is not None and signal.getsignal(user2) in (signal.SIG_DFL, None):
            # nginx's binary upgrade; by default it ended the process at once.
            signal.signal(user2, self._user2)
        hangUp = getattr(signal, "SIGHUP", None)
        if hangUp is not None and signal.getsignal(hangUp) in (signal.SIG_DFL, None):
            if self.terminal is None:
                self.terminal = _hasTerminal()
            signal.signal(hangUp, self._hungUp)
        user1 = getattr(signal, "SIGUSR1", None)
        if user1 is not None and signal.getsignal(user1) in (signal.SIG_DFL, None):
            # twistd reopens its --logfile on SIGUSR1; without one (-n,
            # logging to standard output) it killed the process, which a
            # logrotate script's "kill -USR1" (nginx's) sends.
            signal.signal(user1, self._user1)
        self._reactor.addSystemEventTrigger("before", "shutdown", self._stopping)

    def _user1(self, number: int, frame: Any) -> None:
        """
        SIGUSR1 without a twistd log file to reopen: logged, and ignored.
        """
        self._reactor.callFromThread(
            log.info,
            "Received SIGUSR1: ignored, there is no log file to reopen (the access log is opened "
            "again by itself when it is moved or removed)",
        )

    def _quit(self, term: Callable[[int, Any], object], number: int, frame: Any) -> None:
        """
        SIGQUIT (nginx's graceful stop): a SIGTERM, said so in the log.
        """
        if not self.stopping:
            self._reactor.callFromThread(log.info, "Received SIGQUIT: stopping as for SIGTERM")
        term(signal.SIGTERM, frame)

    def _user2(self, number: int, frame: Any) -> None:
        """
        SIGUSR2 (nginx's binary upgrade): logged, and ignored.
        """
        self._reactor.callFromThread(
            log.info, "Received SIGUSR2: ignored, netsuite has no upgrade in place (restart it to upgrade)"
        )

    def _hungUp(self, number: int, frame: Any) -> None:
        """
        SIGHUP: a stop with a terminal, else ignored (see the class).
        """
        if not self.terminal:
            self._reactor.callFromThread(
                log.info,
                "Received SIGHUP: ignored, netsuite has nothing to reload (restart it to change its "
                "options; the access log is opened again by itself when it is moved or removed)",
            )
            return
        self.received(self._hangUpStop, number, frame)

    def _hangUpStop(self, number: int, frame: Any) -> None:
        """
        Stop the reactor for a SIGHUP, as its own handler does for SIGTERM.
        """
        reactor = self._reactor
        reactor.callFromThread(log.info, "Received SIGHUP (the terminal went away), shutting down.")
        reactor.callFromThread(reactor.stop)
        # twistd then ends the process by the signal, as after SIGTERM.
        reactor._exitSignal = number

    def _stopping(self) -> None:
        self.stopping = True

    def received(self, first: Callable[[int, Any], object], number: int, frame: Any) -> None:
        """
        A signal: the first to C{first}, the reactor's handler; a later
        one aborts the connections left, from the reactor's thread (a
        signal handler may run in the middle of the reactor's work).
        """
        if not self.stopping:
            self.stopping = True
            first(number, frame)
            return
        self._reactor.callFromThread(self._again, signal.Signals(number).name)

    def _again(self, name: str) -> None:
        aborted = self._root.abortConnections()
        if aborted:
            log.info(
                "Received {signal} again: aborted the {count} connection(s) still open", signal=name, count=aborted
            )
        else:
            log.info("Received {signal} again: already stopping", signal=name)


def _http(config: Options, *, status: "NetsuiteService", **kw: Any) -> IService:
    from netsuite.web.site import Limits, makeHTTPService, makeSite

    if status.http is None:  # one site (metrics, file cache, log) for plain and TLS
        limits = Limits(
            maxBody=config["http-max-body"],
            maxRequestLine=config["http-max-request-line"],
            maxHeaderBytes=config["http-max-header-size"],
            maxHeaders=config["http-max-headers"],
            headerTimeout=config["http-header-timeout"],
            idleTimeout=config["http-idle-timeout"],
        )
        api = {b"downloads": status.downloads.resource()} if status.downloads is not None else {}
        status.http = makeSite(
            status,
            reactor=kw["reactor"],
            stats=kw["stats"],
            api=api,
            root=config["http-root"],
            followSymlinks=config["http-follow-symlinks"],
            h2c=config["http-h2c"],
            accessLog=config["http-access-log"],
            limits=limits,
        )
    return makeHTTPService(status=status, site=status.http, **kw)


def _chat(config: Options, *, status: "NetsuiteService", **kw: Any) -> IService:
    from netsuite.chat import ChatFactory, ChatSettings, makeChatService

    if status.chat is None:  # one set of rooms for the plain and TLS listeners
        status.chat = ChatFactory(
            kw["reactor"],
            stats=kw["stats"],
            settings=ChatSettings(
                historySize=config["chat-history"],
                historyBytes=config["chat-history-bytes"],
                privateRate=config["chat-private-rate"],
                roomRate=config["chat-room-rate"],
                noticeRate=config["chat-notice-rate"],
                hostRate=config["chat-host-rate"],
                maxLine=max(config["chat-max-line"], 1),
                rate=config["chat-rate"],
                burst=max(config["chat-burst"], 1),
                lineQueue=config["chat-line-queue"],
                maxOutput=config["chat-max-output"],
                nameTimeout=config["chat-name-timeout"],
                idleTimeout=config["chat-idle-timeout"],
                maxClients=config["chat-max-clients"],
                maxClientsPerHost=config["chat-max-clients-per-host"],
                maxRooms=max(config["chat-max-rooms"], 1),
            ),
        )
    return makeChatService(factory=status.chat, **kw)


def _proxy(config: Options, *, status: "NetsuiteService", **kw: Any) -> IService:
    from netsuite.proxy import ProxyFactory, ProxySettings, makeProxyService
    from netsuite.proxyauth import Authenticator
    from netsuite.proxyrules import ProxyRules

    if status.proxy is None:  # one pool, one set of rules for plain and TLS
        users = config.get("proxy-user-table")
        reactor = kw["reactor"]
        status.proxy = ProxyFactory(
            reactor,
            stats=kw["stats"],
            rules=ProxyRules(
                clients=config["proxy-clients"],
                allowLoopback=config["proxy-allow-loopback"],
                allowPrivate=not config["proxy-deny-private"],
                connectPorts=config["proxy-connect-ports"],
            ),
            settings=ProxySettings(
                connectTimeout=config["proxy-connect-timeout"],
                readTimeout=config["proxy-read-timeout"],
                tunnelIdleTimeout=config["proxy-tunnel-idle-timeout"],
                idleTimeout=config["proxy-idle-timeout"],
                headerTimeout=config["proxy-header-timeout"],
                maxTunnels=config["proxy-max-tunnels"],
                lookupsPerClient=config["proxy-lookups-per-client"],
                poolPerHost=config["proxy-pool-per-host"],
                forwardedFor=config["proxy-forwarded-for"],
            ),
            authenticator=(
                Authenticator(users, reactor, path=config["proxy-users"], decoyKey=config.get("proxy-decoy-key"))
                if users is not None
                else None
            ),
            accessLog=config["proxy-access-log"],
        )
    return makeProxyService(factory=status.proxy, **kw)


def _downloads(config: Options, reactor: object) -> IService:
    from netsuite.download.engine import DownloadSettings
    from netsuite.download.service import TOKEN_FILE, loadOrCreateToken, makeDownloadService
    from netsuite.proxyrules import ProxyRules

    directory = config["download-dir"] or str(_dataDirectory(config) / "downloads")
    where = config.where("download-dir") if config["download-dir"] else "downloads"
    try:
        # Now, so that a directory that cannot be made stops the start in one
        # line before any listener starts.
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{where}: cannot create {directory!r}: {e.strerror or e}")
    lock = Path(directory) / DATA_LOCK
    try:
        holder = lockForThisProcess(lock)
    except OSError as e:
        raise ConfigError(f"{where}: cannot lock {str(lock)!r}: {e.strerror or e}")
    if holder is not None:
        # Two services' job lists in one directory: each rewrote it alone.
        raise ConfigError(
            f"{where}: {directory!r} is in use by another netsuite's downloads ({holder});"
            " give this one its own --download-dir"
        )
    settings = DownloadSettings(
        maxConnections=config["download-connections"],
        maxPerHost=config["download-per-host"],
        segments=config["download-segments"],
        maxSize=config["download-max-size"] or None,
        rateLimit=config["download-rate"] or None,
        lowestSpeed=config["download-lowest-speed"] or None,
    )
    rules = ProxyRules(allowLoopback=config["download-allow-loopback"], allowPrivate=not config["download-deny-private"])
    token, tokenFile = config["api-token"], None
    if token is None:
        tokenFile = _dataDirectory(config) / TOKEN_FILE
        try:
            token, _ = loadOrCreateToken(tokenFile)
        except ValueError as e:
            raise ConfigError(str(e))
        except OSError as e:
            raise ConfigError(f"{tokenFile}: the API token cannot be kept there ({e.strerror or e})")
    return makeDownloadService(
        directory, reactor, token=token, tokenFile=tokenFile, settings=settings, rules=rules
    )


#: How each stream service is built from its settings.
_BUILDERS: Dict[str, Callable[..., IService]] = {
    "http": _http,
    "chat": _chat,
    "proxy": _proxy,
    "echo": lambda config, status, **kw: makeEchoService(
        idleTimeout=config["echo-idle-timeout"], **kw
    ),
    "discard": lambda config, status, **kw: makeDiscardService(
        idleTimeout=config["echo-idle-timeout"], **kw
    ),
    "daytime": lambda config, status, **kw: makeDaytimeService(**kw),
}


#: The HTTP/1 protocols the web server and the proxy take by ALPN (as nginx).
_HTTP1_ALPN = [b"http/1.1", b"http/1.0"]


def _tlsOptions(config: Options, service: str) -> CertificateOptions | None:
    """
    The TLS options for C{service}'s listeners: HTTP and the proxy name
    their protocols by ALPN (HTTP also HTTP/2 when netsuite serves it),
    and refuse a client offering none of them; the other services name
    none, and refuse a client offering HTTP (see L{netsuite.tls}).
    """
    if config["tls-material"] is None:
        return None
    if service == "http":
        from netsuite.web.site import H2_SERVED

        protocols = [b"h2", *_HTTP1_ALPN] if H2_SERVED else _HTTP1_ALPN
        return serverOptions(*config["tls-material"], acceptableProtocols=protocols)
    if service == "proxy":
        return serverOptions(*config["tls-material"], acceptableProtocols=_HTTP1_ALPN)
    return config["tls-options"]  # type: ignore[no-any-return]


def _listeners(config: Options, reactor: object, root: "NetsuiteService") -> Iterator[IService]:
    stats = root.stats
    for name, (plain, secure, off) in SERVICES.items():
        if off is not None and config[off]:
            continue
        build = _BUILDERS[name]
        tls = _tlsOptions(config, name)
        descriptions = [(d, None) for d in config[plain]]
        if tls is not None:
            descriptions += [(d, tls) for d in config[secure]]
        if not descriptions:
            continue
        listening = dict(
            reactor=reactor,
            stats=stats.forService(name),
            grace=config["grace"],
            maxConnections=config["max-connections"] or None,
            budget=root.budget,
            handshakeTimeout=config["tls-handshake-timeout"] or None,
            lingerTime=config["linger-time"],
            lingerTimeout=config["linger-timeout"],
        )
        for description, tlsOptions in descriptions:
            yield build(config, status=root, endpoint=description, tls=tlsOptions, **listening)
    if not config["no-echo"]:
        udpStats = stats.forService("echo-udp")
        for description in config["echo-udp"]:
            yield makeEchoUDPService(
                description,
                reactor,
                stats=udpStats,
                rate=config["echo-udp-rate"],
                bandwidth=config["echo-udp-bandwidth"],
                totalRate=config["echo-udp-total-rate"],
                totalBandwidth=config["echo-udp-total-bandwidth"],
            )


#: Open files kept aside for everything but connections (logs, files
#: served, state files, the reactor's own).
_FILES_SPARE = 128

#: Connections counted for a listener without a limit.
_UNLIMITED_GUESS = 4096


def checkOpenFileLimit(wanted: int) -> Optional[int]:
    """
    Raise the process's limit on open files (C{ulimit -n}) towards
    C{wanted}, as far as the hard limit allows.

    @return: the limit on open files as it is now (L{None}: none).
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    if soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def makeService(config: Options, reactor: object | None = None) -> NetsuiteService:
    """
    Build every configured listener as one named child of a
    L{NetsuiteService}.

    @param config: parsed L{Options}.
    @param reactor: the reactor to listen with (the global one by default).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    installResolver(reactor)
    stats = StatsRegistry()
    root = NetsuiteService(stats)
    root.twistdConfig = getattr(config, "parent", None)
    root.budget.maxPerHost = config["max-connections-per-host"] or None
    if not config["no-downloads"]:
        root.downloads = _downloads(config, reactor)
        root.downloads.setServiceParent(root)
        if config["no-http"]:
            log.warn("downloads: --no-http leaves /api/downloads unreachable; queued downloads still resume")
    wanted = largest = 0
    for listener in _listeners(config, reactor, root):
        listener.setServiceParent(root)
        tracker = getattr(listener, "tracker", None)
        if tracker is not None:
            # A proxied connection has its origin's too.
            perConnection = 2 if listener.name.startswith("proxy") else 1
            files = perConnection * (tracker.maxConnections or _UNLIMITED_GUESS)
            wanted += files
            largest = max(largest, files)
    spare = _FILES_SPARE + (config["download-connections"] if not config["no-downloads"] else 0)
    if not config["no-http"]:
        from netsuite.web.site import BODY_FILES

        spare += BODY_FILES  # request bodies in temporary files
    pool = root.proxy.pool if root.proxy is not None else None
    if pool is not None:
        # Idle origin connections outlive their clients, and counted
        # nowhere: the pool's 512 took the files others needed.
        spare += pool.total
    folder = root.http.static if root.http is not None else None
    if folder is not None and folder.maxOpenFiles is not None:
        spare += folder.maxOpenFiles  # files being sent
    limit = checkOpenFileLimit(wanted + spare)
    total = config["max-connections-total"] or None
    if limit is not None and limit < wanted + spare:
        # A small limit: the files being sent get at most a quarter of what
        # the rest leaves (at least 16), the proxy's pool a quarter of what
        # is left then.
        if folder is not None and folder.maxOpenFiles is not None:
            spare -= folder.maxOpenFiles
        if pool is not None:
            spare -= pool.total
        if folder is not None and folder.maxOpenFiles is not None:
            folder.maxOpenFiles = min(folder.maxOpenFiles, max((limit - spare) // 4, 16))
            spare += folder.maxOpenFiles
            if folder.maxOpenFilesPerHost is not None:
                # An address's share shrinks with them (at least 16).
                folder.maxOpenFilesPerHost = min(
                    folder.maxOpenFilesPerHost, max(folder.maxOpenFiles // 8, min(folder.maxOpenFiles, 16))
                )
        if pool is not None:
            pool.total = min(pool.total, max((limit - spare) // 4, 0))
            spare += pool.total
    if limit is not None:
        # Past the open-file limit the system refuses connections before
        # netsuite counts them, and the files it needs fail to open.
        fileBound = max(limit - spare, 1)
        # (Not when the total asked for is what bounds it.)
        if fileBound < largest and fileBound < (total or limit + 1):
            log.warn(
                "open files are limited to {limit} (ulimit -n): keeping {spare} for files, logs and state, "
                "netsuite accepts at most {total} connections in all, fewer than one listener's limit "
                "({largest}); raise the open-file limit or lower --max-connections",
                limit=limit,
                spare=spare,
                total=fileBound,
                largest=largest,
            )
        total = min(total or limit, fileBound)
    root.budget.maxTotal = total
    if config["tls-fingerprint"]:
        log.info("TLS certificate SHA-256 fingerprint: {fp}", fp=config["tls-fingerprint"])
    if not getattr(reactor, "running", True):
        # twistd and twist: the process is netsuite's.  An application
        # that embeds it while its reactor runs keeps its own handlers.
        reactor.callWhenRunning(StopSignals(reactor, root).install)  # type: ignore[attr-defined]
    return root
