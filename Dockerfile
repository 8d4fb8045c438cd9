# syntax=docker/dockerfile:1
#
# vault-csi-provider container image: one static (musl) binary and the CA
# bundle on an empty base. No shell, no package manager, nothing to patch.
#
#   docker build -t vault-csi-provider:0.1.0 .                      # non-root (uid 65532)
#   docker build --target helm -t vault-csi-provider:0.1.0-helm .   # vault-helm / openbao-helm drop-in (uid 0)
#
# Size target: under 20 MB uncompressed, under 8 MB compressed (the binary is
# most of it; the CA bundle is ~0.2 MB). Why two targets: docs/install.md,
# "Security context".

# The workspace's rust-version (kube-rs needs 1.89).
ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-alpine AS build
# musl-dev + gcc: `ring` compiles C and assembly; the alpine toolchain links
# statically by default (target x86_64/aarch64-unknown-linux-musl).
RUN apk add --no-cache musl-dev gcc ca-certificates
WORKDIR /src
# The whole workspace's manifests and sources (cargo reads every member);
# only the provider package is built, so the test bed compiles nothing.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY testbed ./testbed
COPY src ./src
RUN cargo build --locked --release -p vault-csi-provider --bin vault-csi-provider \
 && cp target/release/vault-csi-provider /vault-csi-provider \
 && /vault-csi-provider --version

FROM scratch AS common
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /vault-csi-provider /bin/vault-csi-provider
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# Same path as the incumbent image, so charts that pass only `args` work
# (vault-helm and openbao-helm set no `command`: the ENTRYPOINT must be the
# binary).
ENTRYPOINT ["/bin/vault-csi-provider"]

# For vault-helm's and openbao-helm's csi.image: neither sets runAsUser, and
# the socket directory (root-owned hostPath) needs uid 0, as with the
# incumbent images; vault-helm's Agent socket needs it too (openbao-helm's is
# reachable through its runAsGroup: 1000).
FROM common AS helm
USER 0:0

# Default: non-root. deploy/base overrides runAsUser to 0 (with every
# capability dropped) because the socket directory requires it; the
# non-root component runs this user as is.
FROM common AS runtime
USER 65532:65532
