# Sluice gateway image: multi-stage, non-root, read-only root filesystem (the Deployment in
# deploy/ sets readOnlyRootFilesystem; nothing here writes outside /tmp).
#   docker build -t sluice .
FROM rust:1-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sluice-gateway --bin sluice \
 && install -D -m 0755 target/release/sluice /out/sluice

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
USER 65532:65532
EXPOSE 9797
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run", "--config", "/etc/sluice/sluice.yaml"]
