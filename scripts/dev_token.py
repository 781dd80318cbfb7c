"""Print a bearer token signed by the development key, for calling the `dev` stage locally.

Usage: TOKEN=$(python scripts/dev_token.py) && curl -H "Authorization: Bearer $TOKEN" ...
Only the token is printed to stdout, and messages go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_KEY_FILE = ".dev/dev-signing-key.pem"
DEFAULT_AUDIENCE = "plan-api-dev"


def default_key_file() -> Path:
    """Return $DEV_SIGNING_KEY_PATH or the default key file, relative to the repository root."""
    return REPO_ROOT / os.environ.get("DEV_SIGNING_KEY_PATH", DEFAULT_KEY_FILE)


def positive_int(text: str) -> int:
    """Parse a positive integer command-line value."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line. Defaults are read from the environment at call time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--key-file",
        type=Path,
        default=default_key_file(),
        help="PEM file of the development key, created if missing (default: $DEV_SIGNING_KEY_PATH, "
        f"else {DEFAULT_KEY_FILE}, resolved against the repository root)",
    )
    parser.add_argument(
        "--audience",
        default=os.environ.get("OAUTH_CLIENT_ID", DEFAULT_AUDIENCE),
        help=f"aud claim (default: $OAUTH_CLIENT_ID, else {DEFAULT_AUDIENCE})",
    )
    parser.add_argument(
        "--ttl",
        type=positive_int,
        default=3600,
        help="seconds until the token expires (default: 3600)",
    )
    parser.add_argument("--subject", default="developer", help="sub claim (default: developer)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print one development token and return the exit status."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    arguments = parse_arguments(argv)

    # The script runs from any directory, so chalicelib is imported from the repository root.
    sys.path.insert(0, str(REPO_ROOT))
    from chalicelib.dev_keys import load_or_create_dev_key, mint_dev_token

    try:
        key = load_or_create_dev_key(str(arguments.key_file))
    except (OSError, ValueError) as exc:
        print(f"dev_token: failed to load the development key: {exc}", file=sys.stderr)
        return 1

    token = mint_dev_token(
        key, arguments.audience, subject=arguments.subject, ttl_seconds=arguments.ttl
    )
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
