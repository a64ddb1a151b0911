# Build: a static binary (modernc SQLite is pure Go, so no cgo).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/lxd-gha-autoscaler ./cmd/server

# Run: no shell, no package manager, a non-root user.
# Mounts: the config (/etc/lxd-gha-autoscaler/config.yaml), the secret files
# it names, the state dir (/var/lib/lxd-gha-autoscaler, writable), and the
# LXD unix socket (the container's user needs access to it, e.g. with
# --group-add of the socket's group) or the LXD TLS files.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/lxd-gha-autoscaler /usr/local/bin/lxd-gha-autoscaler
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/lxd-gha-autoscaler"]
CMD ["serve", "--config", "/etc/lxd-gha-autoscaler/config.yaml"]
