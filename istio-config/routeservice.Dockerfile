# syntax=docker/dockerfile:1
# The RouteService image (ghcr.io/sandbox-router/routeservice:<version>),
# built from the repository root:
#
#   docker build -f istio-config/routeservice.Dockerfile \
#     -t ghcr.io/sandbox-router/routeservice:0.1.0 .
#
# (istio-config/routeservice.Dockerfile.dockerignore keeps target/, .venv/
# and the like out of the build context.)

# ---- build: the release binary, with the locked dependencies
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p routeservice \
 && install -D -m 0755 target/release/routeservice /out/routeservice

# ---- run: glibc, CA certificates, no shell, non-root (uid/gid 65532)
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/routeservice /usr/local/bin/routeservice
USER 65532:65532
EXPOSE 8080
# The data directory is a volume (the Deployment mounts a PVC there; the
# root file system can stay read-only).
VOLUME ["/var/lib/routeservice"]
ENTRYPOINT ["/usr/local/bin/routeservice"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/routeservice"]
