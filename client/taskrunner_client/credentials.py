"""Tokens from `taskrunner login`, per server URL, in the user's config dir
($XDG_CONFIG_HOME/taskrunner, else ~/.config/taskrunner), readable by the
user alone (the file 0600, its folder 0700)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "taskrunner"


def credentials_file() -> Path:
    return config_dir() / "credentials.json"


def _read_all() -> dict[str, Any]:
    try:
        data = json.loads(credentials_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load(url: str) -> dict[str, Any]:
    """The tokens stored for `url` ({} when none)."""
    entry = _read_all().get(url.rstrip("/"))
    return entry if isinstance(entry, dict) else {}


def save(url: str, entry: dict[str, Any] | None) -> None:
    """Store (or, with None, forget) the tokens for `url`."""
    data = _read_all()
    if entry is None:
        data.pop(url.rstrip("/"), None)
    else:
        data[url.rstrip("/")] = entry
    folder = config_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # also when it existed: only its owner may look inside
    path = credentials_file()
    temporary = path.with_suffix(".tmp")
    # Created 0600 from the start: the tokens are never readable by others,
    # not even for a moment; the rename replaces the old file at once.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
