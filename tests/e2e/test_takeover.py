"""End to end, as processes: a `process`-driver workload that serves HTTP and writes to
its data folder is taken over (its member declares a change of control); its data
arrives byte for byte on the successor, which answers with it over HTTP."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from contracts.workload import WorkloadBound
from mesh.bus import Bus
from mesh.server import log_tail
from support import wait_until
from support_e2e import connect, json_of, running_up, stekker, wait_up_ready

pytestmark = pytest.mark.e2e

WORKLOAD = "archief-http"
# Writes where it was born once (so a copy shows where its data came from), then
# serves its data folder over HTTP.
SCRIPT = (
    "import functools, http.server, os, sys\n"
    "d, port = sys.argv[1], int(sys.argv[2])\n"
    "born = os.path.join(d, 'born.txt')\n"
    "if not os.path.exists(born):\n"
    "    open(born, 'w').write('born in ' + d + '\\n')\n"
    "handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=d)\n"
    "http.server.ThreadingHTTPServer(('127.0.0.1', port), handler).serve_forever()\n"
)
SPEC = f"""
id: {WORKLOAD}
tenant: rivm
criticality: high
stateful: true
rto_seconds: 60
rpo_seconds: 300
resources: {{vcpu: 1, memory_gib: 1, storage_gib: 10}}
requirements:
  jurisdictions: [NL]
  preferences: {{members: [dommel]}}
run:
  command: ["{{python}}", "-c", {SCRIPT!r}, "{{data_dir}}", "{{port}}"]
  health_path: "/"
"""


async def bound_on(bus: Bus, member: str, generation: int) -> tuple[Path, int] | None:
    """Where the agent of `member` runs the workload: (data folder, HTTP port)."""
    found = await bus.last_event(WorkloadBound.subject(member, WORKLOAD))
    if found is None:
        return None
    event = found[0]
    assert isinstance(event, WorkloadBound)
    data = re.search(r"data (\S+)", event.detail)
    port = re.search(r"http://127\.0\.0\.1:(\d+)/", event.detail)
    if event.generation < generation or data is None or port is None:
        return None
    return Path(data.group(1)), int(port.group(1))


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return bytes(answer.read())


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


async def test_a_process_workload_keeps_its_data_across_a_takeover(tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    spec_file = tmp_path / f"{WORKLOAD}.yaml"
    spec_file.write_text(SPEC, encoding="utf-8")
    with running_up(data_dir, "--driver", "auto") as up:
        await wait_up_ready(up)
        bus = await connect(data_dir)
        try:
            placed = json_of(stekker(data_dir, "--as", "amstel", "workload", "submit",
                                     str(spec_file), "--json", "--wait", "30"))
            source = placed["members"][0]
            where = await wait_until(lambda: bound_on(bus, source, 1), timeout=60,
                                     what=f"{WORKLOAD} running on {source}")
            folder, port = where
            # The workload wrote born.txt; more data lands in its folder while it runs.
            (folder / "rows").mkdir(exist_ok=True)
            (folder / "rows" / "2026.csv").write_bytes(bytes(range(256)) * 4096)
            before = files(folder)
            assert get(port, "/born.txt") == before["born.txt"]

            declared = stekker(data_dir, "--as", source, "takeover", "declare", "--member",
                               source, "--reason", "acquisition", "--timeout", "120",
                               timeout=180)
            assert declared.returncode == 0, (
                f"{declared.stdout}\n{declared.stderr}\n" + "\n".join(
                    f"--- {log.name}:\n{log_tail(log, 25)}"
                    for log in sorted((data_dir / "logs").glob("*.node.log"))))
            assert "takeover PASSED" in declared.stdout
            report = json_of(stekker(data_dir, "takeover", "status", "--json"))
            assert report  # the saga list

            records = json_of(stekker(data_dir, "workload", "list", "--json"))
            (mine,) = [r for r in records if r["id"] == WORKLOAD]
            successor = mine["members"][0]
            assert successor != source
            moved = await wait_until(lambda: bound_on(bus, successor, 2), timeout=60,
                                     what=f"{WORKLOAD} running on the successor")
            new_folder, new_port = moved
            assert new_folder != folder
            assert files(new_folder) == before  # byte for byte
            assert get(new_port, "/born.txt") == before["born.txt"]
            assert get(new_port, "/rows/2026.csv") == before["rows/2026.csv"]
        finally:
            await bus.close()
