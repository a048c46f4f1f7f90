"""Self-tests of the network lab; none of them needs meshchat."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import LabFactory
from .netlab import (
    ExpectError,
    JsonProc,
    Lab,
    LabError,
    Proc,
    _list_namespaces,
    meshchat_argv,
    run_prefix,
)

MDNS_GROUP, MDNS_PORT = "224.0.0.251", 5353

MULTICAST_RECEIVER = f"""
import socket, struct, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("", {MDNS_PORT}))
group = struct.pack("4s4s", socket.inet_aton("{MDNS_GROUP}"), socket.inet_aton(sys.argv[1]))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
print("ready", flush=True)
data, (source, _) = sock.recvfrom(2048)
print("got", data.decode(), "from", source, flush=True)
"""

# No IP_MULTICAST_IF: the lab's route 224.0.0.0/4 dev eth0 must pick the interface.
MULTICAST_SENDER = f"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.sendto(sys.argv[1].encode(), ("{MDNS_GROUP}", {MDNS_PORT}))
"""

TCP_SERVER = """
import socket
server = socket.create_server(("", 7000))
print("ready", flush=True)
conn, _ = server.accept()
print("got", conn.recv(1024).decode(), flush=True)
"""

TCP_CLIENT = """
import socket, sys
socket.create_connection((sys.argv[1], 7000)).sendall(sys.argv[2].encode())
"""

ZEROCONF_REGISTER = """
import socket, sys
from zeroconf import ServiceInfo, Zeroconf
zc = Zeroconf()
info = ServiceInfo(
    "_netlab._tcp.local.", sys.argv[2] + "._netlab._tcp.local.",
    addresses=[socket.inet_aton(sys.argv[1])], port=9999, properties={"who": sys.argv[2]},
)
zc.register_service(info)
print("registered", flush=True)
sys.stdin.read()
zc.unregister_service(info)
zc.close()
"""

ZEROCONF_BROWSE = """
import sys
from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

class Listener(ServiceListener):
    def add_service(self, zc, type_, name):
        info = zc.get_service_info(type_, name, timeout=3000)
        print("found", name, *(info.parsed_addresses() if info else []), flush=True)
    def update_service(self, zc, type_, name):
        pass
    def remove_service(self, zc, type_, name):
        print("removed", name, flush=True)

zc = Zeroconf()
ServiceBrowser(zc, "_netlab._tcp.local.", Listener())
print("browsing", flush=True)
sys.stdin.read()
zc.close()
"""

ECHO = """
import sys
print("ready", flush=True)
for line in sys.stdin:
    line = line.rstrip("\\n")
    print("echo", line, flush=True)
    print("err", line, file=sys.stderr, flush=True)
print("bye", flush=True)
"""


JSON_ECHO = """
import json, sys
print(json.dumps({"ev": "ready"}), flush=True)
for line in sys.stdin:
    obj = json.loads(line)
    print("not json", flush=True)
    print(json.dumps({"ev": "reply", "id": obj["id"], "echo": obj}), flush=True)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_hosts_are_namespaces_with_eth0_lo_and_a_multicast_route(lab3: Lab) -> None:
    assert [h.ns for h in lab3.hosts] == [f"{lab3.prefix}h{i}" for i in range(3)]
    assert lab3.prefix.startswith(run_prefix())
    assert set(_list_namespaces()) >= {lab3.bridge_ns, *(h.ns for h in lab3.hosts)}
    for i, host in enumerate(lab3.hosts):
        assert host.addr.endswith(f".0.{i + 1}") and host.ifname == "eth0"
        addr = host.run("ip -o -4 addr show dev eth0").stdout
        assert f"inet {host.cidr} brd {host.addr.rsplit('.', 1)[0]}.255 " in addr  # Pyre needs brd
        assert "224.0.0.0/4 dev eth0" in host.run("ip route").stdout
        lo = host.run("ip -o link show dev lo").stdout
        assert "MULTICAST" in lo and "UP" in lo


def test_hosts_ping_each_other_over_the_bridge(lab3: Lab) -> None:
    h0, h1, h2 = lab3.hosts
    for source, target in ((h0, h1), (h1, h2), (h2, h0)):
        assert source.ping(target.addr) < 1.0


def test_mdns_multicast_crosses_the_bridge_and_is_captured(lab3: Lab) -> None:
    h0, h1, h2 = lab3.hosts
    receivers = [h.spawn_python(MULTICAST_RECEIVER, h.addr) for h in (h1, h2)]
    for receiver in receivers:
        receiver.expect("ready")
    with lab3.capture() as capture:
        h0.run([sys.executable, "-c", MULTICAST_SENDER, "netlab-multicast-hello"])
        for receiver in receivers:
            receiver.expect(rf"got netlab-multicast-hello from {h0.addr}$")
    assert capture.packets > 0
    assert capture.contains(b"netlab-multicast-hello")


def test_zeroconf_discovery_crosses_the_bridge(lab3: Lab) -> None:
    h0, h1, h2 = lab3.hosts
    browsers = [h.spawn_python(ZEROCONF_BROWSE) for h in (h1, h2)]
    for browser in browsers:
        browser.expect("browsing")
    started = time.monotonic()
    h0.spawn_python(ZEROCONF_REGISTER, h0.addr, "alpha").expect("registered", timeout=10)
    for browser in browsers:
        browser.expect(rf"found alpha\._netlab\._tcp\.local\. {h0.addr}$", timeout=10)
    print(f"zeroconf register + discover across the bridge: {time.monotonic() - started:.2f}s")


def test_capture_sees_a_known_payload_and_only_what_was_sent(lab3: Lab) -> None:
    h0, h1, _ = lab3.hosts
    server = h1.spawn_python(TCP_SERVER)
    server.expect("ready")
    with lab3.capture("tcp port 7000") as capture:
        h0.run([sys.executable, "-c", TCP_CLIENT, h1.addr, "netlab-known-payload"])
        server.expect("got netlab-known-payload")
    assert capture.packets >= 4  # handshake, data, ack at least
    assert capture.contains(b"netlab-known-payload")
    assert not capture.contains(b"netlab-never-sent")


def test_link_down_partitions_a_host_and_link_up_heals_it(lab3: Lab) -> None:
    h0, h1, h2 = lab3.hosts
    h0.link_down()
    with pytest.raises(LabError, match="cannot ping"):
        h0.ping(h1.addr, timeout=0.5)
    with pytest.raises(LabError, match="cannot ping"):
        h2.ping(h0.addr, timeout=0.5)
    assert h1.ping(h2.addr) < 1.0
    h0.link_up()
    assert h0.ping(h1.addr, timeout=5.0) < 5.0
    with lab3.partitioned(h2), pytest.raises(LabError):
        h1.ping(h2.addr, timeout=0.5)
    assert h1.ping(h2.addr, timeout=5.0) < 5.0


def test_expect_send_and_process_control(lab3: Lab) -> None:
    proc = lab3.hosts[0].spawn_python(ECHO)
    proc.expect("ready")
    proc.send("one")
    assert proc.expect(r"echo (\w+)").group(1) == "one"
    with pytest.raises(ExpectError) as failure:
        proc.expect("echo one", timeout=0.2)  # only lines after the cursor count
    assert "timed out" in str(failure.value)
    assert "| echo one" in str(failure.value) and "| err one" in str(failure.value)

    proc.send("two")
    proc.send("marker")
    proc.expect_no("secret", until="echo marker")
    proc.send("secret")
    proc.send("marker")
    with pytest.raises(ExpectError, match="saw: 'echo secret'"):
        proc.expect_no("secret", until="echo marker")

    proc.stop()
    proc.send("while-stopped")
    proc.expect_no("while-stopped", within=0.3)
    proc.cont()
    proc.expect("echo while-stopped")

    proc.close_stdin()
    proc.expect("bye")
    assert proc.wait() == 0
    with pytest.raises(ExpectError, match="stdout closed first"):
        proc.expect("anything", timeout=30)
    assert proc.lines[0] == "ready" and proc.err_lines[0] == "err one"

    victim = lab3.hosts[1].spawn_python(ECHO)
    victim.expect("ready")
    victim.kill()
    assert victim.wait() == -9


def test_json_proc_waits_takes_and_stop_procs_ends_a_batch(lab3: Lab, tmp_path: Path) -> None:
    h0, h1, _ = lab3.hosts
    log = tmp_path / "json.log"
    proc = h0.spawn_as(JsonProc, [sys.executable, "-c", JSON_ECHO], label="json", log_path=log)
    assert proc.label == "json"
    proc.wait_json({"ev": "ready"})
    for ident in (1, 2):
        proc.send_json({"id": ident, "nested": {"a": ident, "b": [ident]}})
    second = proc.wait_json({"id": 2, "echo": {"nested": {"a": 2}}}, take=True)
    assert second["echo"]["nested"]["b"] == [2]
    assert proc.wait_json(lambda o: o.get("ev") == "reply", take=True)["id"] == 1
    with pytest.raises(ExpectError, match="timed out"):
        proc.wait_json({"ev": "reply"}, take=True, timeout=0.2)  # both taken
    assert proc.wait_json({"id": 1}, since=1)["ev"] == "reply"  # without take: still there
    assert [o.get("id") for o in proc.untaken()] == [None]  # only "ready"
    assert "not json" in proc.lines and len(proc.objects) == 3

    other = h1.spawn_python(ECHO)
    other.expect("ready")
    other.send("logged")
    other.expect("echo logged")
    lab3.stop_procs([proc, other], grace=1.0)
    assert proc.returncode is not None and other.returncode is not None
    assert proc not in lab3.procs and other not in lab3.procs
    with pytest.raises(ExpectError, match="stdout closed first"):
        proc.wait_json({"ev": "never"}, timeout=5)
    stderr_logged = h0.spawn_as(Proc, [sys.executable, "-c", "import sys; print('to the log', "
                                       "file=sys.stderr)"], log_path=log)
    assert stderr_logged.wait() == 0
    stderr_logged.terminate()
    assert "to the log" in log.read_text()


def test_processes_see_their_own_host_environment(lab3: Lab, tmp_path: Path) -> None:
    script = tmp_path / "whoami.py"
    script.write_text(
        "import os, sys\n"
        "print(os.environ['HOME'], os.environ['MESHCHAT_LAB_HOST'], *sys.argv[1:])\n"
    )
    homes = set()
    for host in lab3.hosts:
        match = host.spawn_python(script, "x").expect(r"^(\S+) (h\d) x$")
        assert match.group(2) == host.name
        homes.add(match.group(1))
    assert len(homes) == 3
    assert meshchat_argv("start") == [sys.executable, "-m", "meshchat", "start"]


def test_two_labs_coexist(lab_factory: LabFactory) -> None:
    first, second = lab_factory(1), lab_factory(2)
    assert first.hosts[0].ns in _list_namespaces()
    assert second.hosts[0].ping(second.hosts[1].addr) < 1.0


def test_cleanup_leaves_nothing_even_when_the_body_raises(netlab_ready: None) -> None:
    stubborn: Proc | None = None
    orphan_pid = 0
    with pytest.raises(RuntimeError, match="boom"), Lab(2, kill_grace_s=0.3) as lab:
        stubborn = lab.hosts[0].spawn_python(
            "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\ntime.sleep(3600)\n"
        )
        stubborn.expect("ready")
        orphan_pid = int(lab.hosts[1].run("sleep 3600 >/dev/null 2>&1 & echo $!").stdout)
        raise RuntimeError("boom")
    assert stubborn is not None and stubborn.returncode == -9
    assert _wait_gone(orphan_pid), "a process started with host.run survived the lab"
    assert not [ns for ns in _list_namespaces() if ns.startswith(lab.prefix)]
    assert not lab.workdir.exists()


def _stale_namespace_with_a_process(stale: str) -> subprocess.Popen[bytes]:
    """``stale`` made, with a process running inside it. Another worker's lab, starting
    now, removes this dead run's namespace too: while ``ip netns add`` is still making it
    ("Bind ... failed"), or before ``ip netns exec`` entered it. Either way, make it again."""
    for _ in range(5):
        if subprocess.run(["ip", "netns", "add", stale], capture_output=True).returncode != 0:
            subprocess.run(["ip", "netns", "del", stale], capture_output=True, check=False)
            continue
        # ``ip netns exec`` enters the namespace and execs the command: the same pid.
        leftover = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "3600"])
        deadline = time.monotonic() + 5
        while leftover.poll() is None and time.monotonic() < deadline:
            pids = subprocess.run(["ip", "netns", "pids", stale], capture_output=True,
                                  text=True).stdout.split()
            if str(leftover.pid) in pids:
                return leftover
            time.sleep(0.01)  # a poll until it is inside, with a deadline
        leftover.kill()
        leftover.wait()
    raise AssertionError(f"cannot make the namespace {stale} with a process in it")


def test_namespaces_of_a_dead_run_are_removed_at_start(netlab_ready: None) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = f"ml{dead.pid}-0-h0"
    leftover = _stale_namespace_with_a_process(stale)
    try:
        with Lab(1):
            assert stale not in _list_namespaces()
        # (whichever lab removed it, ours or another worker's, killed what ran inside)
        assert leftover.wait(5) == -9
    finally:
        leftover.kill()
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, check=False)
    assert os.getpid() != dead.pid
