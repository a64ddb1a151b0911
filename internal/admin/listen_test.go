package admin_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin/admintest"
)

func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func TestUnixSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "admin.sock") // the directory is made
	ln, err := admin.Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want socket 0660", fi.Mode())
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- admin.Serve(ctx, ln, newHandler(admintest.New())) }()

	// While served, a second Listen must not steal the socket.
	if _, err := admin.Listen("unix:" + sock); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second Listen on a live socket: %v", err)
	}

	resp, err := unixClient(sock).Get("http://admin/api/status")
	if err != nil {
		t.Fatal(err)
	}
	var st admin.Status
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(st.Pools) != 2 {
		t.Fatalf("status over the socket: %d %v %+v", resp.StatusCode, err, st)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// Closing the listener removes the socket file.
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after close: %v", err)
	}
}

func TestUnixSocketStale(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	// A socket file nobody serves, as a crash leaves it.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket not left: %v", err)
	}
	ln, err := admin.Listen("unix:" + sock)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()
}

func TestUnixSocketRefusesOtherFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Listen("unix:" + path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen on a regular file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Errorf("regular file touched: %q %v", b, err)
	}
	if _, err := admin.Listen("unix:"); err == nil {
		t.Error("empty socket path accepted")
	}
}

func TestListenTCP(t *testing.T) {
	ln, err := admin.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, ok := ln.Addr().(*net.TCPAddr); !ok {
		t.Errorf("addr %v", ln.Addr())
	}
	for _, bad := range []string{"", "8080", "/run/admin.sock", "localhost"} {
		if ln, err := admin.Listen(bad); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) accepted", bad)
		}
	}
}

func TestRequiresToken(t *testing.T) {
	for addr, want := range map[string]bool{
		"unix:/run/lxd-gha-autoscaler/admin.sock": false,
		"127.0.0.1:9090":  false,
		"127.0.0.53:9090": false,
		"[::1]:9090":      false,
		"localhost:9090":  false,
		"LOCALHOST:9090":  false,
		":9090":           true, // every interface
		"0.0.0.0:9090":    true,
		"[::]:9090":       true,
		"10.0.0.5:9090":   true,
		"admin.example:1": true, // a name may resolve anywhere
		"garbage":         true, // unreadable: assume the worst
		"":                true,
	} {
		if got := admin.RequiresToken(addr); got != want {
			t.Errorf("RequiresToken(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestListenTLS(t *testing.T) {
	certPEM, keyPEM := admintest.SelfSigned(t, "127.0.0.1")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ListenTLS("unix:"+filepath.Join(t.TempDir(), "admin.sock"), cert); err == nil {
		t.Error("TLS on a unix socket accepted")
	}
	ln, err := admin.ListenTLS("127.0.0.1:0", cert)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- admin.Serve(ctx, ln, newHandler(admintest.New())) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	base := ln.Addr().String() + "/api/status"

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := c.Get("https://" + base)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Errorf("https: %d %+v", resp.StatusCode, resp.TLS)
	}
	// TLS 1.1 is refused.
	old := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11}}}
	if resp, err := old.Get("https://" + base); err == nil {
		resp.Body.Close()
		t.Error("TLS 1.1 accepted")
	}
	// Plain HTTP gets 400, not the API.
	resp, err = (&http.Client{Timeout: 5 * time.Second}).Get("http://" + base)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(b), "pools") {
			t.Errorf("plain HTTP: %d %s", resp.StatusCode, b)
		}
	}
}
