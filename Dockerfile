# One image recipe for every binary of the workspace:
#   docker build --build-arg SERVICE=persist-worker -t chat/persist-worker .
# The build stage compiles all six binaries at once and does not depend on SERVICE, so
# `make up` (which builds the six images) compiles the workspace once: BuildKit shares
# the stage between the images. Dependencies are compiled in their own layer (from the
# manifests only), so editing a service rebuilds just the workspace crates. The runtime
# image is distroless, non-root, with no shell: the healthcheck is the binary's own
# `healthcheck` subcommand. Every workspace member must appear in both lists below
# (checked by make test).

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
ENV BINARIES="-p auth-service -p persist-worker -p history-service -p nats-trace-bridge -p otlp-bridge -p chat-cli"

# 0. The patched dependencies Cargo.toml points at (patches/README.md).
RUN apt-get update && apt-get install -y --no-install-recommends patch && rm -rf /var/lib/apt/lists/*
COPY patches patches
COPY scripts/patch-crates.sh scripts/
RUN bash scripts/patch-crates.sh

# 1. Dependency layer: manifests plus empty sources.
COPY Cargo.toml Cargo.lock ./
COPY shared/telemetry/Cargo.toml shared/telemetry/
COPY shared/test-harness/Cargo.toml shared/test-harness/
COPY shared/chat-protocol/Cargo.toml shared/chat-protocol/
COPY shared/service-kit/Cargo.toml shared/service-kit/
COPY services/persist-worker/Cargo.toml services/persist-worker/
COPY services/history-service/Cargo.toml services/history-service/
COPY services/auth-service/Cargo.toml services/auth-service/
COPY services/chat-cli/Cargo.toml services/chat-cli/
COPY services/nats-trace-bridge/Cargo.toml services/nats-trace-bridge/
COPY services/otlp-bridge/Cargo.toml services/otlp-bridge/
COPY tests/Cargo.toml tests/
RUN for crate in shared/telemetry shared/test-harness shared/chat-protocol shared/service-kit \
        services/persist-worker services/history-service services/auth-service services/chat-cli \
        services/nats-trace-bridge services/otlp-bridge tests ; do \
      mkdir -p $crate/src && echo '' > $crate/src/lib.rs && echo 'fn main() {}' > $crate/src/main.rs; \
    done \
 && mkdir -p shared/telemetry/benches services/persist-worker/benches services/auth-service/benches \
        services/history-service/benches services/chat-cli/benches \
 && echo 'fn main() {}' > shared/telemetry/benches/per_message.rs \
 && echo 'fn main() {}' > services/history-service/benches/requests.rs \
 && echo 'fn main() {}' > services/persist-worker/benches/drain.rs \
 && echo 'fn main() {}' > services/persist-worker/benches/cluster.rs \
 && echo 'fn main() {}' > services/auth-service/benches/callout.rs \
 && echo 'fn main() {}' > services/chat-cli/benches/tui.rs \
 && cargo build --release --locked $BINARIES \
 && rm -rf shared/*/src shared/*/benches services/*/src services/*/benches tests/src

# 2. The workspace itself (migrations and permissions.json are embedded at compile time).
COPY shared shared
COPY services services
COPY tests tests
RUN find shared services tests -name '*.rs' -exec touch {} + \
 && cargo build --release --locked $BINARIES --bins \
 && mkdir /out \
 && cp target/release/auth-service target/release/persist-worker target/release/history-service \
       target/release/nats-trace-bridge target/release/otlp-bridge target/release/chat-cli /out/

FROM gcr.io/distroless/cc-debian12:nonroot
ARG SERVICE
COPY --from=build /out/${SERVICE} /usr/local/bin/service
USER nonroot
ENV LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/service"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=6 CMD ["/usr/local/bin/service", "healthcheck"]
