# The Switchboard image, for anyone who can pull public images: cargo
# builds the binary in the official Rust image, and it runs on distroless
# (glibc and libgcc, no shell, non-root). The stripped binary is about
# 13 MB; built on the local base instead, the whole image is 16.6 MB.
#
#   docker build -t switchboard .
#   docker run --rm -p 127.0.0.1:8000:8000 switchboard      # switchboard dev
#
# Machines without a registry (this repository's CI) build the same
# runtime stage on a base they make themselves: deploy/local-images.sh and
# deploy/image/Dockerfile.local. Keep the two runtime stages identical but
# for their FROM and the source of the binary (tests/compose.rs checks).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Debug info out (symbols stay, so backtraces still name functions), for a
# small image; deploy/local-images.sh does the same.
RUN cargo build --release --locked -p switchboard \
    && mkdir -p /out/data \
    && objcopy --strip-debug target/release/switchboard /out/switchboard

# ---- runtime ----
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/switchboard /usr/local/bin/switchboard
# A broker's data directory (SWITCHBOARD_DATA_DIR), the user's own: a named
# volume mounted here starts with this owner.
COPY --from=build --chown=65532:65532 /out/data /var/lib/switchboard
# distroless' "nonroot" user.
USER 65532:65532
# Gateway clients (WebSocket, server API, /metrics), broker gRPC, broker
# /metrics /healthz /readyz, gossip.
EXPOSE 8000 7000 9000 7946/udp
# `switchboard health` GETs /healthz on the port the role binds, found in
# SWITCHBOARD_HTTP (node) or SWITCHBOARD_LISTEN (gateway, dev).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/switchboard", "health"]
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["dev", "--listen", "0.0.0.0:8000"]
