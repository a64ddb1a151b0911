package webhook

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

func logLines(t *testing.T, logs *fleettest.LogBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// A delivery id is logged only when it has GitHub's shape; a huge or
// hostile one never reaches the log, and a signed delivery with one is
// refused as if it had none.
func TestDeliveryIDIsValidatedBeforeLogging(t *testing.T) {
	logs := &fleettest.LogBuffer{}
	hs := newHarness(t, func(o *Options) { o.Log = zerolog.New(logs) })
	body := jobPayload("queued", 1)
	hostile := []string{
		strings.Repeat("A", 64<<10),
		strings.Repeat("a", 65),
		"abc\n{\"level\":\"error\",\"message\":\"forged\"}",
		"abc def",
		"ünïcode-id",
		"../../etc/passwd",
	}
	for _, id := range hostile {
		// Unsigned: refused, the id not logged.
		if rec := hs.post(t, body, map[string]string{"X-Hub-Signature-256": "sha256=00", "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": id}); rec.Code != http.StatusUnauthorized {
			t.Fatalf("unsigned, id %.20q: status %d, want 401", id, rec.Code)
		}
		// Signed: the id counts as missing.
		if rec := hs.post(t, body, map[string]string{"X-Hub-Signature-256": sign256(body, secret), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": id}); rec.Code != http.StatusBadRequest {
			t.Fatalf("signed, id %.20q: status %d, want 400", id, rec.Code)
		}
	}
	if n := hs.deliveries(t); n != 0 {
		t.Fatalf("%d deliveries recorded under invalid ids", n)
	}
	text := logs.String()
	for _, id := range hostile {
		probe := id
		if len(probe) > 16 {
			probe = probe[:16]
		}
		if strings.Contains(text, probe) {
			t.Errorf("the log holds the delivery id %.20q", id)
		}
	}
	lines := logLines(t, logs)
	if len(lines) != 2*len(hostile) {
		t.Fatalf("%d log lines, want %d", len(lines), 2*len(hostile))
	}
	for _, l := range lines {
		if _, ok := l["delivery_id"]; ok {
			t.Errorf("log line with a delivery_id: %v", l)
		}
	}
	// A GitHub-shaped id is logged, so a refused delivery can be found.
	const uuid = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
	hs.post(t, body, map[string]string{"X-Hub-Signature-256": "sha256=00", "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": uuid})
	if !strings.Contains(logs.String(), `"delivery_id":"`+uuid+`"`) {
		t.Errorf("a valid delivery id was not logged:\n%s", logs)
	}
}

func TestValidDeliveryID(t *testing.T) {
	for id, want := range map[string]bool{
		"72d3162e-cc78-11e3-81ab-4c9367dc0958": true,
		"d1":                                   true,
		strings.Repeat("a", 64):                true,
		strings.Repeat("a", 65):                false,
		"":                                     false,
		"a_b":                                  false,
		"a b":                                  false,
		"a\x00":                                false,
		"é":                                    false,
	} {
		if got := validDeliveryID(id); got != want {
			t.Errorf("validDeliveryID(%.20q) = %v, want %v", id, got, want)
		}
	}
}

// 1,000 rejections log a burst, then nothing until the summary, which
// counts the rest; then the bucket refills.
func TestRejectionLogIsRateLimited(t *testing.T) {
	logs := &fleettest.LogBuffer{}
	clock := fleettest.NewClock(time.Time{})
	hs := newHarness(t, func(o *Options) { o.Log = zerolog.New(logs); o.Clock = clock })
	body := jobPayload("queued", 1)
	const n = 1000
	for i := range n {
		hdr := map[string]string{"X-Hub-Signature-256": "sha256=00", "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "flood-" + strings.Repeat("x", i%50)}
		if rec := hs.post(t, body, hdr); rec.Code != http.StatusUnauthorized {
			t.Fatalf("status %d", rec.Code)
		}
	}
	if got := len(logLines(t, logs)); got != logBurst {
		t.Fatalf("%d rejections logged %d lines, want %d (the burst)", n, got, logBurst)
	}
	// The summary comes one period after the first line held back.
	for deadline := time.Now().Add(5 * time.Second); clock.Timers() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no summary pending")
		}
		time.Sleep(time.Millisecond)
	}
	clock.Advance(logSummaryAfter)
	var summary map[string]any
	for deadline := time.Now().Add(5 * time.Second); summary == nil; {
		for _, l := range logLines(t, logs) {
			if strings.HasPrefix(l["message"].(string), logSummaryPrefix) {
				summary = l
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no summary line")
		}
		time.Sleep(time.Millisecond)
	}
	if got := summary["not_logged"]; got != float64(n-logBurst) {
		t.Fatalf("summary counts %v lines not logged, want %d", got, n-logBurst)
	}
	// Ten seconds on, ten more lines may go out.
	for range 20 {
		hs.post(t, body, map[string]string{"X-Hub-Signature-256": "sha256=00"})
	}
	if got, want := len(logLines(t, logs)), logBurst+1+int(logSummaryAfter.Seconds()*logPerSecond); got != want {
		t.Fatalf("%d log lines after the refill, want %d", got, want)
	}
}
