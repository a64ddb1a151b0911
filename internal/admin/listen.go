package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// UnixPrefix marks an address as a unix socket path: "unix:/run/x/admin.sock".
const UnixPrefix = "unix:"

// DefaultListen is where the service serves the admin API unless the config
// says otherwise (admin_listen), and where the CLI looks for it unless told
// (--admin). The systemd unit's RuntimeDirectory makes its directory.
const DefaultListen = UnixPrefix + "/run/lxd-gha-autoscaler/admin.sock"

// Listen opens the admin listener. addr is "unix:/path/to.sock" or
// "host:port". A unix socket is made mode 0660, so the socket's group may
// use the API, and a stale socket file left by a crash is removed first.
func Listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, UnixPrefix)
	if !ok {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("admin listen %q: want unix:/path or host:port: %w", addr, err)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("admin listen: %w", err)
		}
		return ln, nil
	}
	if path == "" {
		return nil, fmt.Errorf("admin listen %q: empty socket path", addr)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	return ln, nil
}

// ListenTLS opens a TCP admin listener, addr "host:port", that speaks TLS
// (1.2 at least) with cert and nothing else: Serve answers a plain HTTP
// request on it with 400 and nothing of the API.
func ListenTLS(addr string, cert tls.Certificate) (net.Listener, error) {
	if strings.HasPrefix(addr, UnixPrefix) {
		return nil, fmt.Errorf("admin listen %q: TLS is for a TCP address", addr)
	}
	ln, err := Listen(addr)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), nil
}

// removeStaleSocket removes a socket file nobody answers on. It refuses to
// remove anything else, or a socket another process still serves.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		// systemd's RuntimeDirectory normally makes the directory.
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return err
		}
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another process is serving on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// RequiresToken reports whether an admin listener on addr must have a
// token: a TCP address that other hosts may reach. Unix sockets are
// guarded by file permissions, and loopback by the host. An address it
// cannot read, an empty host (all interfaces) and a host name other than
// "localhost" count as reachable.
func RequiresToken(addr string) bool {
	if strings.HasPrefix(addr, UnixPrefix) {
		return false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip := net.ParseIP(strings.Split(host, "%")[0])
	return ip == nil || !ip.IsLoopback()
}

// Serve serves h on ln until ctx ends, then lets requests in flight finish
// for up to five seconds.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	done := make(chan error, 1)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin serve: %w", err)
	}
	return <-done
}
