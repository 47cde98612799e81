# Shared by scripts/test and scripts/demo: install what is missing (Debian
# packages, the venv) and make sure a Docker engine runs. Source it from the
# repository root; it defines step() and stops a dockerd it started on EXIT.
# shellcheck shell=bash

step() { printf '==> %s\n' "$*"; }
mkdir -p .healer-run

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo)
fi

# --- a. system packages -------------------------------------------------------
APT_PACKAGES=(
    docker.io
    busybox-static
    prometheus
    prometheus-alertmanager
    prometheus-postgres-exporter
    prometheus-blackbox-exporter
    haproxy
    wrk
    python3-venv
    chromium
    chromium-driver
    openssl
)

is_installed() {
    local out
    out=$(dpkg -s "$1" 2>/dev/null) || return 1
    grep -qx 'Status: install ok installed' <<<"$out"
}

step "checking Debian packages"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    step "installing ${missing[*]}"
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# --- b. virtualenv --------------------------------------------------------------
STAMP=.venv/.healer-stamp
PIP_EXTRAS=${HEALER_PIP_EXTRAS:-test,bench}
want_stamp="$(sha256sum pyproject.toml | cut -d' ' -f1) $PIP_EXTRAS"
have_stamp=$(cat "$STAMP" 2>/dev/null || true)
if [[ -x .venv/bin/python && "$have_stamp" == "$want_stamp" ]]; then
    step "venv up to date (.venv)"
else
    step "installing the venv (.venv, pip install -e '.[$PIP_EXTRAS]')"
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    if ! .venv/bin/python -m pip install -q -e ".[$PIP_EXTRAS]" >.healer-run/pip.log 2>&1; then
        echo "pip install failed; last lines of .healer-run/pip.log:" >&2
        tail -n 40 .healer-run/pip.log >&2 || true
        exit 1
    fi
    printf '%s\n' "$want_stamp" >"$STAMP"
fi

# --- c. Docker engine -----------------------------------------------------------
DOCKERD_PID=

stop_dockerd() {
    [[ -n "$DOCKERD_PID" ]] || return 0
    step "stopping the dockerd we started (pid $DOCKERD_PID)"
    "${SUDO[@]}" kill "$DOCKERD_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 30; i++)); do
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        "${SUDO[@]}" kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    fi
    wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=
}

PG_ROOT=

stop_postgres() {
    [[ -n "$PG_ROOT" ]] || return 0
    step "stopping the private PostgreSQL ($PG_ROOT)"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -m fast -w stop \
        >/dev/null 2>&1 || true
    rm -rf "$PG_ROOT"
    PG_ROOT=
}

on_exit() {
    local rc=$?
    stop_postgres
    stop_dockerd
    exit "$rc"
}
trap on_exit EXIT

if docker info >/dev/null 2>&1; then
    step "docker engine is running"
else
    step "starting dockerd (log: .healer-run/dockerd.log)"
    # shellcheck disable=SC2086  # HEALER_DOCKERD_ARGS is a word list on purpose
    "${SUDO[@]}" dockerd ${HEALER_DOCKERD_ARGS:-} >.healer-run/dockerd.log 2>&1 &
    DOCKERD_PID=$!
    for ((i = 0; i < 60; i++)); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "dockerd did not come up within 60 s; last lines of .healer-run/dockerd.log:" >&2
        tail -n 40 .healer-run/dockerd.log >&2 || true
        exit 1
    fi
    step "dockerd is up (pid $DOCKERD_PID)"
fi


# --- d. PostgreSQL (only scripts that call ensure_postgres) ------------------------
# Tests take the server from HEALER_TEST_PG_DSN (default 127.0.0.1:5432, user
# postgres, trust auth). Where none answers, start a private one on a free
# loopback port, as the postgres OS user, and remove it on EXIT.
ensure_postgres() {
    local dsn=${HEALER_TEST_PG_DSN:-postgresql://postgres@127.0.0.1:5432/postgres}
    if .venv/bin/python - "$dsn" <<'PY' 2>/dev/null
import asyncio, sys
import asyncpg
async def main() -> None:
    conn = await asyncpg.connect(sys.argv[1], timeout=3)
    await conn.close()
asyncio.run(main())
PY
    then
        export HEALER_TEST_PG_DSN=$dsn
        step "PostgreSQL answers at ${dsn%%\?*}"
        return 0
    fi
    if [[ -n "${HEALER_TEST_PG_DSN:-}" ]]; then
        echo "HEALER_TEST_PG_DSN=$HEALER_TEST_PG_DSN does not answer" >&2
        exit 1
    fi
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z "$PG_BIN" ]]; then
        step "installing postgresql"
        "${SUDO[@]}" apt-get update -q
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    local port
    port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    PG_ROOT=$(mktemp -d /tmp/healer-pg.XXXXXX)
    chown postgres: "$PG_ROOT"
    step "starting a private PostgreSQL on 127.0.0.1:$port ($PG_ROOT)"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_ROOT/data" -A trust -U postgres \
        >.healer-run/initdb.log 2>&1
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -l "$PG_ROOT/log" -w \
        -o "-p $port -k $PG_ROOT -c listen_addresses=127.0.0.1 -c max_connections=200" start \
        >/dev/null
    export HEALER_TEST_PG_DSN="postgresql://postgres@127.0.0.1:$port/postgres"
}
