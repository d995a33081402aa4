# Bifrost's container image: one static binary on an empty base.
#
#   make image                       # docker or podman, whichever works here
#   docker run -p 1883:1883 -v bifrost-data:/data bifrost:latest
#
# The binary is built without cgo (Pebble and Dragonboat need none), so the
# runtime stage is `scratch`: no shell, no libc, nothing but the binary, its
# data directory and the user it runs as. See docs/deploy.md.

# GO_IMAGE is the builder: any image with Go 1.26 and /bin/sh
# (deploy/builder-from-host.sh makes one from this machine's toolchain where
# no registry is reachable).
ARG GO_IMAGE=golang:1.26-bookworm

FROM ${GO_IMAGE} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The same command line as `make static` (which checks the result is static).
RUN go build -trimpath -ldflags='-s -w' -o /out/bifrost ./cmd/bifrost
# The data directory, owned by the user the image runs as (scratch has no
# mkdir or chown of its own).
RUN mkdir -p /out/data

FROM scratch
COPY --from=build /out/bifrost /bifrost
COPY --from=build --chown=65532:65532 /out/data /data
# A numeric user: scratch has no /etc/passwd. 65532 is distroless's nonroot.
USER 65532:65532
WORKDIR /data
VOLUME /data
# BIFROST_<FLAG> variables set any flag (docs/deploy.md); a flag a subcommand
# lacks is ignored. Metrics and /healthz are reachable from outside; the
# MQTT listeners bind all interfaces by default; a cluster's gossip, Raft and
# gRPC addresses are set per container (deploy/compose.yaml).
ENV BIFROST_DATA=/data \
    BIFROST_HTTP=0.0.0.0:8091
# MQTT TCP, TLS, WebSocket, secure WebSocket; gossip (TCP and UDP; a
# frontend's default 7956), Raft,
# gRPC (a store's; a frontend's is 7958); admin HTTP (metrics, healthz);
# the HTTP API (--api) where the build has it.
EXPOSE 1883 8883 8083 8084 7946/tcp 7946/udp 7956/tcp 7956/udp 7947 7948 7958 8091 8090
ENTRYPOINT ["/bifrost"]
CMD ["standalone"]
