// Command bare is the baseline for the webhook load test: an HTTP server
// that does only what no webhook receiver can skip (read the body, check
// X-Hub-Signature-256 with HMAC-SHA256) and answers 202. The service's
// figures over this one's, on the same machine and load, say what parsing
// and durable recording cost.
//
//	go build -o bare ./internal/webhook/testdata/load/bare
//	bare -listen 127.0.0.1:PORT -secret-file FILE
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const maxBody = 256 << 10 // as webhook.MaxBody

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback host:port to listen on")
	secretFile := flag.String("secret-file", "", "file holding the webhook secret")
	flag.Parse()
	if err := run(*listen, *secretFile); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}

func run(listen, secretFile string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("listen %s: loopback addresses only", listen)
	}
	raw, err := os.ReadFile(secretFile)
	if err != nil {
		return err
	}
	secret := bytes.TrimSpace(raw)
	if len(secret) == 0 {
		return errors.New("empty secret")
	}

	var accepted, rejected atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("POST /webhook", func(w http.ResponseWriter, r *http.Request) {
		sig, ok := strings.CutPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256=")
		if !ok {
			rejected.Add(1)
			http.Error(w, "missing X-Hub-Signature-256", http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			rejected.Add(1)
			http.Error(w, "cannot read body", http.StatusBadRequest)
			return
		}
		want, err := hex.DecodeString(sig)
		m := hmac.New(sha256.New, secret)
		m.Write(body)
		if err != nil || !hmac.Equal(m.Sum(nil), want) {
			rejected.Add(1)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		accepted.Add(1)
		w.WriteHeader(http.StatusAccepted)
	})

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	// The same server settings as internal/app.
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-sigs:
	}
	_ = srv.Close()
	fmt.Fprintf(os.Stderr, "bare: %d accepted, %d rejected\n", accepted.Load(), rejected.Load())
	return nil
}
