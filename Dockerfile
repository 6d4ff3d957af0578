# The rdsproxy container image: the static release binary on distroless
# static, which brings the CA roots (/etc/ssl/certs/ca-certificates.crt, for
# the AWS APIs), tzdata and /etc/passwd with nonroot (65532); nothing else,
# no shell. It runs as 65532:65532, so Kubernetes' runAsNonRoot can verify it.
#
# The binary is not built here: goreleaser (dockers_v2) stages each
# platform's release binary in the build context as <os>/<arch>/rdsproxy,
# and `make image` stages this machine's the same way. release_test.go
# builds this image's layout offline and checks it.
#
# Pin the base by digest in your own builds (gcr.io/distroless/static-debian12:nonroot@sha256:...).
FROM gcr.io/distroless/static-debian12:nonroot

ARG TARGETPLATFORM
COPY ${TARGETPLATFORM}/rdsproxy /rdsproxy

USER 65532:65532
# 5480: clients (PostgreSQL and GET /v1/targets); 9480: /healthz, /readyz, /metrics.
EXPOSE 5480 9480
ENTRYPOINT ["/rdsproxy"]
