#!/usr/bin/env bash
# Makes a builder image for the Dockerfile (GO_IMAGE) from this machine's Go
# toolchain, for hosts that reach the Go module proxy but no container
# registry: GOROOT, a static busybox for RUN's /bin/sh, and the CA
# certificates, imported as localhost/bifrost-go-builder:host.
#   deploy/builder-from-host.sh podman
#   make image GO_IMAGE=localhost/bifrost-go-builder:host
set -euo pipefail
engine=${1:?usage: builder-from-host.sh docker|podman}
goroot=$(go env GOROOT)
busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ! file -L "$busybox" | grep -q 'statically linked'; then
	echo "builder-from-host: needs a static busybox (apt-get install -y busybox-static)" >&2
	exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/usr/local" "$root/etc/ssl/certs" "$root/tmp" "$root/go"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for cmd in sh mkdir cp ls cat; do ln -s busybox "$root/bin/$cmd"; done
cp -a "$goroot" "$root/usr/local/go"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
tar -C "$root" -c . | "$engine" import \
	--change 'ENV PATH=/usr/local/go/bin:/bin GOPATH=/go GOCACHE=/tmp/go-cache GOTOOLCHAIN=local' \
	- localhost/bifrost-go-builder:host
