package webhook

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

// countMetrics is a Metrics that counts results.
type countMetrics struct {
	mu sync.Mutex
	n  map[string]int
}

func (m *countMetrics) WebhookReceived(_, result string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == nil {
		m.n = map[string]int{}
	}
	m.n[result]++
}

func (m *countMetrics) get(result string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[result]
}

// jobPayloadAt is a workflow_job delivery with the job's timestamps; a
// zero time leaves that one null.
func jobPayloadAt(action string, jobID int64, created, started, completed time.Time) []byte {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "null"
		}
		return `"` + t.UTC().Format(time.RFC3339) + `"`
	}
	return []byte(fmt.Sprintf(`{"action":%q,
		"workflow_job":{"id":%d,"run_id":7,"labels":["self-hosted","linux"],"runner_name":"r1","status":%q,
			"created_at":%s,"started_at":%s,"completed_at":%s},
		"repository":{"full_name":"acme/app","private":true,"visibility":"private"},
		"organization":{"login":"acme"},
		"installation":{"id":42}}`, action, jobID, action, ts(created), ts(started), ts(completed)))
}

// A delivery whose event is older than MaxAge (by the job's own
// timestamps: the delivery id is not signed) is answered 2xx, so nothing
// retries it, recorded nowhere, and counted as stale.
func TestStaleDeliveriesAreRefused(t *testing.T) {
	const maxAge = 72 * time.Hour
	now := fleettest.T0
	old := now.Add(-maxAge - time.Hour)
	recent := now.Add(-time.Hour)
	tests := []struct {
		name  string
		body  []byte
		want  int
		fresh bool // recorded
	}{
		{"queued, created long ago", jobPayloadAt("queued", 1, old, old, time.Time{}), http.StatusOK, false},
		{"queued, created an hour ago", jobPayloadAt("queued", 2, recent, recent, time.Time{}), http.StatusAccepted, true},
		{"queued, created just under the limit", jobPayloadAt("queued", 3, now.Add(-maxAge+time.Second), time.Time{}, time.Time{}), http.StatusAccepted, true},
		{"queued, the sender's clock ahead of ours", jobPayloadAt("queued", 4, now.Add(time.Minute), time.Time{}, time.Time{}), http.StatusAccepted, true},
		{"in_progress, queued long ago, started an hour ago", jobPayloadAt("in_progress", 5, old, recent, time.Time{}), http.StatusAccepted, true},
		{"in_progress, started long ago", jobPayloadAt("in_progress", 6, old, old, time.Time{}), http.StatusOK, false},
		{"completed long ago", jobPayloadAt("completed", 7, old, old, old.Add(time.Minute)), http.StatusOK, false},
		{"completed an hour ago after a long run", jobPayloadAt("completed", 8, old, old, recent), http.StatusAccepted, true},
		{"no timestamps", jobPayloadAt("queued", 9, time.Time{}, time.Time{}, time.Time{}), http.StatusBadRequest, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &countMetrics{}
			hs := newHarness(t, func(o *Options) {
				o.MaxAge = maxAge
				o.Clock = fleettest.NewClock(now)
				o.Metrics = m
			})
			rec := hs.post(t, tt.body, map[string]string{"X-Hub-Signature-256": sign256(tt.body, secret), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d1"})
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d (%s)", rec.Code, tt.want, rec.Body)
			}
			want := 0
			if tt.fresh {
				want = 1
			}
			if n := hs.deliveries(t); n != want {
				t.Fatalf("%d deliveries recorded, want %d", n, want)
			}
			if int(hs.notified.Load()) != want {
				t.Fatalf("scheduler notified %d times, want %d", hs.notified.Load(), want)
			}
			if tt.want == http.StatusOK && m.get("stale") != 1 {
				t.Fatalf("metric results %v, want one stale", m.n)
			}
		})
	}
}

// The same signed body, replayed with fresh delivery ids: accepted while
// young (the job id dedupes it downstream), refused once older than
// MaxAge, however many fresh ids it comes with.
func TestReplayedBodyRefusedOnceStale(t *testing.T) {
	clock := fleettest.NewClock(time.Time{})
	m := &countMetrics{}
	hs := newHarness(t, func(o *Options) { o.MaxAge = 72 * time.Hour; o.Clock = clock; o.Metrics = m })
	body := jobPayloadAt("queued", 1, clock.Now(), clock.Now(), time.Time{})
	send := func(id string) int {
		return hs.post(t, body, map[string]string{"X-Hub-Signature-256": sign256(body, secret), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": id}).Code
	}
	if c := send("a1"); c != http.StatusAccepted {
		t.Fatalf("first delivery: %d", c)
	}
	clock.Advance(72*time.Hour + time.Second)
	for i := range 5 {
		if c := send(fmt.Sprintf("replay-%d", i)); c != http.StatusOK {
			t.Fatalf("replay %d: status %d, want 200", i, c)
		}
	}
	if n := hs.deliveries(t); n != 1 {
		t.Fatalf("%d deliveries recorded, want 1", n)
	}
	if m.get("stale") != 5 || m.get("accepted") != 1 {
		t.Fatalf("metric results %v", m.n)
	}
}
