# csmh-proxy's container image: built in the Rust image, run in a minimal image without a shell, as a non-root user.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t csmh-proxy:latest .
#
# The proxy reads its configuration from /etc/csmh-proxy/proxy.toml (mount a ConfigMap there as a directory, not
# with subPath, so that flag flips reach the running proxy). The health check asks the proxy's own admin listener,
# so the configuration must set `[admin] address`.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin csmh-proxy

# The image of Tutor's `do` tasks (tutor-contrib-csmh-proxy), which Tutor runs as `sh -e -c SCRIPT`: the same
# binary beside busybox's shell. Build it with `--target tutor-jobs` and tag it as the proxy's tag plus `-jobs`.
FROM gcr.io/distroless/cc-debian12:debug-nonroot AS tutor-jobs
COPY --from=build /src/target/release/csmh-proxy /usr/local/bin/csmh-proxy
ENV CSMH_PROXY_CONFIG=/etc/csmh-proxy/proxy.toml
USER nonroot:nonroot

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/csmh-proxy /usr/local/bin/csmh-proxy
ENV CSMH_PROXY_CONFIG=/etc/csmh-proxy/proxy.toml
USER nonroot:nonroot
# MySQL clients, and the admin listener (/metrics, /livez, /readyz), as the example proxy.toml has them.
EXPOSE 6033 6080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/csmh-proxy", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/csmh-proxy"]
CMD ["serve"]
