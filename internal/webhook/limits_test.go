package webhook

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// holdTurn opens a connection to srv and sends a request whose body never
// comes: it takes one of the handler's reading turns and keeps it.
func holdTurn(t *testing.T, srv *httptest.Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_, err = fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"+
		"X-Hub-Signature-256: sha256=00\r\nX-GitHub-Event: workflow_job\r\nX-GitHub-Delivery: slow\r\n\r\n{\"action\":")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitTurnsTaken waits until every reading turn is taken.
func waitTurnsTaken(t *testing.T, h *Handler) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(h.bodies.turns) > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d reading turns still free", len(h.bodies.turns))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func postSigned(t *testing.T, url, id string, body []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/webhook", bytes.NewReader(body))
	req.Header.Set("X-Hub-Signature-256", sign256(body, secret))
	req.Header.Set("X-GitHub-Event", "workflow_job")
	req.Header.Set("X-GitHub-Delivery", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// Bodies are read a bounded number at a time: past that, a request waits
// ReadWait for its turn, then gets 503 with Retry-After, and nothing is
// recorded. A turn given back serves the next request.
func TestConcurrentReadsAreBounded(t *testing.T) {
	hs := newHarness(t, func(o *Options) { o.MaxReads = 2; o.ReadWait = 100 * time.Millisecond })
	srv := httptest.NewServer(hs.h)
	t.Cleanup(srv.Close) // after the holders close (cleanups run last first)
	h := hs.h.(*Handler)
	holdTurn(t, srv)
	second := holdTurn(t, srv)
	waitTurnsTaken(t, h)

	start := time.Now()
	resp := postSigned(t, srv.URL, "d1", jobPayload("queued", 1))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Fatalf("answered 503 after %v: it should wait ReadWait for a turn", took)
	}
	if n := hs.deliveries(t); n != 0 {
		t.Fatalf("%d deliveries recorded", n)
	}
	// The sender that gives up gives its turn back.
	second.Close()
	if resp := postSigned(t, srv.URL, "d2", jobPayload("queued", 2)); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("after a turn came free: status %d, want 202", resp.StatusCode)
	}
}

// Buffers are made as concurrency needs them, not up to the bound: one
// request after another reuse one.
func TestBodyBuffersAreReused(t *testing.T) {
	hs := newHarness(t, func(o *Options) { o.MaxReads = 8 })
	h := hs.h.(*Handler)
	for i := range 20 {
		body := jobPayload("queued", int64(i+1))
		hs.post(t, body, map[string]string{"X-Hub-Signature-256": sign256(body, secret), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": fmt.Sprint("d", i)})
	}
	if n := len(h.bodies.free); n != 1 {
		t.Fatalf("%d buffers made for requests one at a time, want 1", n)
	}
	if n := hs.deliveries(t); n != 20 {
		t.Fatalf("%d deliveries recorded, want 20", n)
	}
}

// A sender that stops in the middle of its body loses its turn after
// BodyTimeout, and the delivery waiting behind it is served.
func TestSlowBodyLosesItsTurn(t *testing.T) {
	hs := newHarness(t, func(o *Options) {
		o.MaxReads = 1
		o.BodyTimeout = 200 * time.Millisecond
		o.ReadWait = 3 * time.Second
	})
	srv := httptest.NewServer(hs.h) // no ReadTimeout: only BodyTimeout ends the read
	t.Cleanup(srv.Close)            // after the holders close (cleanups run last first)
	slow := holdTurn(t, srv)
	waitTurnsTaken(t, hs.h.(*Handler))

	start := time.Now()
	if resp := postSigned(t, srv.URL, "d1", jobPayload("queued", 1)); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d after %v, want 202", resp.StatusCode, time.Since(start))
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the delivery waited %v behind a stalled body", took)
	}
	_ = slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(slow).ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 400") {
		t.Fatalf("the stalled sender got %q, want 400", line)
	}
}
