#!/usr/bin/env bash
# Serve the API with `chalice local`: the README's run command.
# Creates .venv and installs requirements.txt on first use. With no REDIS_URL,
# RABBITMQ_URL or SEARCH_URL set, everything runs embedded on SQLite.
# Settings: PORT (default 8000), HOST (default 127.0.0.1), STAGE (dev or prod, default dev).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/chalice ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -r requirements.txt
fi

exec .venv/bin/chalice local --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" --stage "${STAGE:-dev}" "$@"
