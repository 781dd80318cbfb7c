"""Measure the time from an acknowledged write to searchable, on both stacks in one run.

Run with throwaway servers:

    .venv/bin/python scripts/backends.py run -- .venv/bin/python bench/index_latency.py

For each stack, the script starts the API with `scripts/serve.sh` (`chalice local`; on the full
stack also `python -m queue_handlers`), creates one plan, then sends PATCHes one at a time.
After each 200 it polls `GET /v1/plan/es_plan/{id}` every 5 ms until the new value shows, and
records the time from the PATCH's response to the first poll that sees it. Each request opens
a new connection, so chalice local's keep-alive delay does not count. Prints the median, the
95th percentile and the maximum per stack, and the full/embedded ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.jwt_factory import TokenFactory  # noqa: E402
from tests.support.plans import plan_with_services  # noqa: E402
from tests.support.server import REPO_ROOT, running_server  # noqa: E402

POLL_INTERVAL_SECONDS = 0.005
WRITE_DEADLINE_SECONDS = 30.0


def measure_stack(kind: str, writes: int, tokens: TokenFactory, directory: Path) -> list[float]:
    settings = {
        "OAUTH_JWKS_URL": tokens.jwks_url, "OAUTH_ISSUERS": tokens.issuer,
        "OAUTH_CLIENT_ID": tokens.audience, "SQLITE_PATH": str(directory / f"{kind}.sqlite3"),
        "DEV_SIGNING_KEY_PATH": str(directory / "dev-key.pem"), "LOG_LEVEL": "WARNING",
    }
    if kind == "full":
        tag = uuid.uuid4().hex[:8]
        settings.update({
            "REDIS_URL": os.environ["REDIS_URL"], "RABBITMQ_URL": os.environ["RABBITMQ_URL"],
            "SEARCH_URL": os.environ["SEARCH_URL"], "REDIS_KEY_PREFIX": f"bench-{tag}:",
            "QUEUE_NAME": f"bench-{tag}", "SEARCH_INDEX": f"bench-{tag}",
        })
    now = time.time()
    headers = {"Authorization": "Bearer " + tokens.token(iat=int(now), exp=int(now) + 3600),
               "Connection": "close"}
    runner = None
    with running_server(settings, directory / f"{kind}-api.log") as server:
        if kind == "full":
            runner = subprocess.Popen([sys.executable, "-m", "queue_handlers"], cwd=REPO_ROOT,
                                      env={**os.environ, **settings}, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            return run_writes(server.base_url, headers, writes)
        finally:
            if runner is not None:
                os.killpg(runner.pid, signal.SIGTERM)
                runner.wait(timeout=30)


def run_writes(base_url: str, headers: dict[str, str], writes: int) -> list[float]:
    plan = plan_with_services("latency-" + uuid.uuid4().hex[:8], 2)
    plan_id = plan["objectId"]
    response = requests.post(f"{base_url}/v1/plan", json=plan, headers=headers, timeout=30)
    response.raise_for_status()
    latencies = []
    for index in range(writes):
        value = f"write-{index}"
        response = requests.patch(f"{base_url}/v1/plan/{plan_id}", json={"planType": value},
                                  headers=headers, timeout=30)
        response.raise_for_status()
        acknowledged = time.perf_counter()
        deadline = acknowledged + WRITE_DEADLINE_SECONDS
        while True:
            indexed = requests.get(f"{base_url}/v1/plan/es_plan/{plan_id}", headers=headers,
                                   timeout=30)
            if indexed.status_code == 200 and indexed.json().get("planType") == value:
                latencies.append(time.perf_counter() - acknowledged)
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"write {index} was not searchable after {WRITE_DEADLINE_SECONDS} s")
            time.sleep(POLL_INTERVAL_SECONDS)
    return latencies


def describe(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    percentile_95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return statistics.median(ordered) * 1000, percentile_95 * 1000, ordered[-1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300, help="PATCHes measured per stack")
    arguments = parser.parse_args()
    for name in ("REDIS_URL", "RABBITMQ_URL", "SEARCH_URL"):
        if not os.environ.get(name):
            sys.exit(f"{name} is not set; run this under scripts/backends.py (see the docstring).")

    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        tokens = TokenFactory.create(directory)
        results = {kind: describe(measure_stack(kind, arguments.writes, tokens, directory))
                   for kind in ("embedded", "full")}
    print(f"{arguments.writes} writes per stack; milliseconds from the PATCH's 200 to searchable")
    print(f"{'stack':>9} {'median':>8} {'p95':>8} {'max':>8}")
    for kind, (median, percentile_95, maximum) in results.items():
        print(f"{kind:>9} {median:>8.1f} {percentile_95:>8.1f} {maximum:>8.1f}")
    print(f"full/embedded median ratio: {results['full'][0] / results['embedded'][0]:.2f}")


if __name__ == "__main__":
    main()
