#!/usr/bin/env python3
"""Rebuild the search index from the plan store, or list and repair the differences between them.

Usage:
  python scripts/index_admin.py rebuild [--recreate] [--batch-size N]
  python scripts/index_admin.py diff [--repair]

The store and the index come from the environment like the API's: REDIS_URL or SQLITE_PATH for
the store, SEARCH_URL and SEARCH_INDEX for the index (without SEARCH_URL, the SQLite file
`<SQLITE_PATH>-search`). `diff` prints one tab-separated line per difference (kind, plan id,
detail) and a summary. Exit status: 0 when the index matches the store or `--repair` fixed every
difference, 1 when differences remain, 2 on an error.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from opensearchpy.exceptions import ImproperlyConfigured

from chalicelib.bootstrap import build_store
from chalicelib.config import ConfigurationError, load_settings
from chalicelib.schema import SchemaFileError
from chalicelib.search import operator
from chalicelib.search.documents import SearchIndexError
from chalicelib.search.factory import build_search_index

LOG = logging.getLogger("index_admin")

EXIT_OK = 0
EXIT_DIFFERENCES = 1
EXIT_ERROR = 2


def positive_int(text: str) -> int:
    """Parse a positive integer command-line value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="index_admin.py",
        description="Rebuild the search index from the plan store, or compare the two.",
    )
    parser.add_argument("--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    rebuild = commands.add_parser(
        "rebuild", help="write every stored plan into the index at its current version"
    )
    rebuild.add_argument(
        "--recreate",
        action="store_true",
        help="delete the index and its plan versions first, which also drops plans the store "
        "no longer has",
    )
    rebuild.add_argument(
        "--batch-size",
        type=positive_int,
        default=operator.DEFAULT_BATCH_SIZE,
        help="plans per indexing batch (default: %(default)s)",
    )

    diff = commands.add_parser(
        "diff", help="list plans that are missing, stale or orphaned in the index"
    )
    diff.add_argument(
        "--repair",
        action="store_true",
        help="write the store's state of missing and stale plans and remove "
        "orphaned ones, then compare again",
    )
    diff.add_argument(
        "--batch-size",
        type=positive_int,
        default=operator.DEFAULT_BATCH_SIZE,
        help="plans per store page and per indexing batch (default: %(default)s)",
    )
    return parser


def summarize(differences: list[operator.Difference]) -> str:
    counts = Counter(difference.kind for difference in differences)
    kinds = ", ".join(
        f"{counts[kind]} {kind}"
        for kind in (operator.MISSING, operator.STALE, operator.ORPHANED)
        if counts[kind]
    )
    return f"{len(differences)} difference(s): {kinds}"


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    # The index is built first, so that an invalid SEARCH_URL fails before a store file is created.
    index = build_search_index(settings)
    store = build_store(settings)
    index.ensure_index()

    if args.command == "rebuild":
        report = operator.rebuild(store, index, recreate=args.recreate, batch_size=args.batch_size)
        print(
            f"rebuild: indexed {report.plans} plan(s) with {report.objects} object(s) "
            f"in {report.batches} batch(es)"
        )
        return EXIT_OK

    differences = operator.diff(store, index, page_size=args.batch_size)
    for difference in differences:
        print(difference.line())
    if not differences:
        print("diff: the index matches the store")
        return EXIT_OK
    print(f"diff: {summarize(differences)}")
    if not args.repair:
        return EXIT_DIFFERENCES

    repaired = operator.repair(store, index, differences, batch_size=args.batch_size)
    print(
        f"repair: re-applied {len(repaired.reapplied)} plan(s), "
        f"removed {len(repaired.removed)} plan(s)"
    )
    remaining = operator.diff(store, index, page_size=args.batch_size)
    for difference in remaining:
        print(f"remaining\t{difference.line()}")
    if remaining:
        print(f"repair: {summarize(remaining)} remain")
        return EXIT_DIFFERENCES
    print("repair: the index matches the store")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="index_admin: %(levelname)s %(name)s %(message)s",
    )
    try:
        return run(args)
    except (
        SearchIndexError,
        ConfigurationError,
        SchemaFileError,
        ImproperlyConfigured,
        sqlite3.Error,
        OSError,
    ) as error:
        print(f"index_admin: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except Exception:
        # The store's client (Redis) raises its own errors; report them with their traceback.
        LOG.exception("index_admin: unexpected error")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
