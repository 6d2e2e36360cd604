# The operator image, run as a non-root user.
#   docker build -f docker/operator.Dockerfile -t weir/weir-operator:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weir-operator --bin weir-operator \
 && cp target/release/weir-operator /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/weir-operator /usr/local/bin/
USER 65532:65532
EXPOSE 9100 8080
ENTRYPOINT ["weir-operator"]
