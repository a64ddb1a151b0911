package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/app"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// checks are readiness check functions whose answers a test sets.
type checks struct {
	mu        sync.Mutex
	lxd, gh   error
	installed []int64 // the installations GitHub was checked for
}

func (c *checks) set(lxd, gh error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lxd, c.gh = lxd, gh
}

// asked returns the installations GitHub was checked for.
func (c *checks) asked() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.installed)
}

func (c *checks) deps(_ *app.Config, d *app.Deps) {
	d.CheckLXD = func(context.Context) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.lxd
	}
	d.CheckGitHub = func(_ context.Context, id int64) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.installed = append(c.installed, id)
		return c.gh
	}
}

type readyz struct {
	Ready  bool
	Checks map[string]string
}

// ready asks h for /readyz.
func ready(t *testing.T, ctx context.Context, h http.Handler) (int, readyz) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/readyz", nil))
	var r readyz
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatalf("/readyz: %v\n%s", err, rec.Body)
	}
	return rec.Code, r
}

func TestReadyz(t *testing.T) {
	var c checks
	e := newEnv(t, c.deps)
	c.set(errors.New("lxd: the daemon does not answer"), nil)

	code, r := ready(t, context.Background(), e.app.Handler())
	if code != http.StatusServiceUnavailable || r.Ready {
		t.Fatalf("LXD down: status %d, ready %v; want 503", code, r.Ready)
	}
	if r.Checks["lxd"] != "lxd: the daemon does not answer" || r.Checks["state"] != admin.CheckOK {
		t.Fatalf("LXD down: checks %v; want lxd named, the state ok", r.Checks)
	}
	// No job has come yet, so no installation is known to ask GitHub for.
	if r.Checks["github"] != admin.CheckOK || len(c.asked()) != 0 {
		t.Fatalf("checks %v, GitHub asked for %v; want ok without asking", r.Checks, c.asked())
	}

	c.set(nil, nil)
	e.clock.Advance(5 * time.Second) // past the cache
	for name, h := range map[string]http.Handler{"webhook": e.app.Handler(), "admin": e.app.AdminHandler()} {
		code, r = ready(t, context.Background(), h)
		if code != http.StatusOK || !r.Ready || len(r.Checks) != 3 {
			t.Fatalf("all well, %s listener: status %d, %+v; want 200 and three checks ok", name, code, r)
		}
	}

	e.seed(func(tx fleet.Tx) error {
		return tx.PutJob(fleet.Job{ID: 1, Pool: "linux", State: fleet.JobQueued, InstallationID: 42, Org: "acme", QueuedAt: e.clock.Now()})
	})
	c.set(nil, errors.New("github: 401 Bad credentials"))
	e.clock.Advance(5 * time.Second)
	code, r = ready(t, context.Background(), e.app.Handler())
	if code != http.StatusServiceUnavailable || r.Checks["github"] != "github: 401 Bad credentials" || r.Checks["lxd"] != admin.CheckOK {
		t.Fatalf("GitHub failing: status %d, checks %v; want 503 naming github", code, r.Checks)
	}
	if ids := c.asked(); !slices.Equal(ids, []int64{42}) {
		t.Fatalf("GitHub checked for installations %v, want [42]", ids)
	}
}

// A client that gives up on /readyz (a probe's timeout, a closed status
// page) must not leave its cancellation behind as the cached answer.
func TestReadyzOutlivesCancelledRequest(t *testing.T) {
	var c checks
	e := newEnv(t, c.deps)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ready(t, ctx, e.app.Handler())
	code, r := ready(t, context.Background(), e.app.Handler())
	if code != http.StatusOK {
		t.Fatalf("after a cancelled request: status %d, checks %v; want 200", code, r.Checks)
	}
}
