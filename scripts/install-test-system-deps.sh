#!/usr/bin/env bash
# System packages the tests use: Debian's chromium renders the HTML report.
# Tests that need it skip with a reason where it can't be installed.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the report screenshot test will skip" >&2
else
  echo "note: chromium not installed (needs root + apt); the report screenshot test will skip" >&2
fi
exit 0
