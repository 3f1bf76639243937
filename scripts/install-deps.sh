#!/usr/bin/env bash
# Install the system packages the full test tier needs, on Debian 12 as root.
#
#   PostgreSQL, MariaDB   real database origins (tests start their own servers
#                         from temporary data directories on free ports)
#   Chromium + driver     dashboard browser tests
#   nginx, wrk            benchmark comparison and load generation
#   php-cli, php-curl     the PHP (Magento) examples of docs/private-media.md and docs/webhooks.md
#   systemd               systemd-analyze verify for conf/mediaedge.service
#   prometheus            promtool and a real Prometheus scraping an edge (conf/prometheus-alerts.yml,
#                         conf/grafana-dashboard.json; tests/test_monitoring.py)
#
# Idempotent: packages already installed are skipped, and `apt-get update` runs
# at most once, only when something is missing. System services are never
# started: a policy-rc.d that denies every start is in place while apt runs
# (Debian's invoke-rc.d and deb-systemd-invoke both honour it), so nothing
# claims ports 80, 3306 or 5432 behind the tests' backs.
set -euo pipefail

PACKAGES=(postgresql mariadb-server chromium chromium-driver nginx-light wrk php-cli php-curl systemd prometheus)

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs Debian packages)"
command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "needs a Debian-like system with apt-get and dpkg"

installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }

missing=()
for pkg in "${PACKAGES[@]}"; do
  if installed "$pkg"; then
    log "$pkg already installed"
  elif [ "$pkg" = nginx-light ] && { installed nginx || installed nginx-core || installed nginx-full; }; then
    log "nginx already installed"
  else
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# installed by mediaedge scripts/install-deps.sh while apt runs\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
  fi
  log "apt-get update"
  apt-get update -q
  # nginx-light is Debian 12's small nginx; later releases fold it into nginx.
  for i in "${!missing[@]}"; do
    if [ "${missing[$i]}" = nginx-light ] && ! apt-cache show nginx-light >/dev/null 2>&1; then
      missing[$i]=nginx
    fi
  done
  log "installing ${missing[*]}"
  apt-get install -y -q "${missing[@]}"
fi

# Debian keeps the PostgreSQL server binaries off PATH, one directory per major
# version; bench/dbservers.py looks there (or in $MEDIAEDGE_PG_BIN).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || die "PostgreSQL installed but no /usr/lib/postgresql/*/bin/initdb"
if [ -n "${GITHUB_PATH:-}" ]; then echo "$pg_bin" >>"$GITHUB_PATH"; fi
log "PostgreSQL binaries: $pg_bin (export MEDIAEDGE_PG_BIN=$pg_bin to pin another)"

for tool in mariadbd mariadb-install-db chromium chromedriver nginx wrk prometheus promtool; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || die "$tool not found after installing"
done
log "ok"
