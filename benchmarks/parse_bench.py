"""
Parsing benchmark: how the CPU time of netsuite's header and body parsers
grows with the size of hostile input.

For each shape (a multipart body for C{/api/echo}, a C{Content-Disposition}
an origin sends the downloader) it parses 8 KiB and 64 KiB of it and prints
the CPU time of each and their ratio: about 8 is linear, 64 quadratic (the
email package's parameter parser, which netsuite no longer uses, gave 58 to
61).  The peer is netsuite itself at the smaller size, measured in the same
run, so the machine's speed cancels out.  Target: every ratio under 16.

    python3 benchmarks/parse_bench.py [--small 8192] [--factor 8]
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Callable, Dict

from netsuite.download.names import nameFromContentDisposition
from netsuite.web import api


def cpuTime(function: Callable[[object], object], value: object, runs: int = 5) -> float:
    """
    The least CPU time of C{runs} calls of C{function(value)}, after one
    that is not counted; a refusal (L{api.APIError}) counts as done.
    """

    def run() -> float:
        start = time.process_time()
        try:
            function(value)
        except api.APIError:
            pass
        return time.process_time() - start

    gc.disable()
    try:
        run()
        return min(run() for _ in range(runs))
    finally:
        gc.enable()


def multipart(parts: list[bytes]) -> bytes:
    return b"".join(b"--B\r\n" + part + b"\r\n" for part in parts) + b"--B--\r\n"


def field(name: bytes, value: bytes, *headers: bytes) -> bytes:
    head = b"Content-Disposition: form-data; name=" + name
    return b"\r\n".join([head, *headers]) + b"\r\n\r\n" + value


def shapes() -> Dict[str, tuple[Callable[[object], object], Callable[[int], object]]]:
    """
    Each shape: the parser, and a function making C{n} bytes of it.
    """
    body: Callable[[object], object] = lambda data: api._parseMultipart(data, {"boundary": "B"})  # noqa: E731
    disposition: Callable[[object], object] = nameFromContentDisposition  # type: ignore[assignment]
    cd = b"Content-Disposition: form-data; name=a"
    return {
        "multipart: ; in a part's Content-Type": (
            body, lambda n: multipart([field(b"a", b"v", b"Content-Type: text/plain" + b";" * n)])),
        "multipart: quoted ; in a part's Content-Type": (
            body, lambda n: multipart([field(b"a", b"v", b'Content-Type: text/plain; x="' + b";" * n + b'"')])),
        "multipart: quoted ; in a nested part's Content-Type": (
            body, lambda n: multipart(
                [field(b"a", b"", b'Content-Type: multipart/mixed; boundary=C; x="' + b";" * n + b'"')])),
        "multipart: quoted pairs in Content-Disposition": (
            body, lambda n: multipart([b'Content-Disposition: form-data; name="' + b'\\"' * (n // 2) + b'"\r\n\r\nv'])),
        "multipart: header lines": (body, lambda n: multipart([cd + b"\r\nX: y" * (n // 5) + b"\r\n\r\nv"])),
        "multipart: folded header lines": (
            body, lambda n: multipart([cd + b"\r\nX: y" + b"\r\n z" * (n // 4) + b"\r\n\r\nv"])),
        "multipart: lines like delimiters": (body, lambda n: multipart([cd + b"\r\n\r\n" + b"--Bx\r\n" * (n // 6)])),
        "multipart: empty parts": (body, lambda n: multipart([cd + b"\r\n\r\n"] * (n // 50))),
        "Content-Disposition: quoted ;": (disposition, lambda n: 'attachment; filename="' + ";" * n + '"'),
        "Content-Disposition: ;": (disposition, lambda n: "attachment; filename=a.txt" + ";" * n),
        "Content-Disposition: parameters": (disposition, lambda n: "attachment; filename=a.txt" + "; a=b" * (n // 5)),
        "Content-Disposition: continuations": (
            disposition, lambda n: "attachment" + "".join("; filename*%d=a" % (i,) for i in range(n // 16))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=8192, help="bytes of the smaller input (default 8192)")
    parser.add_argument("--factor", type=int, default=8, help="how many times larger the other is (default 8)")
    options = parser.parse_args()
    large = options.small * options.factor
    print(f"{'shape':56} {options.small:>9} B {large:>9} B   ratio (linear {options.factor}, "
          f"quadratic {options.factor ** 2})")
    for name, (function, make) in shapes().items():
        small, big = cpuTime(function, make(options.small)), cpuTime(function, make(large))
        ratio = big / max(small, 1e-6)
        print(f"{name:56} {small * 1000:8.2f}ms {big * 1000:8.2f}ms   {ratio:5.1f}")


if __name__ == "__main__":
    main()
