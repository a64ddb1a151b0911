package lxd

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// A process stopped after RoundTrip's permit check and before the request
// is written (the SIGSTOP fault test caught one) must not send it when it
// resumes: the connection asks the permit again at the write.
func TestPermitCheckedAtTheWrite(t *testing.T) {
	var reached atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer srv.Close()
	var d net.Dialer
	tr := &http.Transport{DialContext: d.DialContext}
	permitConns(tr)
	client := &http.Client{Transport: permitted{tr}}

	send := func(check func() error) error {
		ctx := fleet.WithPermit(context.Background(), check)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/1.0/instances", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := send(func() error { return nil }); err != nil || reached.Load() != 1 {
		t.Fatalf("a permitted request: %v, %d reached", err, reached.Load())
	}
	// The first check (RoundTrip's) passes; by the write, the lease lapsed.
	var checks atomic.Int32
	err := send(func() error {
		if checks.Add(1) == 1 {
			return nil
		}
		return fleet.ErrNotLeader
	})
	if !errors.Is(err, fleet.ErrNotLeader) || reached.Load() != 1 {
		t.Fatalf("a request whose permit lapsed before its write: %v, %d reached the server, want ErrNotLeader and none", err, reached.Load())
	}
}
