"""
netsuite's tests.  Code under test that falls back to netsuite's default
data directory (C{$XDG_DATA_HOME/netsuite}) writes into a temporary one,
never into the home directory of whoever runs the tests.
"""

import atexit
import os
import shutil
import tempfile

_dataHome = tempfile.mkdtemp(prefix="netsuite-tests-")
os.environ["XDG_DATA_HOME"] = _dataHome
atexit.register(shutil.rmtree, _dataHome, True)
