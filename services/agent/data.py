"""A workload's data as bytes: what a driver exports for a takeover or a backup, and
imports on a successor. Pure helpers over a folder; the drivers choose the folder.

The `process` driver exports its data folder as a tar archive built deterministically
(sorted names, no times, no owners), so the same folder always gives the same bytes and
the same sha256 on every member. The `sim` driver's data is one blob of deterministic
content, `sim_blob(workload, size)`, so a benchmark can move megabytes that any member
can check without a copy of the original.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

from services.agent.errors import DriverError

SIM_BLOB = "sim.bin"


def sim_blob(workload: str, size: int) -> bytes:
    """`size` bytes that depend only on the workload id (SHAKE-256 as a stream cipher
    of sorts: fast, and different for every workload)."""
    return hashlib.shake_256(f"stekker-sim-data:{workload}".encode()).digest(size)


def pack(folder: Path) -> bytes:
    """A deterministic tar of `folder`'s regular files and subfolders (empty: b"")."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if not (path.is_file() or path.is_dir()) or path.is_symlink():
                    continue  # links and devices never travel between members
                info = tarfile.TarInfo(path.relative_to(folder).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if path.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    payload = path.read_bytes()
                    info.size, info.mode = len(payload), 0o644
                    tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def unpack(folder: Path, data: bytes) -> None:
    """Replace `folder`'s content with the archive `data` (made by `pack`)."""
    staging = folder.with_name(folder.name + ".import")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            # The "data" filter refuses absolute paths, "..", links and devices: an
            # archive from another member must not write outside the folder.
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DriverError(f"cannot unpack the data archive: {exc}") from None
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
