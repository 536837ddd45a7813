"""Tests of mesh.localfed: the up.json state, liveness, and stopping/starting members."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from mesh.errors import AlreadyRunning, FederationNotRunning
from mesh.localfed import (
    FederationState,
    LocalFederation,
    MemberProcs,
    find_data_dir,
    pid_alive,
    stop_pid,
)

pytestmark = pytest.mark.integration

BOUND = 20.0
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# a node that prints, then runs a helper process of its own, like a driver would
NODE_WITH_HELPER = [
    sys.executable,
    "-c",
    "import subprocess, sys, time; print('node up', flush=True); "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)",
]


def wait_for(condition: Callable[[], object], what: str) -> None:
    """Poll `condition` until true; fail after BOUND seconds."""
    deadline = time.monotonic() + BOUND
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def gone(pid: int | None) -> bool:
    """Not running: no such pid, or only a zombie left to be reaped."""
    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def state_of(fed: LocalFederation) -> FederationState:
    state = fed.load()
    assert state is not None
    return state


def member_of(fed: LocalFederation, member: str) -> MemberProcs:
    return state_of(fed).members[member]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(SLEEPER)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[LocalFederation]:
    federation = LocalFederation(tmp_path / ".stekker")
    try:
        yield federation
    finally:
        federation.stop_all(kill=True)


@pytest.fixture
def running_fed(fed: LocalFederation) -> LocalFederation:
    """Three members, servers and (trivial) nodes started."""
    fed.claim(["amstel", "dommel", "zuidas"], sync_always=False)
    fed.start_servers(timeout=BOUND)
    for member in ("amstel", "dommel", "zuidas"):
        fed.start_member_node(member, SLEEPER)
    return fed


# --- paths and state ---------------------------------------------------------------------------


def test_find_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_data_dir(None) == tmp_path / ".stekker"
    assert find_data_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_nothing_recorded(fed: LocalFederation) -> None:
    assert fed.load() is None
    assert not fed.is_running()
    assert fed.urls() == []
    with pytest.raises(FederationNotRunning):
        fed.require_urls()


def test_claim_records_state_and_guards_the_folder(
    fed: LocalFederation, sleeper: subprocess.Popen[bytes]
) -> None:
    state = fed.claim(["amstel", "dommel", "zuidas"], up_pid=sleeper.pid)
    assert fed.state_path.exists()
    loaded = state_of(fed)
    assert loaded == state
    assert loaded.up_pid == sleeper.pid
    assert fed.is_running()
    ports = [
        port
        for m in loaded.members.values()
        for port in (m.client_port, m.cluster_port, m.monitor_port)
    ]
    assert len(set(ports)) == 9
    amstel = loaded.members["amstel"]
    assert amstel.cluster_name == "stekker" and len(amstel.routes) == 2
    assert Path(amstel.store_dir) == fed.data_dir / "nats" / "amstel"
    assert fed.urls() == []  # nothing started yet

    with pytest.raises(AlreadyRunning):
        fed.claim(["amstel"])  # this test process is not the recorded `up`

    sleeper.kill()
    sleeper.wait()
    assert not fed.is_running()
    fed.claim(["solo"])  # a dead `up` no longer owns the folder
    solo = member_of(fed, "solo")
    assert solo.cluster_name is None and solo.cluster_port is None  # one server: standalone


def test_a_secure_claim_is_recorded_with_the_accounts_include(fed: LocalFederation) -> None:
    assert not fed.is_secure()
    fed.claim(["amstel", "dommel"], secure=True)
    assert fed.is_secure() and state_of(fed).secure
    spec = member_of(fed, "amstel").spec()
    assert spec.extra_config == 'include "../../nats-auth/nats-accounts.conf"'
    # Where the include points from `nats/<member>/server.conf`.
    assert (spec.config_path.parent / "../../nats-auth").resolve() == (
        fed.data_dir / "nats-auth").resolve()
    fed.claim(["amstel", "dommel"])  # the next plain `up` in the folder is open again
    assert not fed.is_secure() and member_of(fed, "amstel").spec().extra_config == ""


def test_recycled_pid_is_not_ours(fed: LocalFederation) -> None:
    state = fed.claim(["amstel"])
    assert fed.is_running()  # up_pid is this test process
    with fed.locked():
        state.up_create_time = (state.up_create_time or 0) - 1000  # "a different process"
        fed.record(state)
    assert not fed.is_running()
    # and stop_pid refuses to signal a process whose start time does not match
    assert not stop_pid(os.getpid(), 1.0)
    assert pid_alive(os.getpid())


def test_lock_excludes_other_holders(fed: LocalFederation) -> None:
    with fed.locked(), open(fed.lock_path, "a+b") as other:
        with pytest.raises(BlockingIOError):
            fed_lock = fcntl.LOCK_EX | fcntl.LOCK_NB
            fcntl.flock(other, fed_lock)
    with open(fed.lock_path, "a+b") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again


def test_torn_state_file_counts_as_none(fed: LocalFederation) -> None:
    fed.data_dir.mkdir(parents=True)
    fed.state_path.write_text("{not json")
    assert fed.load() is None
    assert not fed.is_running()


# --- processes ---------------------------------------------------------------------------------


def test_members_run_and_are_found_by_another_view(running_fed: LocalFederation) -> None:
    other = LocalFederation(running_fed.data_dir)  # what a second `stekker` command sees
    state = state_of(other)
    assert len(other.urls()) == 3
    for member in state.members.values():
        assert member.nats_alive() and member.node_alive()
        assert Path(member.node_log) == running_fed.data_dir / "logs" / f"{member.member}.node.log"
        assert member.node_argv == SLEEPER
        # detached: own session, so Ctrl-C on `stekker up` does not reach it
        for pid in (member.node_pid, member.nats_pid):
            assert pid is not None and os.getsid(pid) == pid


def test_stop_and_start_one_member(running_fed: LocalFederation) -> None:
    fed = running_fed
    before = member_of(fed, "dommel")
    fed.stop_member("dommel")
    assert gone(before.node_pid) and gone(before.nats_pid)
    after = member_of(fed, "dommel")
    assert after.nats_pid is None and after.node_pid is None
    urls = fed.urls()
    assert len(urls) == 2 and before.url not in urls
    assert all(member_of(fed, m).node_alive() for m in ("amstel", "zuidas"))

    fed.start_member("dommel")  # node argv as recorded
    again = member_of(fed, "dommel")
    assert again.nats_alive() and again.node_alive()
    assert again.nats_pid != before.nats_pid
    assert again.client_port == before.client_port  # same ports and store
    assert len(fed.urls()) == 3


def test_kill_member_takes_the_node_tree(fed: LocalFederation) -> None:
    fed.claim(["solo"], sync_always=False)
    fed.start_member("solo", NODE_WITH_HELPER, timeout=BOUND)
    procs = member_of(fed, "solo")
    node = psutil.Process(procs.node_pid)
    wait_for(lambda: node.children(), "the node's helper process")
    helper = node.children()[0].pid
    wait_for(lambda: "node up" in Path(procs.node_log).read_text(), "the node's log line")

    fed.stop_member("solo", kill=True)
    assert gone(procs.node_pid) and gone(helper) and gone(procs.nats_pid)
    assert fed.urls() == []


def test_stop_all_leaves_nothing(running_fed: LocalFederation) -> None:
    state = state_of(running_fed)
    pids = [p for m in state.members.values() for p in (m.nats_pid, m.node_pid)]
    running_fed.stop_all()
    assert all(gone(pid) for pid in pids)
    assert running_fed.urls() == []
    running_fed.release()
    assert state_of(running_fed).up_pid is None
    assert not running_fed.is_running()
