# The broker image: weir-broker and the weir CLI, run as a non-root user.
#   docker build -f docker/broker.Dockerfile -t weir/weir-broker:0.1.0 .
# The operator's StatefulSet runs `weir-broker --config /etc/weir/broker.toml` through
# /bin/sh (the broker id and address come from the pod's name).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weir-broker -p weir \
 && cp target/release/weir-broker target/release/weir /usr/local/bin/

FROM debian:bookworm-slim
RUN groupadd --gid 65532 weir \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin weir \
 && mkdir -p /var/lib/weir && chown weir:weir /var/lib/weir
COPY --from=build /usr/local/bin/weir-broker /usr/local/bin/weir /usr/local/bin/
USER 65532:65532
VOLUME /var/lib/weir
EXPOSE 9092 9093
ENTRYPOINT ["weir-broker"]
CMD ["--config", "/etc/weir/broker.toml"]
