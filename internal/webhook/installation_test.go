package webhook

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

// installationPayload is an installation event as GitHub sends it (the
// fields the service reads, and a few around them).
func installationPayload(action string, id int64, login, accountType string) []byte {
	return fmt.Appendf(nil, `{"action":%q,"installation":{"id":%d,"account":{"login":%q,"id":9000001,"type":%q},
		"app_id":4242,"target_type":%q,"repository_selection":"all","suspended_at":null,
		"created_at":"2026-11-29T12:00:00Z","updated_at":"2026-11-29T12:00:00Z"},
		"repositories":[],"sender":{"login":"octocat","id":583231,"type":"User"}}`,
		action, id, login, accountType, accountType)
}

// installationsVia makes the harness record installations in its store.
func installationsVia(hs **harness) func(*Options) {
	return func(o *Options) {
		o.Installation = func(ctx context.Context, in fleet.Installation) error {
			return (*hs).st.Update(ctx, func(tx fleet.Tx) error { return tx.PutInstallation(in) })
		}
	}
}

// Installation events (created, deleted, suspend, unsuspend) are recorded
// with their arrival time, the latest word winning; other actions and
// accounts that are not organizations are not; a bad signature changes
// nothing.
func TestInstallationEvents(t *testing.T) {
	clock := fleettest.NewClock(time.Time{})
	var hs *harness
	hs = newHarness(t, installationsVia(&hs), func(o *Options) { o.Clock = clock })
	n := 0
	send := func(body, key []byte) int {
		n++
		return hs.post(t, body, map[string]string{"X-Hub-Signature-256": sign256(body, key), "X-GitHub-Event": "installation",
			"X-GitHub-Delivery": fmt.Sprintf("i-%d", n)}).Code
	}
	installs := func() string {
		t.Helper()
		var out []string
		for _, in := range fleettest.Read(t, hs.st, func(tx fleet.Tx) ([]fleet.Installation, error) { return tx.Installations() }) {
			out = append(out, fmt.Sprintf("%d %s %s", in.ID, in.Login, in.State))
		}
		return fmt.Sprint(out)
	}

	if c := send(installationPayload("created", 8, "beta", "Organization"), []byte("wrong")); c != http.StatusUnauthorized {
		t.Fatalf("badly signed: %d", c)
	}
	if got := installs(); got != "[]" {
		t.Fatalf("a badly signed event was recorded: %s", got)
	}
	steps := []struct {
		body []byte
		code int
		want string
	}{
		{installationPayload("created", 8, "beta", "Organization"), http.StatusAccepted, "[8 beta active]"},
		{installationPayload("created", 9, "octocat", "User"), http.StatusNoContent, "[8 beta active]"},
		{installationPayload("new_permissions_accepted", 8, "beta", "Organization"), http.StatusNoContent, "[8 beta active]"},
		{installationPayload("suspend", 8, "beta", "Organization"), http.StatusAccepted, "[8 beta suspended]"},
		{installationPayload("unsuspend", 8, "beta", "Organization"), http.StatusAccepted, "[8 beta active]"},
		{installationPayload("deleted", 8, "beta", "Organization"), http.StatusAccepted, "[8 beta deleted]"},
		{[]byte(`{"action":"created","installation":{}}`), http.StatusBadRequest, "[8 beta deleted]"},
	}
	for i, s := range steps {
		clock.Advance(time.Second)
		if c := send(s.body, secret); c != s.code {
			t.Fatalf("step %d: status %d, want %d", i, c, s.code)
		}
		if got := installs(); got != s.want {
			t.Fatalf("step %d: installations %s, want %s", i, got, s.want)
		}
	}
	got := fleettest.Read(t, hs.st, func(tx fleet.Tx) ([]fleet.Installation, error) { return tx.Installations() })
	if !got[0].At.Equal(clock.Now().Add(-time.Second)) {
		t.Fatalf("recorded at %v, want its arrival %v", got[0].At, clock.Now().Add(-time.Second))
	}
}
