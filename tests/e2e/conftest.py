"""Fixtures for end-to-end indexing tests: the API server plus, on the full stack, the queue runner.

`embedded` runs the API alone on SQLite, with the queue handlers called in process. `full` runs
the API on Redis with the outbox relayed to RabbitMQ, and `python -m queue_handlers` indexing
into OpenSearch, all on the servers that scripts/test.sh started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.jwt_factory import TokenFactory
from tests.support.server import REPO_ROOT, RunningServer, running_server

REQUEST_TIMEOUT_SECONDS = 30.0
CONVERGENCE_TIMEOUT_SECONDS = 120.0


def required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests with ./scripts/test.sh, which starts "
                    "Redis, RabbitMQ and OpenSearch.")
    return value


@dataclass
class Stack:
    """A running API (and runner, on the full stack) with a token to call it."""

    kind: str
    server: RunningServer
    token: str
    settings: dict[str, str]
    log_dir: Path
    runner: subprocess.Popen[bytes] | None = None
    runner_starts: int = 0
    session: requests.Session = field(default_factory=requests.Session)

    def call(self, method: str, path: str, document: Any = None,
             headers: dict[str, str] | None = None) -> requests.Response:
        return self.session.request(
            method, self.server.base_url + path, json=document, timeout=REQUEST_TIMEOUT_SECONDS,
            headers={"Authorization": f"Bearer {self.token}", **(headers or {})})

    def start_runner(self) -> None:
        env = {**os.environ, **self.settings, "RUNNER_BATCH_SIZE": "50"}
        self.runner_starts += 1
        log = open(self.log_dir / f"runner-{self.runner_starts}.log", "wb")
        self.runner = subprocess.Popen([sys.executable, "-m", "queue_handlers"], cwd=REPO_ROOT,
                                       env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def kill_runner(self) -> None:
        if self.runner is not None and self.runner.poll() is None:
            os.killpg(self.runner.pid, signal.SIGKILL)
            self.runner.wait(timeout=30)
        self.runner = None

    def wait_until(self, condition: Callable[[], bool], what: str,
                   timeout: float = CONVERGENCE_TIMEOUT_SECONDS) -> None:
        """Poll `condition` until it holds; fail with `what` and the log tails after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)
        logs = "\n".join(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:])
                         for path in sorted(self.log_dir.glob("*.log")))
        pytest.fail(f"timed out after {timeout:.0f} s waiting until {what}\n{logs}")

    def indexed_plan(self, plan_id: str) -> dict[str, Any] | None:
        response = self.call("GET", f"/v1/plan/es_plan/{plan_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


def fresh_token(tokens: TokenFactory) -> str:
    now = time.time()
    return tokens.token(iat=int(now), exp=int(now) + 3600)


@pytest.fixture(scope="session")
def e2e_tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenFactory:
    return TokenFactory.create(tmp_path_factory.mktemp("e2e-jwks"))


def base_settings(tokens: TokenFactory, directory: Path) -> dict[str, str]:
    return {
        "OAUTH_JWKS_URL": tokens.jwks_url,
        "OAUTH_ISSUERS": tokens.issuer,
        "OAUTH_CLIENT_ID": tokens.audience,
        "DEV_SIGNING_KEY_PATH": str(directory / "dev-key.pem"),
        "SQLITE_PATH": str(directory / "plans.sqlite3"),
    }


def full_stack_settings(tokens: TokenFactory, directory: Path) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {
        **base_settings(tokens, directory),
        "REDIS_URL": required_env("REDIS_URL"),
        "RABBITMQ_URL": required_env("RABBITMQ_URL"),
        "SEARCH_URL": required_env("SEARCH_URL"),
        "REDIS_KEY_PREFIX": f"e2e-{tag}:",
        "QUEUE_NAME": f"e2e-{tag}",
        "SEARCH_INDEX": f"e2e-{tag}",
    }


@pytest.fixture(scope="module", params=["embedded", "full"])
def stack(request: pytest.FixtureRequest, e2e_tokens: TokenFactory,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(request.param, e2e_tokens, tmp_path_factory)


@pytest.fixture(scope="module")
def full_stack(e2e_tokens: TokenFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack("full", e2e_tokens, tmp_path_factory)


def start_stack(kind: str, tokens: TokenFactory,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp(f"e2e-{kind}")
    settings = (full_stack_settings(tokens, directory) if kind == "full"
                else base_settings(tokens, directory))
    with running_server(settings, directory / "api.log") as server:
        stack = Stack(kind=kind, server=server, token=fresh_token(tokens), settings=settings,
                      log_dir=directory)
        if kind == "full":
            stack.start_runner()
        try:
            yield stack
        finally:
            stack.kill_runner()
