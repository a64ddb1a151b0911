package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

// The ways FuzzHandler signs a request, by its mode argument.
const (
	fuzzSigRaw   = iota // the sig argument as the header, as it is
	fuzzSigValid        // HMAC-SHA256 of the body with the secret
	fuzzSigWrong        // HMAC-SHA256 of the body with another key
	fuzzSigNone         // no X-Hub-Signature-256
	fuzzSigModes
)

// signatureHolds reports whether header is a valid X-Hub-Signature-256 of
// body under the secret, computed here independently of the handler.
func signatureHolds(header string, body []byte) bool {
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// FuzzHandler drives the handler over the real store with random bodies
// and headers, signed and not. It must never panic, nothing may be
// recorded (neither a delivery nor the webhook as heard) and nothing
// answered 2xx unless the signature holds, and what
// is recorded carries the request's own, well-formed delivery id. The
// seeds run with every `go test`; to fuzz (CI does for 15 s):
//
//	go test -run '^$' -fuzz '^FuzzHandler$' -fuzztime 10m ./internal/webhook
func FuzzHandler(f *testing.F) {
	now := fleettest.T0
	queued := jobPayloadAt("queued", 1, now, now, time.Time{})
	const uuid = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
	for _, s := range []struct {
		body          []byte
		mode          uint8
		event, id, hd string
	}{
		{queued, fuzzSigValid, "workflow_job", uuid, ""},
		{jobPayloadAt("in_progress", 1, now, now, time.Time{}), fuzzSigValid, "workflow_job", "d-2", ""},
		{jobPayloadAt("completed", 1, now, now, now), fuzzSigValid, "workflow_job", "d-3", ""},
		{jobPayloadAt("queued", 2, now.Add(-30*24*time.Hour), time.Time{}, time.Time{}), fuzzSigValid, "workflow_job", "d-4", ""},
		{jobPayload("queued", 3), fuzzSigValid, "workflow_job", "d-5", ""}, // no timestamps
		{jobPayloadAt("waiting", 4, now, now, time.Time{}), fuzzSigValid, "workflow_job", "d-6", ""},
		{[]byte(`{"zen":"Keep it logically awesome.","hook_id":1}`), fuzzSigValid, "ping", "d-7", ""},
		{[]byte(`{"action":"queued","workflow_job":{"id":5,"created_at":"2026-11-26T12:00:00Z"},"installation":{"id":1}}`), fuzzSigValid, "workflow_job", "d-8", ""},
		{[]byte(`{"action":`), fuzzSigValid, "workflow_job", "d-9", ""},
		{queued, fuzzSigValid, "workflow_job", strings.Repeat("a", 65), ""},
		{queued, fuzzSigValid, "workflow_job", "id\n{\"level\":\"error\"}", ""},
		{queued, fuzzSigValid | 4, "workflow_job", "d-10", ""}, // chunked
		{queued, fuzzSigWrong, "workflow_job", "d-11", ""},
		{queued, fuzzSigNone, "workflow_job", "d-12", ""},
		{queued, fuzzSigRaw, "workflow_job", "d-13", "sha256=00"},
		{queued, fuzzSigRaw, "workflow_job", "d-14", "sha1=0123456789abcdef0123456789abcdef01234567"},
		{queued, fuzzSigRaw, "workflow_job", "d-15", "sha256=" + strings.Repeat("zz", 32)},
		{bytes.Repeat([]byte(" "), MaxBody+1), fuzzSigValid, "workflow_job", "d-16", ""},
		{nil, fuzzSigValid, "workflow_job", "d-17", ""},
	} {
		f.Add(s.body, s.mode, s.event, s.id, s.hd)
	}

	st, err := store.Open(context.Background(), f.TempDir(), store.Options{Synchronous: "NORMAL"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	rec := &lastRecorded{st: st}
	var notified, heard atomic.Int64
	h, err := New(secret, rec, Options{
		Notify: func() { notified.Add(1) },
		Heard:  func(context.Context, string, time.Time) error { heard.Add(1); return nil },
		Clock:  fleettest.NewClock(now),
		MaxAge: 72 * time.Hour,
		Log:    zerolog.Nop(),
	})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()

	f.Fuzz(func(t *testing.T, body []byte, mode uint8, event, id, sig string) {
		switch mode % fuzzSigModes {
		case fuzzSigValid:
			sig = sign256(body, secret)
		case fuzzSigWrong:
			sig = sign256(body, []byte("not the secret"))
		case fuzzSigNone:
			sig = ""
		}
		req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
		if mode&4 != 0 { // chunked: no Content-Length
			req.ContentLength = -1
		}
		if sig != "" || mode%fuzzSigModes == fuzzSigRaw {
			req.Header.Set("X-Hub-Signature-256", sig)
		}
		req.Header.Set("X-GitHub-Event", event)
		req.Header.Set("X-GitHub-Delivery", id)
		before, err := st.CountDeliveries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		notes, heards := notified.Load(), heard.Load()
		rec.last = fleet.Delivery{}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		after, err := st.CountDeliveries(ctx)
		if err != nil {
			t.Fatal(err)
		}

		holds := signatureHolds(sig, body)
		if after > before || notified.Load() > notes || heard.Load() > heards || w.Code < 300 {
			if !holds {
				t.Fatalf("status %d, %d deliveries recorded, without a valid signature", w.Code, after-before)
			}
		}
		switch w.Code {
		case http.StatusAccepted, http.StatusOK, http.StatusNoContent, http.StatusBadRequest, http.StatusUnauthorized,
			http.StatusLengthRequired, http.StatusRequestEntityTooLarge, http.StatusServiceUnavailable:
		default:
			t.Fatalf("status %d", w.Code)
		}
		if after > before {
			if w.Code != http.StatusAccepted || after != before+1 {
				t.Fatalf("status %d with %d deliveries recorded", w.Code, after-before)
			}
			if d := rec.last; d.DeliveryID != id || !validDeliveryID(d.DeliveryID) {
				t.Fatalf("recorded delivery id %q for the request's %q", d.DeliveryID, id)
			}
		}
	})
}

// lastRecorded records into the store and keeps the last delivery.
type lastRecorded struct {
	st   *store.Store
	last fleet.Delivery
}

func (r *lastRecorded) Record(ctx context.Context, d fleet.Delivery) (bool, error) {
	r.last = d
	return r.st.Record(ctx, d)
}
