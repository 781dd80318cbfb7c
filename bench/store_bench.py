"""Compare the SQLite and Redis stores side by side in one run, through the plan service.

Run with a throwaway Redis:

    .venv/bin/python scripts/backends.py run --only redis -- .venv/bin/python bench/store_bench.py

Prints operations per second for each store and the Redis/SQLite ratio, for a small plan
(1 linked service) and a large one (200). Numbers depend on the machine; the ratios are what
to compare between runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chalicelib.schema import DEFAULT_SCHEMA_PATH  # noqa: E402
from chalicelib.service import PlanService  # noqa: E402
from chalicelib.store.redis_store import RedisPlanStore  # noqa: E402
from chalicelib.store.sqlite_store import SqlitePlanStore  # noqa: E402
from tests.support.plans import plan_with_services  # noqa: E402


def measure(operation: Callable[[int], None], count: int) -> float:
    """Return operations per second of `operation(i)` for i in range(count)."""
    started = time.perf_counter()
    for index in range(count):
        operation(index)
    return count / (time.perf_counter() - started)


def run_store(service: PlanService, service_count: int, count: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    ids = [f"bench-{tag}-{index}" for index in range(count)]
    return {
        "create": measure(lambda i: service.create(plan_with_services(ids[i], service_count)), count),
        "get": measure(lambda i: service.get(ids[i]), count),
        "patch": measure(lambda i: service.patch(ids[i], {"planType": f"p{i}"}, None), count),
        "delete": measure(lambda i: service.delete(ids[i], None), count),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="plans per operation and size")
    arguments = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        sys.exit("REDIS_URL is not set; run this under scripts/backends.py (see the docstring).")

    with tempfile.TemporaryDirectory() as directory:
        stores = {
            "sqlite": SqlitePlanStore(os.path.join(directory, "bench.sqlite3")),
            "redis": RedisPlanStore(redis_url, prefix=f"bench-{uuid.uuid4().hex}:"),
        }
        print(f"{'services':>8} {'operation':>9} {'sqlite ops/s':>13} {'redis ops/s':>12} {'redis/sqlite':>13}")
        for service_count in (1, 200):
            count = arguments.count if service_count == 1 else max(arguments.count // 10, 10)
            results = {name: run_store(PlanService(store, DEFAULT_SCHEMA_PATH), service_count, count)
                       for name, store in stores.items()}
            for operation in ("create", "get", "patch", "delete"):
                sqlite_rate = results["sqlite"][operation]
                redis_rate = results["redis"][operation]
                print(f"{service_count:>8} {operation:>9} {sqlite_rate:>13.0f} {redis_rate:>12.0f} "
                      f"{redis_rate / sqlite_rate:>13.2f}")


if __name__ == "__main__":
    main()
