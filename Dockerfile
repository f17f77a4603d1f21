# Multi-stage build of ingest-emulator. The image runs the server as a non-root user with its
# store, generated development CA and admin key on the /data volume.
#
#   docker build -t ingest-emulator .
#   docker run --rm -p 8443:8443 -v ingest-data:/data ingest-emulator
#   # your own certificate: -v $PWD/tls:/tls:ro -e INGEST_TLS_CERT=/tls/cert.pem -e INGEST_TLS_KEY=/tls/key.pem
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY fixtures ./fixtures
COPY wsdl ./wsdl
COPY examples ./examples
RUN cargo build --release --locked --bin ingest-emulator

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data ingest \
    && mkdir -p /data && chown ingest /data
COPY --from=build /src/target/release/ingest-emulator /usr/local/bin/ingest-emulator
USER ingest
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8443
# Same defaults as `ingest-emulator serve`, but listening on every interface of the container
# so that a published port reaches it. The CA to trust is /data/certs/ca.pem.
ENV INGEST_LISTEN=0.0.0.0:8443 \
    INGEST_DATA=/data/data \
    INGEST_CERTS=/data/certs \
    INGEST_URL=https://127.0.0.1:8443
# `health` asks /healthz on the container's own address, INGEST_URL (503 when the store
# cannot take writes; the certificate is not checked on a loopback address). With
# INGEST_NO_TLS=1, set INGEST_URL=http://127.0.0.1:8443 too.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["ingest-emulator", "health"]
ENTRYPOINT ["ingest-emulator"]
CMD ["serve"]
