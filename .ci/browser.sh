#!/usr/bin/env bash
# Debian's chromium and chromium-driver for the console's browser tests (selenium drives them;
# nothing downloads a browser at run time).
#
#   bash .ci/browser.sh install   # apt-get install them if either is missing (root); idempotent
#   bash .ci/browser.sh check     # exit 0 when both are there, printing their versions
set -Eeuo pipefail

log() { printf '[browser.sh] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

have_both() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

cmd_check() {
    have_both || die "chromium or chromedriver is missing (apt-get install chromium chromium-driver)"
    log "$(chromium --version 2>/dev/null | head -n1); $(chromedriver --version 2>/dev/null | head -n1)"
}

cmd_install() {
    if have_both; then
        log "chromium and chromium-driver found; nothing to install"
        cmd_check
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "chromium or chromium-driver is missing; install them (Debian: apt-get install chromium chromium-driver)"
    command -v apt-get >/dev/null 2>&1 || die "chromium is missing and there is no apt-get to install it"
    export DEBIAN_FRONTEND=noninteractive
    log "apt-get update"
    apt-get update -q -o Acquire::Retries=3 >&2
    log "apt-get install chromium chromium-driver"
    apt-get install -y -q --no-install-recommends -o Acquire::Retries=3 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        chromium chromium-driver >&2
    cmd_check
}

case "${1:-check}" in
install) cmd_install ;;
check) cmd_check ;;
*) die "usage: $0 install|check" ;;
esac
