package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

var secret = []byte("It's a Secret to Everybody")

func sign256(body []byte, key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func sign1(body []byte, key []byte) string {
	m := hmac.New(sha1.New, key)
	m.Write(body)
	return "sha1=" + hex.EncodeToString(m.Sum(nil))
}

func jobPayload(action string, jobID int64, labels ...string) []byte {
	if len(labels) == 0 {
		labels = []string{"self-hosted", "linux", "x64"}
	}
	return []byte(fmt.Sprintf(`{"action":%q,
		"workflow_job":{"id":%d,"run_id":7,"labels":["%s"],"runner_name":null,"status":%q},
		"repository":{"full_name":"acme/app","private":true,"visibility":"private"},
		"organization":{"login":"acme"},
		"installation":{"id":42}}`, action, jobID, strings.Join(labels, `","`), action))
}

type harness struct {
	st       *store.Store
	h        http.Handler
	notified atomic.Int32
}

// newHarness builds a handler over a fresh store; edit may change its
// options first.
func newHarness(t *testing.T, edit ...func(*Options)) *harness {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir(), store.Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	hs := &harness{st: st}
	o := Options{Notify: func() { hs.notified.Add(1) }, Log: zerolog.Nop()}
	for _, e := range edit {
		e(&o)
	}
	h, err := New(secret, st, o)
	if err != nil {
		t.Fatal(err)
	}
	hs.h = h
	return hs
}

func (hs *harness) post(t *testing.T, body []byte, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	hs.h.ServeHTTP(rec, req)
	return rec
}

func (hs *harness) deliveries(t *testing.T) int {
	t.Helper()
	n, err := hs.st.CountDeliveries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRejectedRequestsChangeNothing(t *testing.T) {
	body := jobPayload("queued", 1)
	good := sign256(body, secret)
	tests := []struct {
		name string
		body []byte
		hdr  map[string]string
		want int
	}{
		{"missing signature", body, map[string]string{"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d1"}, 401},
		{"sha1 only", body, map[string]string{"X-Hub-Signature": sign1(body, secret), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d1"}, 401},
		{"sha1 value in the sha256 header", body, map[string]string{"X-Hub-Signature-256": sign1(body, secret), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d1"}, 401},
		{"wrong secret", body, map[string]string{"X-Hub-Signature-256": sign256(body, []byte("nope")), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d1"}, 401},
		{"tampered body", append([]byte(" "), body...), map[string]string{"X-Hub-Signature-256": good, "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d1"}, 401},
		{"not hex", body, map[string]string{"X-Hub-Signature-256": "sha256=zz", "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d1"}, 401},
		{"missing event header", body, map[string]string{"X-Hub-Signature-256": good, "X-GitHub-Delivery": "d1"}, 400},
		{"missing delivery header", body, map[string]string{"X-Hub-Signature-256": good, "X-GitHub-Event": "workflow_job"}, 400},
		{"malformed JSON", []byte(`{"action":`), map[string]string{"X-Hub-Signature-256": sign256([]byte(`{"action":`), secret), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d1"}, 400},
		{"no job id", []byte(`{"action":"queued","workflow_job":{},"installation":{"id":1},"organization":{"login":"a"}}`), nil, 400},
		{"no installation", []byte(`{"action":"queued","workflow_job":{"id":3},"organization":{"login":"a"}}`), nil, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t)
			hdr := tt.hdr
			if hdr == nil {
				hdr = map[string]string{"X-Hub-Signature-256": sign256(tt.body, secret), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d1"}
			}
			rec := hs.post(t, tt.body, hdr)
			if rec.Code != tt.want {
				t.Fatalf("status = %d, want %d (%s)", rec.Code, tt.want, rec.Body)
			}
			if n := hs.deliveries(t); n != 0 {
				t.Fatalf("%d deliveries recorded for a rejected request", n)
			}
			if hs.notified.Load() != 0 {
				t.Fatal("scheduler notified for a rejected request")
			}
			if strings.Contains(rec.Body.String(), string(secret)) {
				t.Fatal("secret in the response")
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	hs := newHarness(t)
	// A valid delivery of exactly MaxBody bytes (padded with spaces) is
	// taken; one byte more is not.
	body := jobPayload("queued", 1)
	body = append(body, bytes.Repeat([]byte(" "), MaxBody-len(body))...)
	if rec := hs.post(t, body, map[string]string{"X-Hub-Signature-256": sign256(body, secret), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d0"}); rec.Code != http.StatusAccepted {
		t.Fatalf("%d bytes: status = %d, want 202", len(body), rec.Code)
	}
	big := append(body, ' ')
	rec := hs.post(t, big, map[string]string{"X-Hub-Signature-256": sign256(big, secret), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d1"})
	if rec.Code != http.StatusRequestEntityTooLarge || rec.Header().Get("Connection") != "close" {
		t.Fatalf("status = %d, Connection %q, want 413 and close", rec.Code, rec.Header().Get("Connection"))
	}
	// Without a Content-Length (chunked), nothing is read: even a small
	// signed body gets 411.
	for _, b := range [][]byte{big, jobPayload("queued", 2)} {
		req := httptest.NewRequest(http.MethodPost, "/webhook", struct{ *bytes.Reader }{bytes.NewReader(b)})
		req.ContentLength = -1
		req.Header.Set("X-Hub-Signature-256", sign256(b, secret))
		req.Header.Set("X-GitHub-Event", "workflow_job")
		req.Header.Set("X-GitHub-Delivery", "d2")
		rec = httptest.NewRecorder()
		hs.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusLengthRequired {
			t.Fatalf("chunked, %d bytes: status = %d, want 411", len(b), rec.Code)
		}
	}
	if n := hs.deliveries(t); n != 1 {
		t.Fatalf("%d deliveries recorded, want 1 (the one of MaxBody bytes)", n)
	}
}

func TestAcceptedAndIgnored(t *testing.T) {
	hs := newHarness(t)
	send := func(event, id string, body []byte) int {
		return hs.post(t, body, map[string]string{"X-Hub-Signature-256": sign256(body, secret), "X-GitHub-Event": event, "X-GitHub-Delivery": id}).Code
	}
	if c := send("ping", "p1", []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)); c != http.StatusNoContent {
		t.Fatalf("ping: %d", c)
	}
	if c := send("workflow_job", "w1", jobPayload("waiting", 9)); c != http.StatusNoContent {
		t.Fatalf("waiting: %d", c)
	}
	noOrg := []byte(`{"action":"queued","workflow_job":{"id":5,"labels":["self-hosted"]},"installation":{"id":1},"repository":{"full_name":"u/r"}}`)
	if c := send("workflow_job", "u1", noOrg); c != http.StatusNoContent {
		t.Fatalf("user-account job: %d", c)
	}
	if n := hs.deliveries(t); n != 0 {
		t.Fatalf("ignored events recorded: %d", n)
	}
	if c := send("workflow_job", "q1", jobPayload("queued", 11)); c != http.StatusAccepted {
		t.Fatalf("queued: %d", c)
	}
	if c := send("workflow_job", "q1", jobPayload("queued", 11)); c != http.StatusAccepted {
		t.Fatalf("same delivery again: %d", c)
	}
	if n := hs.deliveries(t); n != 1 {
		t.Fatalf("deliveries = %d, want 1", n)
	}
	if hs.notified.Load() != 1 {
		t.Fatalf("notified %d times, want 1 (duplicates do not wake the scheduler)", hs.notified.Load())
	}
	var got []fleet.Delivery
	err := hs.st.View(context.Background(), func(tx fleet.Tx) error {
		var err error
		got, err = tx.PendingDeliveries(10)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	d := got[0]
	if d.DeliveryID != "q1" || d.JobID != 11 || d.Org != "acme" || d.InstallationID != 42 || d.Repo != "acme/app" || d.Public ||
		strings.Join(d.Labels, ",") != "self-hosted,linux,x64" || d.Action != "queued" {
		t.Fatalf("recorded %+v", d)
	}
}

func TestVisibility(t *testing.T) {
	for _, tt := range []struct {
		repo string
		want bool
	}{
		{`{"full_name":"a/b","visibility":"public","private":false}`, true},
		{`{"full_name":"a/b","visibility":"private","private":true}`, false},
		{`{"full_name":"a/b","visibility":"internal","private":true}`, false},
		{`{"full_name":"a/b","private":false}`, true},
		{`{"full_name":"a/b","private":true}`, false},
	} {
		body := []byte(`{"action":"queued","workflow_job":{"id":1,"labels":["x"]},"installation":{"id":1},"organization":{"login":"a"},"repository":` + tt.repo + `}`)
		d, _, err := parse(body)
		if err != nil {
			t.Fatal(err)
		}
		if d.Public != tt.want {
			t.Errorf("%s: public = %v, want %v", tt.repo, d.Public, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(jobPayload("queued", 1))
	f.Add([]byte(`{"action":"completed","workflow_job":{"id":1,"labels":null}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _, _ = parse(body) // must not panic
	})
}
