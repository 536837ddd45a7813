"""Where a member's keys live during a rotation, so no file is ever overwritten.

`keys/<member>.key` is the key in use; a rotation's new key waits in
`keys/next/<member>.key` until the roster holding it is in force; then the old key moves
to `keys/retired/<member>.<key id>.key` and the new one takes its place. Sub-folders keep
`keys/*.key` a list of members (the CLI picks its default member from it).
"""

from __future__ import annotations

import os
from pathlib import Path

from mesh.keys import Identity, key_path


def next_keys_dir(data_dir: Path) -> Path:
    return data_dir / "keys" / "next"


def install_new_key(keys_dir: Path, old: Identity, new: Identity) -> Path:
    """Move the old key to `retired/`, the waiting new key into place; returns where the
    old key went."""
    retired_dir = keys_dir / "retired"
    retired_dir.mkdir(mode=0o700, exist_ok=True)
    retired = retired_dir / f"{old.member}.{old.key_id}.key"
    current = key_path(keys_dir, old.member)
    waiting = key_path(keys_dir / "next", new.member)
    os.replace(current, retired)
    os.replace(waiting, current)  # same file system: atomic, keeps mode 0600
    return retired
