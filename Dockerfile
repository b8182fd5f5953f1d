# syntax=docker/dockerfile:1
#
# The sluice binary in a minimal image: one image for every service
# (`sluice run --target ingest|enricher|dispatcher|inbound|watchdog`, `sluice
# crmsim`, and the operator commands). compose.yaml builds it.
#
#   docker build -t sluice:local --build-arg VERSION=$(git describe --always --dirty) .
#
# The binary is static (CGO_ENABLED=0; the SQLite driver is pure Go) and runs
# as the distroless "nonroot" user (uid 65532). cmd/sluice/internal/imagebuild
# runs this file's `go build` on the test machine and checks that the result
# is a static binary.

# ---- build -----------------------------------------------------------------
FROM golang:1.26 AS build
WORKDIR /src
# The Go workspace: go.work names every module folder, so the whole tree is
# the build context (.dockerignore keeps out .git, bin/, data/ and docs).
COPY . .
ARG VERSION=dev
# The module and build caches persist between builds (BuildKit cache mounts).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X sluice.dev/mesh/version.Commit=${VERSION}" -o /out/sluice ./cmd/sluice
# data_dir for the all-in-one `sluice run` (embedded JetStream, SQLite), owned
# by the runtime user.
RUN mkdir -p /out/data

# ---- run -------------------------------------------------------------------
# distroless/static: CA certificates, tzdata, /etc/passwd with nonroot; no
# shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice /sluice
COPY --from=build --chown=65532:65532 /out/data /data
ENV SLUICE_DATA_DIR=/data
WORKDIR /data
USER 65532:65532
# ingest HTTP, inbound webhooks, CRM simulator, ops (/metrics, /healthz,
# /readyz, status page). Each listens on 127.0.0.1 unless configured
# otherwise (compose.yaml sets 0.0.0.0).
EXPOSE 8080 8081 8099 9090
ENTRYPOINT ["/sluice"]
CMD ["run"]
