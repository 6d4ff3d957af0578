#!/usr/bin/env bash
# Checks that the programs the tests start are installed, and installs the
# Debian packages that are missing. moto comes from the machine image (its
# Python registry is not reachable here).
set -euo pipefail

need_apt=()
pgbin=$(pg_config --bindir 2>/dev/null || true)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
[ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || need_apt+=(postgresql)
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v pgbench >/dev/null || need_apt+=(postgresql-contrib)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} from Debian" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "run as root or install: apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
fi
if ! command -v moto_server >/dev/null; then
  echo "moto_server (moto 5.x, pip install 'moto[server]') is not on PATH; the discovery and SSM tests need it" >&2
  exit 1
fi
