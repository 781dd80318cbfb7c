"""Start the API with `scripts/serve.sh` (`chalice local`) on a free loopback port, for HTTP tests.

The server runs in its own process group, so stopping it signals the shell script and the
`chalice` process it runs together.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVE_SCRIPT = REPO_ROOT / "scripts" / "serve.sh"

STARTUP_TIMEOUT_SECONDS = 30.0
HEALTH_POLL_INTERVAL_SECONDS = 0.1
HEALTH_REQUEST_TIMEOUT_SECONDS = 2.0
STOP_TIMEOUT_SECONDS = 10.0
LOG_TAIL_LINES = 40

# Settings the API reads from its environment. They are removed from the inherited environment
# so that a developer's shell cannot point a test server at another database or key set.
API_SETTING_NAMES = (
    "APP_STAGE", "REDIS_URL", "REDIS_KEY_PREFIX", "RABBITMQ_URL", "SEARCH_URL", "SQLITE_PATH",
    "PLAN_SCHEMA_PATH", "QUEUE_NAME", "SEARCH_INDEX", "OAUTH_JWKS_URL", "OAUTH_ISSUERS",
    "OAUTH_CLIENT_ID", "DEV_TOKENS", "DEV_SIGNING_KEY_PATH", "PYTHON_ENV",
    "REDIS_DEV_HOST", "REDIS_DEV_PORT", "REDIS_PROD_HOST", "REDIS_PROD_PORT",
    "RABBITMQ_DEV_HOST", "RABBITMQ_PROD_HOST", "DEV_ELASTIC_HOST", "PROD_ELASTIC_HOST",
    "DEV_OAUTH_CLIENT_ID", "PROD_OAUTH_CLIENT_ID", "OUTBOX_RELAY", "PORT", "HOST", "STAGE",
)


class ServerStartError(RuntimeError):
    """The API server exited, or `GET /health` did not return the expected status in time."""


@dataclass(frozen=True)
class RunningServer:
    """A started API server: its base URL, process and log file."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last `lines` lines of the server log, or a note when it cannot be read."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(server log {log_path} cannot be read: {error})"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_server(
    settings: Mapping[str, str],
    log_path: Path,
    *,
    stage: str = "dev",
    ready_status: int = 200,
    startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
) -> Iterator[RunningServer]:
    """Run `scripts/serve.sh` with `settings` and yield it once it is ready.

    The server is ready when `GET /health` returns `ready_status`: 200 normally, 503 for a test
    of a server whose backend is down. `settings` replaces every API setting of the inherited
    environment. The server's stdout and stderr go to `log_path`. Raises ServerStartError, with
    the log's tail, when the server exits or is not ready after `startup_timeout` seconds.
    """
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name not in API_SETTING_NAMES}
    env.update(settings)
    env.update({"HOST": "127.0.0.1", "PORT": str(port), "STAGE": stage})
    base_url = f"http://127.0.0.1:{port}"

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(SERVE_SCRIPT)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    logger.info("API server starting", extra={"pid": process.pid, "port": port, "stage": stage})
    try:
        _wait_until_ready(process, base_url, log_path, ready_status, startup_timeout)
        yield RunningServer(base_url=base_url, process=process, log_path=log_path)
    finally:
        _stop(process)


def _wait_until_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path,
                      ready_status: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_outcome = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(
                f"The API server exited with status {process.returncode} during startup. "
                f"Last lines of {log_path}:\n{log_tail(log_path)}")
        try:
            response = requests.get(f"{base_url}/health", timeout=HEALTH_REQUEST_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            last_outcome = f"{type(error).__name__}"
        else:
            if response.status_code == ready_status:
                return
            last_outcome = f"HTTP {response.status_code}: {response.text[:300]}"
        time.sleep(HEALTH_POLL_INTERVAL_SECONDS)
    raise ServerStartError(
        f"GET {base_url}/health did not return {ready_status} within {timeout} s (last outcome: "
        f"{last_outcome}). Last lines of {log_path}:\n{log_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group: SIGTERM first, SIGKILL if it outlives the timeout."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("API server ignored SIGTERM, killing it", extra={"pid": process.pid})
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
    logger.info("API server stopped", extra={"pid": process.pid, "status": process.returncode})
