"""Issue 11 figure: a burst of chat lines in the terminal interface, beside line mode.

Host 0 runs ``meshchat start --no-tui --host tui`` (the sender: it hosts, so no rate limit of
a host paces it); host 1 runs ``meshchat start`` in tmux (``WIDTH`` x ``HEIGHT``: the terminal
interface as a person sees it); host 2 runs ``meshchat start --no-tui`` (line mode: the raw
baseline). Both receivers join, then the sender gets ``--tui-lines`` chat lines on its stdin in
one write. From that moment (t0), the bench polls both: line mode's stdout for the last line,
the tmux pane (``capture-pane``, straight on tmux's socket) for the last line on the screen.
From when the pane shows the first line of the burst until the last, keys are typed one after
another (``send-keys``); the figure is the slowest one's echo: the time until the input line
shows it. The median of five keys typed on an idle screen before the burst is the baseline of
that method (a capture costs a few ms of its own).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.lab import BenchError, Lab, Unavailable
from tests.net.helpers import Chat
from tests.net.netlab import meshchat_argv

ROOM = "tui"
WIDTH, HEIGHT = 110, 30
POLL_S = 0.002


@dataclass(frozen=True, slots=True)
class TuiResult:
    lines: int
    tui_s: float  # t0 → the last line on the tmux screen
    linemode_s: float  # t0 → the last line on line mode's stdout
    sent_s: float  # t0 → the sender's own echo of its last line
    echo_ms: float  # the slowest of the keys typed during the burst → on the screen
    idle_echo_ms: float  # the median of five on an idle screen
    echo_samples: int = 0


class _Pane:
    """A tmux session on a lab host, driven through its socket (no namespace hop per call)."""

    def __init__(self, lab: Lab, host_index: int, socket: Path, argv: list[str]) -> None:
        self.host = lab.hosts[host_index]
        self.socket = str(socket)
        self.host.run(["tmux", "-S", self.socket, "new-session", "-d", "-s", "b",
                       "-x", str(WIDTH), "-y", str(HEIGHT), " ".join(argv)])

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True,
                              text=True, check=False, timeout=10)
        if done.returncode != 0:
            raise BenchError(f"tmux {args[0]}: {done.stderr.strip()}")
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "b")

    def wait(self, text: str, timeout_s: float) -> float:
        """Poll until ``text`` is on the screen; when it was seen (monotonic)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if text in self.screen():
                return time.monotonic()
            time.sleep(POLL_S)
        raise BenchError(f"{text!r} never on the tmux screen; it shows:\n{self.screen()}")

    def input_line(self) -> str:
        rows = [r.rstrip() for r in self.tmux("capture-pane", "-p", "-t", "b").splitlines()]
        rows = [r for r in rows if r]
        return rows[-1] if rows else ""

    def echo_ms(self, key: str, timeout_s: float = 10.0) -> float:
        """Type ``key``; ms until the input line ends with it. Erases it again."""
        started = time.monotonic()
        self.tmux("send-keys", "-t", "b", "-l", key)
        end = started + timeout_s
        while time.monotonic() < end:
            if self.input_line().endswith(key):
                took = (time.monotonic() - started) * 1000
                self.tmux("send-keys", "-t", "b", "BSpace")
                return took
            time.sleep(POLL_S)
        raise BenchError(f"the key {key!r} never showed on the input line")

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True,
                       check=False)


def burst_text(i: int) -> str:
    return f"burst line {i:05d} of the tui benchmark, some words to fill it"


def tui_burst(lab: Lab, lines: int = 3000) -> TuiResult:
    if shutil.which("tmux") is None:
        raise Unavailable("tmux is not installed (make system-packages)")
    sender = Chat.start(lab.hosts[0], "sender", "--host", ROOM)
    sender.expect(rf"^\* hosting room {ROOM}$", 15)
    plain = Chat.start(lab.hosts[2], "plain")
    plain.send(f"/join {ROOM}")
    plain.expect(rf"^\* joined {ROOM} ", 15)
    pane = _Pane(lab, 1, lab.workdir / "tui-bench.tmux", meshchat_argv(
        "start", "--name", "viewer", "--interface", lab.hosts[1].ifname, "--fast-timings",
        "--discovery-timeout", "0", "--data-dir", str(lab.workdir / "tui-viewer")))
    try:
        pane.wait("you are viewer", 15)
        pane.tmux("send-keys", "-t", "b", "-l", f"/join {ROOM}")
        pane.tmux("send-keys", "-t", "b", "Enter")
        pane.wait(f"joined {ROOM} ", 15)
        idle = sorted(pane.echo_ms(k) for k in "abcde")[2]

        last = burst_text(lines)
        mark = plain.mark()
        seen: dict[str, float] = {}

        def watch(name: str, chat: Chat, since: int) -> None:
            end = time.monotonic() + 60
            while time.monotonic() < end:
                if any(last in line for line in chat.lines_since(since)):
                    seen[name] = time.monotonic()
                    return
                time.sleep(POLL_S)

        watchers = [threading.Thread(target=watch, args=("plain", plain, mark), daemon=True),
                    threading.Thread(target=watch, args=("sender", sender, sender.mark()),
                                     daemon=True)]
        for w in watchers:
            w.start()
        t0 = time.monotonic()
        sender.proc.send("\n".join(burst_text(i) for i in range(1, lines + 1)))
        tui_at: float | None = None
        echoes: list[float] = []
        end = t0 + 60
        while tui_at is None and time.monotonic() < end:
            screen = pane.screen()
            if last in screen:
                tui_at = time.monotonic()
            elif "burst line" in screen:  # the burst is coming in: type, again and again
                echoes.append(pane.echo_ms("z"))
            else:
                time.sleep(POLL_S)
        for w in watchers:
            w.join(max(0.0, end - time.monotonic()))
        if tui_at is None or "plain" not in seen or "sender" not in seen:
            raise BenchError(f"the burst did not finish in 60 s (tui {tui_at}, {seen})")
        if not echoes:
            raise BenchError("the burst was on the screen too briefly to type during it")
        return TuiResult(lines, tui_at - t0, seen["plain"] - t0, seen["sender"] - t0,
                         max(echoes), idle, len(echoes))
    finally:
        pane.kill()
        for chat in (sender, plain):
            chat.kill()
