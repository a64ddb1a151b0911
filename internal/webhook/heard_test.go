package webhook

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

// heardVia makes the harness record the last webhook heard in its store.
func heardVia(hs **harness) func(*Options) {
	return func(o *Options) {
		o.Heard = func(ctx context.Context, event string, at time.Time) error {
			return (*hs).st.Update(ctx, func(tx fleet.Tx) error { return tx.HeardWebhook(event, at) })
		}
	}
}

func (hs *harness) lastWebhook(t *testing.T) fleet.Webhook {
	t.Helper()
	var w fleet.Webhook
	err := hs.st.View(context.Background(), func(tx fleet.Tx) error {
		var err error
		w, err = tx.LastWebhook()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// Every signed webhook counts as heard, ping first of all, so that a wrong
// proxy or secret shows before the first job; a workflow_job only once per
// HeardEvery, so the busy path pays one write per interval; an unsigned or
// wrongly signed request never.
func TestHeard(t *testing.T) {
	clock := fleettest.NewClock(time.Time{})
	var hs *harness
	hs = newHarness(t, heardVia(&hs), func(o *Options) { o.Clock = clock })
	send := func(event, id string, body []byte, key []byte) int {
		return hs.post(t, body, map[string]string{"X-Hub-Signature-256": sign256(body, key), "X-GitHub-Event": event, "X-GitHub-Delivery": id}).Code
	}
	ping := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)

	if c := send("ping", "p0", ping, []byte("wrong")); c != http.StatusUnauthorized {
		t.Fatalf("badly signed ping: %d", c)
	}
	if w := hs.lastWebhook(t); w != (fleet.Webhook{}) {
		t.Fatalf("a badly signed ping was heard: %+v", w)
	}
	if c := send("ping", "p1", ping, secret); c != http.StatusNoContent {
		t.Fatalf("ping: %d", c)
	}
	if w := hs.lastWebhook(t); w.Event != "ping" || !w.At.Equal(clock.Now()) {
		t.Fatalf("after a ping: %+v, want ping at %v", w, clock.Now())
	}

	clock.Advance(time.Second)
	if c := send("workflow_job", "q1", jobPayload("queued", 1), secret); c != http.StatusAccepted {
		t.Fatalf("queued: %d", c)
	}
	first := clock.Now()
	clock.Advance(DefaultHeardEvery - time.Millisecond)
	if c := send("workflow_job", "q2", jobPayload("queued", 2), secret); c != http.StatusAccepted {
		t.Fatalf("queued: %d", c)
	}
	if w := hs.lastWebhook(t); w.Event != "workflow_job" || !w.At.Equal(first) {
		t.Fatalf("two jobs within %v: %+v, want the first, at %v", DefaultHeardEvery, w, first)
	}
	clock.Advance(time.Millisecond)
	if c := send("workflow_job", "q3", jobPayload("queued", 3), secret); c != http.StatusAccepted {
		t.Fatalf("queued: %d", c)
	}
	if w := hs.lastWebhook(t); !w.At.Equal(clock.Now()) {
		t.Fatalf("a job %v later: %+v, want it at %v", DefaultHeardEvery, w, clock.Now())
	}
	// Other events are rare: each is recorded.
	clock.Advance(time.Second)
	if c := send("ping", "p2", ping, secret); c != http.StatusNoContent {
		t.Fatalf("ping: %d", c)
	}
	if w := hs.lastWebhook(t); w.Event != "ping" || !w.At.Equal(clock.Now()) {
		t.Fatalf("a second ping: %+v", w)
	}
}

// A state that cannot record it costs the delivery nothing.
func TestHeardFails(t *testing.T) {
	var hs *harness
	hs = newHarness(t, func(o *Options) {
		o.Heard = func(context.Context, string, time.Time) error { return errors.New("disk full") }
	})
	body := jobPayload("queued", 1)
	if c := hs.post(t, body, map[string]string{"X-Hub-Signature-256": sign256(body, secret), "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "q1"}).Code; c != http.StatusAccepted {
		t.Fatalf("queued: %d", c)
	}
	if n := hs.deliveries(t); n != 1 {
		t.Fatalf("%d deliveries recorded, want 1", n)
	}
}
