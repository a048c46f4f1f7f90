"""Issue 11 figure: a burst of chat lines in the terminal interface, beside line mode.

Host 0 runs ``meshchat start --no-tui --host tui`` (the sender: it hosts, so no rate limit of
a host paces it); host 1 runs ``meshchat start`` in tmux (``WIDTH`` x ``HEIGHT``: the terminal
interface as a person sees it); host 2 runs ``meshchat start --no-tui`` (line mode: the raw
baseline). Both receivers join, then the sender gets ``--tui-lines`` chat lines on its stdin in
one write. From that moment (t0), the bench polls both: line mode's stdout for the last line,
the tmux pane (``capture-pane``, straight on tmux's socket) for the last line on the screen.
From when the pane shows the first line of the burst until the last, keys are typed one after
another (``send-keys``); the figure is the slowest one's echo: the time until tmux gets it from
the interface and puts it on its screen. That moment is read from a tmux control client
(``tmux -C``: tmux writes each piece of the pane's output to it as ``%output``, as it takes
it), not by polling ``capture-pane``: a capture is a process of its own, and during the burst
each one costs more than the echo being measured. The median of five keys typed on an idle
screen before the burst is the baseline, by the same method and by capture polling.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.lab import BenchError, Lab, Unavailable
from tests.net.helpers import Chat
from tests.net.netlab import meshchat_argv

ROOM = "tui"
WIDTH, HEIGHT = 110, 30
POLL_S = 0.002
KEYS = "QX"  # typed in turn: in neither the burst's lines nor the status bar


@dataclass(frozen=True, slots=True)
class TuiResult:
    lines: int
    tui_s: float  # t0 → the last line on the tmux screen
    linemode_s: float  # t0 → the last line on line mode's stdout
    sent_s: float  # t0 → the sender's own echo of its last line
    echo_ms: float  # the slowest of the keys typed during the burst → on the screen
    idle_echo_ms: float  # the median of five on an idle screen, by the same method
    echo_samples: int = 0
    idle_capture_ms: float = 0.0  # the same five, seen by polling capture-pane


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


_OCTAL = re.compile(rb"\\([0-7]{3})")


class _Control:
    """A tmux control client on the pane's session: types keys and sees when the interface
    writes them (``%output`` lines, which tmux sends as it reads the pane's output)."""

    def __init__(self, pane: _Pane) -> None:
        self.proc = subprocess.Popen(
            ["tmux", "-S", pane.socket, "-C", "attach-session", "-t", "b"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin: IO[bytes] = self.proc.stdin
        self._cond = threading.Condition()
        self._want: bytes | None = None
        self._seen_at: float | None = None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,),
                                        daemon=True)
        self._attached = threading.Event()
        self._typed = ""
        self._reader.start()
        if not self._attached.wait(10):
            raise BenchError("the tmux control client did not attach")
        self._command(f"refresh-client -C {WIDTH}x{HEIGHT}")  # keep the pane's size

    def _command(self, line: str) -> None:
        self._stdin.write(line.encode() + b"\n")
        self._stdin.flush()

    def _read(self, out: IO[bytes]) -> None:
        for raw in out:
            if raw.startswith(b"%session-changed"):
                self._attached.set()
            if not raw.startswith(b"%output "):
                continue
            data = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), raw.split(b" ", 2)[-1])
            with self._cond:
                if self._want is not None and self._seen_at is None and self._want in data:
                    self._seen_at = time.monotonic()
                    self._cond.notify_all()

    def echo_ms(self, timeout_s: float = 10.0) -> float:
        """Erase the key typed before and type the next of ``KEYS``; ms until the interface
        has written it to the terminal.

        The keys take turns: a redraw writes only the cells that changed, so the same key
        typed again right after its erase, both read before one redraw, would change none
        and never be seen."""
        key = KEYS[0] if self._typed != KEYS[0] else KEYS[1]
        with self._cond:
            self._want, self._seen_at = key.encode(), None
            started = time.monotonic()
            if self._typed:
                self._command("send-keys -t b BSpace")
            self._command(f"send-keys -t b -l {key}")
            self._typed = key
            self._cond.wait_for(lambda: self._seen_at is not None, timeout_s)
            seen, self._want = self._seen_at, None
        if seen is None:
            raise BenchError(f"the key {key!r} never came out of the interface")
        return (seen - started) * 1000

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self._command("detach-client")
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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
    control: _Control | None = None
    try:
        pane.wait("you are viewer", 15)
        pane.tmux("send-keys", "-t", "b", "-l", f"/join {ROOM}")
        pane.tmux("send-keys", "-t", "b", "Enter")
        pane.wait(f"joined {ROOM} ", 15)
        idle_capture = sorted(pane.echo_ms(k) for k in "abcde")[2]
        control = _Control(pane)
        idle = sorted(control.echo_ms() for _ in range(5))[2]

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
                echoes.append(control.echo_ms())
            else:
                time.sleep(POLL_S)
        for w in watchers:
            w.join(max(0.0, end - time.monotonic()))
        if tui_at is None or "plain" not in seen or "sender" not in seen:
            raise BenchError(f"the burst did not finish in 60 s (tui {tui_at}, {seen})")
        if not echoes:
            raise BenchError("the burst was on the screen too briefly to type during it")
        return TuiResult(lines, tui_at - t0, seen["plain"] - t0, seen["sender"] - t0,
                         max(echoes), idle, len(echoes), idle_capture)
    finally:
        if control is not None:
            control.close()
        pane.kill()
        for chat in (sender, plain):
            chat.kill()
