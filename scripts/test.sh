#!/usr/bin/env bash
# Run the test suite against throwaway Redis, RabbitMQ and OpenSearch servers.
#
# Usage: scripts/test.sh [pytest arguments]   (default: -q tests)
#
# Installs what a fresh Debian 12 machine lacks (redis-server and rabbitmq-server through apt,
# the Python packages into .venv), then runs pytest under scripts/backends.py, which starts the
# servers on free 127.0.0.1 ports and stops them afterwards. Exits with pytest's status; a run
# that collects no tests exits 5, which counts as a failure.
set -euo pipefail

cd "$(dirname "$0")/.."

# Debian installs the RabbitMQ and Erlang programs into sbin directories.
case ":$PATH:" in
  *:/usr/sbin:*) ;;
  *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;;
esac

install_packages() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: $* not found; install with: sudo apt-get install $*" >&2
    exit 1
  fi
  echo "test.sh: installing $* with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # The packages try to start their system services. A denying policy-rc.d or a missing init
  # system is fine, because scripts/backends.py starts servers of its own.
  apt-get install -y -q "$@"
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
if [ "${#missing[@]}" -gt 0 ]; then
  install_packages "${missing[@]}"
fi

# Debian's python3 creates virtual environments only with the python3-venv package.
if [ ! -x .venv/bin/python ]; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    install_packages python3-venv
  fi
  echo "test.sh: creating .venv" >&2
  python3 -m venv .venv
  rm -f .venv/.requirements.sha256
fi

# pip runs only when a requirements file changed since the last successful install.
stamp=.venv/.requirements.sha256
wanted="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
  echo "test.sh: installing Python packages from requirements-dev.txt" >&2
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$wanted" >"$stamp"
fi

if [ "$#" -eq 0 ]; then
  set -- -q tests
fi

status=0
.venv/bin/python scripts/backends.py run -- .venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests (exit status 5); check the paths and -k/-m filters" >&2
fi
exit "$status"
