# syntax=docker/dockerfile:1
#
# rocketmq-webhook container image.
#
#   docker build -t rocketmq-webhook .
#   docker run --rm -e ROCKETMQ_NAMESRV_ADDR=... -e ROCKETMQ_CONSUMER_GROUP=... \
#       -e ROCKETMQ_TOPIC=... -e ROCKETMQ_WEBHOOK_URL=... -p 9090:9090 rocketmq-webhook
#
# Stage 1 builds the release binary with the toolchain pinned in rust-toolchain.toml (1.95.0)
# and the exact dependency versions of Cargo.lock. Stage 2 is distroless: glibc, CA
# certificates and nothing else (no shell, no package manager), running as uid 65532.
# Both stages are Debian 12 (bookworm), so the binary links against the glibc it runs with.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG RUST_VERSION
WORKDIR /src
# Manifests first, so the dependency download is cached until Cargo.lock changes.
COPY rust-toolchain.toml Cargo.toml Cargo.lock ./
# The toolchain file asks for rustfmt and clippy; the image's toolchain already is 1.95.0, so
# pin it explicitly instead of letting rustup download components a release build never uses.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never
# A stub target lets `cargo fetch` resolve the manifest before the sources are copied.
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo fetch --locked \
    && rm -rf src
COPY src ./src
# The built-in profiles are compiled into the binary (include_str!).
COPY config ./config
RUN cargo build --release --locked --bin rocketmq-webhook \
    && install -D -m 0755 target/release/rocketmq-webhook /out/rocketmq-webhook

FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rocketmq-webhook" \
      org.opencontainers.image.description="A RocketMQ push-consumer sidecar that delivers messages to an HTTP endpoint" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /out/rocketmq-webhook /usr/local/bin/rocketmq-webhook

# Admin server: /metrics, /healthz, /readyz, /status. admin.listen defaults to 0.0.0.0:9090.
# No ROCKETMQ_* defaults are baked in with ENV: the environment wins over a config file, so an
# image default would silently override the file's value.
EXPOSE 9090

# Distroless "nonroot" is uid/gid 65532 with HOME=/home/nonroot (the default local offset
# store of BROADCASTING subscriptions lives under it).
USER 65532:65532
WORKDIR /home/nonroot

# No shell tools in the image: the binary probes its own admin server, on ROCKETMQ_ADMIN_LISTEN
# when set, else on admin.listen of the file in ROCKETMQ_CONFIG, else on 127.0.0.1:9090.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/rocketmq-webhook", "healthcheck"]

# SIGTERM drains (shutdown.grace_period, 30s by default); give `docker stop` longer than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/rocketmq-webhook"]
CMD ["run"]
