# The agent's container image: a static-enough release build on Debian, run as a non-root user on a
# distroless base (no shell, no package manager). Build from the repository root:
#
#   docker build -t clearml-k8s-agent:0.1.0 .
#
# `kubectl clearml install` uses `clearml-k8s-agent:<version>` by default; push the image to your
# registry and pass `--image registry.example.com/clearml-k8s-agent:0.1.0` instead.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The agent needs proto, core and agent; the other members only need to exist for the workspace.
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY core core
COPY agent agent
COPY kubectl-clearml/Cargo.toml kubectl-clearml/Cargo.toml
COPY tests/doubles/Cargo.toml tests/doubles/Cargo.toml
COPY tests/e2e/Cargo.toml tests/e2e/Cargo.toml
RUN mkdir -p kubectl-clearml/src tests/doubles/src tests/e2e/src \
 && echo 'fn main() {}' > kubectl-clearml/src/main.rs \
 && touch kubectl-clearml/src/lib.rs tests/doubles/src/lib.rs tests/e2e/src/lib.rs \
 && cargo build --release --locked -p clearml-agent --bin clearml-k8s-agent

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/clearml-k8s-agent /usr/local/bin/clearml-k8s-agent
# 65532 = nonroot in distroless; the manifests also set runAsNonRoot, a read-only root filesystem
# and drop every capability.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/clearml-k8s-agent"]
