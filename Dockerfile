# Build: a static binary (modernc SQLite is pure Go, so no cgo).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/lxd-gha-autoscaler ./cmd/server

# Run: no shell, no package manager, a non-root user.
# Mounts: the config (/etc/lxd-gha-autoscaler/config.yaml), the secret files
# it names, the state dir (/var/lib/lxd-gha-autoscaler, writable), the admin
# socket's dir (/run/lxd-gha-autoscaler, writable: the image cannot create it),
# and the LXD socket's directory (read-only is enough; the container's user
# needs its group, e.g. --group-add) or the LXD TLS files.
# deployments/README.md has a docker run line.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/lxd-gha-autoscaler /usr/local/bin/lxd-gha-autoscaler
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/lxd-gha-autoscaler"]
CMD ["serve", "--config", "/etc/lxd-gha-autoscaler/config.yaml"]
