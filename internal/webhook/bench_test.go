package webhook

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

// BenchmarkWebhookDurable measures the whole webhook path as GitHub drives
// it: verify, parse, record durably (synchronous=FULL, group commit), answer.
// Run it with -cpu to vary concurrency, e.g.
//
//	go test ./internal/webhook -run '^$' -bench WebhookDurable -benchtime 20000x -count 5
func BenchmarkWebhookDurable(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run("synchronous="+sync, func(b *testing.B) {
			st, err := store.Open(context.Background(), b.TempDir(), store.Options{Synchronous: sync})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			// As the service runs it: deliveries older than the retention
			// are refused; the clock is the payload's time.
			h, err := New(secret, st, Options{Log: zerolog.Nop(), MaxAge: 7 * 24 * time.Hour,
				Clock: fleettest.NewClock(time.Date(2024, 11, 26, 21, 5, 0, 0, time.UTC))})
			if err != nil {
				b.Fatal(err)
			}
			// The 7.5 KB payload the load test sends, shaped like GitHub's.
			body, err := os.ReadFile("testdata/load/payload.json")
			if err != nil {
				b.Fatal(err)
			}
			sig := sign256(body, secret)
			var n atomic.Int64
			b.SetParallelism(16) // 16 x GOMAXPROCS concurrent deliveries, like 32 connections on 2 cores
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
					req.Header.Set("X-Hub-Signature-256", sig)
					req.Header.Set("X-GitHub-Event", "workflow_job")
					req.Header.Set("X-GitHub-Delivery", "bench-"+strconv.FormatInt(n.Add(1), 10))
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != http.StatusAccepted {
						b.Fatalf("status %d", rec.Code)
					}
				}
			})
		})
	}
}

// BenchmarkRejectBadSignature: a bad signature costs no more than reading
// the body and one HMAC.
func BenchmarkRejectBadSignature(b *testing.B) {
	h, err := New(secret, nil, Options{Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	body := jobPayload("queued", 1)
	sig := sign256(body, []byte("wrong"))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
		req.Header.Set("X-Hub-Signature-256", sig)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
