#!/usr/bin/env bash
# Serve the API with `chalice local`: the README's run command.
# Creates .venv and installs requirements.txt on first use and whenever it changes. With no
# REDIS_URL, RABBITMQ_URL or SEARCH_URL set, everything runs embedded on SQLite.
# Settings: PORT (default 8000), HOST (default 127.0.0.1), STAGE (dev or prod, default dev),
# RELOAD=1 to restart on code changes. Extra arguments go to `chalice local`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.serve-requirements.sha256
wanted="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ ! -x .venv/bin/chalice ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
  echo "serve.sh: installing Python packages from requirements.txt" >&2
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$wanted" >"$stamp"
fi

# Auto-reload is off by default: it watches the whole project folder, so the embedded
# database files under data/ would restart the server after every write.
reload=(--no-autoreload)
if [ "${RELOAD:-0}" = "1" ]; then
  reload=()
fi

exec .venv/bin/chalice local --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" \
  --stage "${STAGE:-dev}" "${reload[@]}" "$@"
