"""What the process benches share: signed events, child processes, a loopback load generator.

Not a bench itself. `bench/ingest.py`, `bench/delivery.py` and `bench/memory.py` start the bot as
a real child process (gunicorn or `python app.py`) against a FakeSlack and a FakeStripe served by
the bench process, and drive it with pre-signed Stripe webhooks over loopback.

The load generator is one asyncio loop in the bench process writing pre-built HTTP/1.1 requests
on keep-alive connections and reading the answers with a minimal parser (status line, headers,
``Content-Length`` body). It costs far less CPU per request than `requests` or `http.client`,
which matters on a 2-core machine where the generator competes with the server it measures; the
same generator drives the bot and its baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bot.sandbox import stripe_objects
from bot.sandbox.bot_env import (  # noqa: F401  (the benches import them from here)
    BOT_TOKEN,
    CHANNEL,
    SIGNING_SECRET,
    STRIPE_KEY,
    WEBHOOK_SECRET,
    fake_bot_env,
)

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
GUNICORN = str(VENV_BIN / "gunicorn")
CLIMATE_BOT = str(VENV_BIN / "climate-bot")

WEBHOOK_PATH = "/stripe/webhook"

# The bot's own settings, which a developer's shell must not leak into a bench run.
BOT_VARIABLES = (
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_KEY",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_CHANNEL",
    "DATABASE_PATH",
    "SLACK_API_URL",
    "STRIPE_API_BASE",
    "PORT",
    "BOT_LOCALE",
    "BOT_LOCALE_CHANNELS",
    "SLACK_ALLOWED_DECIDERS",
    "REMINDER_DAYS",
    "ROUTING_FILE",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "WEB_CONCURRENCY",
    "PROMETHEUS_MULTIPROC_DIR",
)


class BenchError(Exception):
    """Something failed that makes the figures meaningless (a refused event, a dead server)."""


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedEvent:
    """One `climate.order.created` webhook for a new order, as the exact bytes to send."""

    event_id: str
    order_id: str
    request: bytes  # a whole HTTP/1.1 request: request line, headers, body


def signed_order_events(
    count: int, *, tag: str, account_for: Callable[[int], str | None] | None = None
) -> list[SignedEvent]:
    """`count` signed `climate.order.created` events, each about a new order (so each posts a
    card), signed now with `WEBHOOK_SECRET`: send them within Stripe's 300 s tolerance.

    `tag` keeps ids distinct across the phases of one run; `account_for(i)` sets the Connect
    account of event `i` (a `ROUTING_FILE` can route accounts to channels).
    """
    now = int(time.time())
    events = []
    for i in range(count):
        order_id = f"climorder_bench{tag}{i:06d}"
        event_id = f"evt_bench{tag}{i:06d}"
        order = stripe_objects.order("confirmed", id=order_id, created=now)
        account = account_for(i) if account_for else None
        event = stripe_objects.event(
            "climate.order.created", order, id=event_id, created=now, account=account
        )
        body, headers = stripe_objects.webhook_request(event, WEBHOOK_SECRET, timestamp=now)
        events.append(SignedEvent(event_id, order_id, http_request(WEBHOOK_PATH, body, headers)))
    return events


def http_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A POST as raw HTTP/1.1 bytes; `Host` is fixed so one request fits any loopback port."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- child processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bot_environment(
    *,
    database: Path,
    slack_api_url: str,
    stripe_api_base: str,
    port: int,
    workdir: Path,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a bot child: this shell's, minus the bot's own variables, plus ours."""
    env = {k: v for k, v in os.environ.items() if k not in BOT_VARIABLES}
    env.update(
        {
            **fake_bot_env(database, slack_api_url, stripe_api_base),
            "PORT": str(port),
            "PROMETHEUS_MULTIPROC_DIR": str(_fresh_dir(workdir / f"metrics-{port}")),
            # gunicorn.conf.py calls mkdtemp() even when the variable above is set (the argument
            # of setdefault is evaluated first); keep that directory inside our workdir.
            "TMPDIR": str(_fresh_dir(workdir / f"tmp-{port}")),
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def _fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


class Children:
    """Child processes, each in its own process group, all killed on exit (even on Ctrl-C).

    Use as a context manager. SIGTERM to the bench becomes SystemExit, so `finally` blocks run.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def __enter__(self) -> Children:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # A second Ctrl-C while the children are being stopped must not leave any behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGINT, previous)

    def start(
        self, argv: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path
    ) -> subprocess.Popen[bytes]:
        """Start `argv` with stdout and stderr going to the file `log`."""
        out = open(log, "wb")  # noqa: SIM115 - closed in stop_all
        self._logs.append(out)
        proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: Ctrl-C reaches us, and we reach all of it
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after `grace`."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        # Workers of a gunicorn master may outlive it for a moment; the group goes in one go.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()
        for out in self._logs:
            out.close()
        self._logs.clear()


def _exit_on_sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)


def wait_until_serving(
    url: str, proc: subprocess.Popen[bytes], *, timeout: float = 30.0, log: Path | None = None
) -> None:
    """Poll `url` until it answers 200; raise BenchError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{url}: the server exited with {proc.returncode}{_tail(log)}")
        with contextlib.suppress(OSError), opener.open(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"{url}: not serving after {timeout:.0f} s{_tail(log)}")


def get_json(url: str, *, timeout: float = 10.0) -> Any:
    """GET `url` (never through a proxy) and parse its JSON answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return json.loads(response.read())


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n  last lines of its log:\n    " + "\n    ".join(text)


# -- /proc -------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (gunicorn's master and its workers)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        family += frontier
    return family


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time the processes have used so far (exited ones count as 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def connections_per_process(pids: Sequence[int], port: int) -> list[int]:
    """How many established TCP connections to 127.0.0.1:`port` each of `pids` holds (/proc)."""
    local = f"0100007F:{port:04X}"
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    held += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
        counts.append(held)
    return counts


def status_kib(pid: int, key: str) -> int:
    """A `/proc/PID/status` value in KiB (`VmRSS`, `VmHWM`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {key}")


def machine() -> str:
    """nproc, CPU model and Python version, for the first line of every report."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}, commit {commit()}"


def commit() -> str:
    """The checked-out commit, read from .git without running git ("unknown" outside a clone).

    The working tree may hold changes on top of it."""
    git = REPO / ".git"
    with contextlib.suppress(OSError, IndexError):
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()[:12]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    return "unknown"


# -- the load generator ------------------------------------------------------------------------


@dataclass
class Sample:
    """One request: when it was written (wall clock), how long the answer took, its status."""

    sent_at: float
    latency: float  # seconds, perf_counter
    status: int  # 0: the connection failed


@dataclass
class LoadResult:
    """What a `drive()` run measured; samples are in request order (None: never sent)."""

    samples: list[Sample | None]
    wall: float  # seconds from the first request written to the last answer read
    generator_cpu: float  # CPU seconds the bench process used meanwhile (generator + fakes)
    timed_out: bool = False
    failures: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[Sample]:
        return [s for s in self.samples if s is not None]

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.done if s.status == 200]

    @property
    def errors(self) -> int:
        return len(self.samples) - len(self.ok)

    @property
    def throughput(self) -> float:
        return len(self.ok) / self.wall if self.wall > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return percentile([s.latency * 1000 for s in self.ok], q)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n q / 100), at least 1
    return ordered[int(min(rank, len(ordered))) - 1]


def drive(
    port: int,
    requests: Sequence[bytes],
    *,
    concurrency: int,
    rate: float | None = None,
    time_limit: float = 120.0,
    on_connected: Callable[[], None] | None = None,
) -> LoadResult:
    """Send every request to 127.0.0.1:`port` over `concurrency` keep-alive connections.

    Closed loop (each connection sends its next request when the last is answered) unless
    `rate` is given: then request i is written no earlier than i/rate seconds after the start
    (open loop, as far as `concurrency` connections allow). Bounded by `time_limit`: requests
    not sent by then stay None and the result says `timed_out`. `on_connected` is called once
    the connections are open, before the clock starts.
    """
    cpu_before = time.process_time()
    result = asyncio.run(_drive(port, list(requests), concurrency, rate, time_limit, on_connected))
    result.generator_cpu = time.process_time() - cpu_before
    return result


async def _drive(
    port: int,
    requests: list[bytes],
    concurrency: int,
    rate: float | None,
    time_limit: float,
    on_connected: Callable[[], None] | None,
) -> LoadResult:
    samples: list[Sample | None] = [None] * len(requests)
    failures: list[str] = []
    next_index = 0
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    if on_connected is not None:
        on_connected()
    started = time.perf_counter()
    deadline = started + time_limit
    finished = started

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal next_index, finished
        try:
            while next_index < len(requests) and time.perf_counter() < deadline:
                i = next_index
                next_index += 1
                if rate:
                    delay = started + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                sent_at, t0 = time.time(), time.perf_counter()
                try:
                    writer.write(requests[i])
                    status, keep_alive = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    status, keep_alive = 0, False
                    if len(failures) < 5:
                        failures.append(f"request {i}: {exc!r}")
                t1 = time.perf_counter()
                samples[i] = Sample(sent_at, t1 - t0, status)
                finished = max(finished, t1)
                if not keep_alive:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    tasks = [asyncio.ensure_future(connection(r, w)) for r, w in connections]
    # The per-request check bounds the sending; this bounds an answer that never comes.
    done, pending = await asyncio.wait(tasks, timeout=time_limit + 30)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None and len(failures) < 5:
            failures.append(repr(task.exception()))
    timed_out = any(s is None for s in samples) or bool(pending)
    return LoadResult(samples, finished - started, 0.0, timed_out, failures)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response; return its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ValueError(f"answer without Content-Length: {lines[0]}")
    await reader.readexactly(int(headers["content-length"]))
    return status, headers.get("connection", "").lower() != "close"


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """`with timer() as elapsed:` … `elapsed()` seconds since the block started."""
    started = time.perf_counter()
    yield lambda: time.perf_counter() - started


# -- the bot as `python app.py` ----------------------------------------------------------------


def add_bench_channels(slack: Any, count: int) -> list[str]:
    """Create `count` channels the bot is a member of in the fake Slack; return their ids."""
    channels = [f"C0BENCH{j:04d}" for j in range(count)]
    for j, channel in enumerate(channels):
        slack.add_channel(channel, f"bench-{j:04d}")
    return channels


def account_for_channel(j: int) -> str:
    return f"acct_bench{j:04d}"


def write_routing_file(path: Path, channels: Sequence[str]) -> Path:
    """A ROUTING_FILE sending Connect account `account_for_channel(j)` to `channels[j]`.

    The bot posts at most one message per second per channel (Slack's limit); spreading events
    over channels lets a bench deliver more than that without measuring the pacing queue.
    """
    routes = [
        f'[[route]]\naccounts = ["{account_for_channel(j)}"]\nchannel = "{channel}"\n'
        for j, channel in enumerate(channels)
    ]
    path.write_text("\n".join(routes), encoding="utf-8")
    return path


def start_app_py(
    children: Children,
    *,
    workdir: Path,
    name: str,
    slack_api_url: str,
    stripe_api_base: str,
    routing_file: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start `python app.py` (web server, delivery worker and scheduler in one process) on a
    free port with a fresh database; return the process, its port and its log file."""
    port = free_port()
    extra = {"ROUTING_FILE": str(routing_file)} if routing_file else {}
    env = bot_environment(
        database=workdir / f"{name}.db",
        slack_api_url=slack_api_url,
        stripe_api_base=stripe_api_base,
        port=port,
        workdir=workdir,
        extra=extra,
    )
    log = workdir / f"{name}.log"
    proc = children.start([PYTHON, "app.py"], env=env, cwd=REPO, log=log)
    wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc, log=log)
    return proc, port, log


def wait_for_drain(
    port: int, proc: subprocess.Popen[bytes], *, timeout: float, log: Path | None = None
) -> tuple[bool, dict[str, int]]:
    """Poll /healthz until the outbox has no pending row; return (drained, outbox counts)."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the bot exited with {proc.returncode}{_tail(log)}")
        counts = get_json(f"http://127.0.0.1:{port}/healthz")["outbox"]
        if not counts.get("pending"):
            return True, counts
        time.sleep(0.5)
    return False, counts


def open_files(pid: int, containing: str = "") -> int:
    """How many file descriptors `pid` has open (only those whose target contains `containing`)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed between listing and reading
            if containing in os.readlink(f"/proc/{pid}/fd/{fd}"):
                count += 1
    return count
