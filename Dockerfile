# syntax=docker/dockerfile:1
# Roster: both backends in one image; SQLite by default, PostgreSQL by DATABASE_URL.

FROM rust:1.95-bookworm AS builder
WORKDIR /build

# Dependencies first: this layer is rebuilt only when the manifests change.
COPY Cargo.toml Cargo.lock build.rs ./
# SQLite's build options (.cargo/config.toml): the dependency layer compiles SQLite.
COPY .cargo ./.cargo
RUN mkdir src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/store.rs \
    && cargo build --release --locked --features postgres \
    && rm -rf src

COPY src ./src
COPY migrations ./migrations
COPY openapi ./openapi
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --features postgres \
    && mkdir -p /data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /build/target/release/roster /usr/local/bin/roster
COPY --from=builder --chown=65532:65532 /data /data
ENV BIND_ADDR=0.0.0.0:8000 \
    DATABASE_URL=sqlite:///data/roster.db \
    LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8000
USER nonroot
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/roster", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/roster"]
CMD ["serve"]
