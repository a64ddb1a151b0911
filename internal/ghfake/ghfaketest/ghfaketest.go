// Package ghfaketest holds what tests of code that talks to the GitHub
// stand-in share: the App's key, a transport that remembers the
// credentials it sent (to check none leaks), and a log buffer.
package ghfaketest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"strings"
	"sync"
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

// SyncBuffer is a bytes.Buffer safe for concurrent writers (a logger's).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
