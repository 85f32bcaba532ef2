"""
netsuite: everyday network services in one Twisted process.

Each service lives in its own module and can be embedded on its own; see
L{netsuite.echo} for the echo family and L{netsuite.tap} for how
C{twistd -n netsuite} composes them.
"""

__version__ = "0.1.0"
