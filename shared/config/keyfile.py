"""Reading ``auth_key_file``: a file holding only the auth key.

The file is read when the configuration is loaded. Surrounding whitespace (a trailing
newline) is stripped; the key must be one token. The file must be a regular file that
only its owner can access (``chmod 600``), like an ssh private key. Errors name the
file, never its content.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import fail
from .fields import parse_secret
from .model import Secret

MAX_KEY_FILE_BYTES = 64 * 1024


def read_key_file(path: Path, where: str) -> Secret:
    """Read the key in *path*; errors start with *where* (the key path or env var)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            fail(where, f"key file {path} is not a regular file")
        with open(path, "rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            if mode & 0o077:
                fail(where, f"key file {path} is accessible by group/others "
                            f"(mode {mode:04o}); run: chmod 600 {path}")
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        fail(where, f"cannot read key file {path}: {exc.strerror or exc}")
    if len(data) > MAX_KEY_FILE_BYTES:
        fail(where, f"key file {path} is too large to hold a key")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        fail(where, f"key file {path} is not UTF-8 text")
    if not text.strip():
        fail(where, f"key file {path} is empty")
    return parse_secret(text, f"{where}: key file {path}")
