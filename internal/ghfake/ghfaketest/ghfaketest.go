// Package ghfaketest holds what tests of code that talks to the GitHub
// stand-in share: the App's key, a transport that remembers the
// credentials it sent (to check none leaks), and a fake /dev/lxd socket
// for the stand-in's runner.
package ghfaketest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

var (
	keyOnce sync.Once
	key     *rsa.PrivateKey
)

// AppKey is one RSA key for a test binary: generating it is the slowest
// step of these tests.
func AppKey() *rsa.PrivateKey {
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err) // crypto/rand does not fail on Linux
		}
		key = k
	})
	return key
}

// KeyPEM encodes k as GitHub hands out App keys (PKCS#1 PEM).
func KeyPEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

// AuthRecorder is a transport that remembers every credential sent in an
// Authorization header.
type AuthRecorder struct {
	Base  http.RoundTripper
	mu    sync.Mutex
	auths []string
}

// NewAuthRecorder wraps a fresh clone of http.DefaultTransport.
func NewAuthRecorder() *AuthRecorder {
	return &AuthRecorder{Base: http.DefaultTransport.(*http.Transport).Clone()}
}

func (r *AuthRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if a := req.Header.Get("Authorization"); a != "" {
		_, v, _ := strings.Cut(a, " ")
		r.mu.Lock()
		r.auths = append(r.auths, v)
		r.mu.Unlock()
	}
	return r.Base.RoundTrip(req)
}

// Secrets returns the credentials sent so far.
func (r *AuthRecorder) Secrets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.auths...)
}

// DevLXD serves a JIT config on a unix socket, as /dev/lxd/sock serves an
// instance its fleet.KeyJITConfig, and returns the socket's path.
func DevLXD(t testing.TB, jitconfig string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "devlxd") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /1.0/config/"+fleet.KeyJITConfig, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		io.WriteString(w, jitconfig)
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return sock
}
