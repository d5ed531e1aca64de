#!/usr/bin/env bash
# System tools the test suite needs, from Debian, installed only when missing; then their versions.
#   prometheus (brings promtool): tests/test_prometheus_live.py starts its own server on a free port,
#   tests/test_observability_deploy.py runs promtool on deploy/prometheus/.
#   redis-server: tests/test_redis.py starts its own on a free port (never the machine's 6379).
#   the shell linter (package shellcheck): tests/test_deploy_vllm.py lints deploy/vllm/start.sh.
#   systemd-analyze (package systemd): tests/test_deploy_systemd.py verifies deploy/systemd/*.service
#   (`systemd-analyze verify` needs no running systemd).
# Starts nothing. Idempotent: when everything is there it only prints versions.
set -euo pipefail

# command -> Debian package that provides it
declare -A PACKAGES=([prometheus]=prometheus [promtool]=prometheus [redis-server]=redis-server
                    [shellcheck]=shellcheck [systemd-analyze]=systemd)

missing=()
for cmd in "${!PACKAGES[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        pkg=${PACKAGES[$cmd]}
        [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi
    apt_get() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
    echo "tools.sh: installing ${missing[*]}" >&2
    # Debian's prometheus package would start its service (port 9090) on install: a policy-rc.d
    # that says 101 stops that. Docker images usually have one; otherwise add it for the install only.
    POLICY=/usr/sbin/policy-rc.d
    if [[ ! -e $POLICY ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
        "${SUDO[@]}" chmod 755 "$POLICY"
        trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
    fi
    # The package lists may be stale or absent on a fresh machine: update only when a first try fails.
    if ! apt_get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
        apt_get update -q >/dev/null
        apt_get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

redis-server --version 2>&1 | sed -n 1p
prometheus --version 2>&1 | sed -n 1p
promtool --version 2>&1 | sed -n 1p
shellcheck --version 2>&1 | sed -n 2p
systemd-analyze --version 2>&1 | sed -n 1p
