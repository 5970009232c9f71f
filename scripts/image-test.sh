#!/usr/bin/env bash
# scripts/image-test.sh - what `make image-test` runs: build ledgerd's image
# under a throwaway name, test it with deploy/image's Go test (its config
# through podman image inspect; its ledgerd run with chroot from the
# mounted image: version, and serve over a throwaway PostgreSQL answering a
# Reserve), then unmount and remove it, pass or fail.
#
# Containers cannot run on every machine (crun refuses hosts with cgroups in
# hybrid mode), so the test runs the image's entrypoint from its mounted
# root instead: the same files, user and read-only root, without the
# container runtime. Mounting an image needs root.
#
# VERSION, COMMIT and BUILD_DATE are what the Makefile stamps; the test
# checks that the image's binary and labels carry them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "$(id -u)" -ne 0 ]]; then
	echo "image-test: needs root (podman image mount, chroot); run it as root, as CI does" >&2
	exit 1
fi
: "${VERSION:?set by make image-test}" "${BUILD_DATE:?set by make image-test}"
COMMIT="${COMMIT:-}"

name="localhost/ledgerd-image-test:$$"
root=""
cleanup() {
	# A test that died may leave the image's ledgerd running (chroot's
	# change of user clears the signal that would end it with its parent):
	# end the processes whose root is the mounted image, by their PIDs.
	if [[ -n "$root" ]]; then
		local proc
		for proc in /proc/[0-9]*; do
			if [[ "$(readlink "$proc/root" 2>/dev/null)" == "$root" ]]; then
				kill -9 "${proc#/proc/}" 2>/dev/null || true
			fi
		done
	fi
	podman image unmount "$name" >/dev/null 2>&1 || true
	podman rmi --force "$name" >/dev/null 2>&1 || true
}
trap cleanup EXIT

start=$SECONDS
make --no-print-directory image IMAGE="$name" VERSION="$VERSION" COMMIT="$COMMIT" BUILD_DATE="$BUILD_DATE"
root="$(podman image mount "$name")"
LEDGER_TEST_IMAGE="$name" LEDGER_TEST_IMAGE_ROOT="$root" LEDGER_TEST_IMAGE_VERSION="$VERSION" \
	LEDGER_TEST_IMAGE_COMMIT="$COMMIT" LEDGER_TEST_IMAGE_BUILD_DATE="$BUILD_DATE" \
	go test -count=1 -v -run '^TestImage$' ./deploy/image/
echo "image-test: $((SECONDS - start))s" >&2
