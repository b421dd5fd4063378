"""File modes for what doctune writes (run store, dataset files)."""

from __future__ import annotations

import os

_UMASK = os.umask(0)  # read the process umask (the only API sets it), then put it back
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would give; mkstemp's 0600 would surprise users
