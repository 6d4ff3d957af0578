#!/usr/bin/env bash
# Checks that the programs make demo (and, with --drivers, make test) start
# are installed, and installs the Debian packages that are missing and,
# with --drivers, the driver tests' npm packages (e2e/drivers/node). moto
# comes from the machine image (its Python registry is not reachable here).
set -euo pipefail
cd "$(dirname "$0")/.."
drivers=false
[ "${1:-}" = --drivers ] && drivers=true

# python_has MODULE: python3 on PATH or the system's (where Debian's
# python3-* packages install) imports MODULE; the driver tests try both.
python_has() { python3 -c "import $1" 2>/dev/null || /usr/bin/python3 -c "import $1" 2>/dev/null; }

need_apt=()
pgbin=$(pg_config --bindir 2>/dev/null || true)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
[ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || need_apt+=(postgresql)
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v pgbench >/dev/null || need_apt+=(postgresql-contrib)
if $drivers; then # the drivers e2e's TestDrivers runs through rdsproxy connect
  python_has psycopg2 || need_apt+=(python3-psycopg2)
  python_has asyncpg || need_apt+=(python3-asyncpg)
  [ -f /usr/share/java/postgresql.jar ] || need_apt+=(libpostgresql-jdbc-java)
  command -v java >/dev/null || need_apt+=(default-jre-headless)
  command -v npm >/dev/null || need_apt+=(nodejs npm)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} from Debian" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "run as root or install: apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
fi
node=e2e/drivers/node
if $drivers && ! cmp -s "$node/package-lock.json" "$node/node_modules/.package-lock.json.installed"; then
  echo "installing node-postgres for the driver tests (npm ci in $node)" >&2
  npm ci --prefix "$node" --no-audit --no-fund --loglevel=error >&2
  cp "$node/package-lock.json" "$node/node_modules/.package-lock.json.installed"
fi
if ! command -v moto_server >/dev/null; then
  echo "moto_server (moto 5.x, pip install 'moto[server]') is not on PATH; make demo and the discovery and SSM tests need it" >&2
  exit 1
fi
