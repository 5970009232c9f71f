#!/usr/bin/env bash
# scripts/systemd-check.sh - verify deploy/systemd/ledgerd.service with
# systemd-analyze: `verify` (syntax, known directives, system call groups;
# its warnings fail the check, since it exits 0 on an unknown key) and
# `security --offline` (the exposure score stays at or below 1.5, "OK").
# The unit is checked as written, except that its /usr/local/bin/ledgerd is
# pointed at a ledgerd built here: verify requires the binary to exist.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly unit=deploy/systemd/ledgerd.service
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

go build -o "$work/ledgerd" ./cmd/ledgerd
sed "s#/usr/local/bin/ledgerd#$work/ledgerd#g" "$unit" >"$work/ledgerd.service"

if ! out="$(systemd-analyze verify --man=no "$work/ledgerd.service" 2>&1)" || [[ -n "$out" ]]; then
	echo "systemd-analyze verify $unit:" >&2
	echo "${out//$work\//}" >&2
	exit 1
fi
if ! out="$(systemd-analyze security --offline=yes --threshold=15 "$work/ledgerd.service" 2>&1)"; then
	echo "$out" >&2
	echo "systemd-analyze security: $unit is more exposed than 1.5: restore its hardening" >&2
	exit 1
fi
echo "$unit: verified; $(grep -o 'Overall exposure level.*' <<<"$out")"
