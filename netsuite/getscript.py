"""
The C{netsuite-get} console script, which imports nothing heavy itself:
Ctrl-C while Python still imports the downloader (Twisted and treq, about
0.9 s) ends it as Ctrl-C ends it later, in one line and with status 130,
not with a C{KeyboardInterrupt} traceback.  The command itself is
L{netsuite.download.cli}.
"""

import sys
from typing import NoReturn

#: What C{netsuite-get} says when Ctrl-C stops it before it began.
INTERRUPTED = "netsuite-get: interrupted\n"


def main() -> NoReturn:
    """
    Run C{netsuite-get} (L{netsuite.download.cli.main}); Ctrl-C at any
    time before its reactor runs exits with status 130 and one line.
    """
    try:
        from netsuite.download.cli import main as run

        run()
    except KeyboardInterrupt:
        interrupted()


def interrupted() -> NoReturn:
    """
    Say that Ctrl-C stopped C{netsuite-get} (when standard error can take
    it) and exit with status 130.
    """
    try:
        sys.stderr.write(INTERRUPTED)
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass  # closed, or none at all
    raise SystemExit(130)


if __name__ == "__main__":
    main()
