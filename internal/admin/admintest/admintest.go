// Package admintest provides a fake admin.Backend and sample data for
// tests of the admin API, its page and its clients.
package admintest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// Backend is an admin.Backend whose methods call the function fields.
// A nil field answers from the sample data (see New).
type Backend struct {
	StatusFunc         func(ctx context.Context) (admin.Status, error)
	JobsFunc           func(ctx context.Context, f admin.JobFilter) ([]admin.Job, error)
	JobFunc            func(ctx context.Context, id int64) (admin.JobDetail, error)
	SetDrainFunc       func(ctx context.Context, pool string, drain bool) error
	DeleteInstanceFunc func(ctx context.Context, name string) error

	mu      sync.Mutex
	Calls   []string // "SetDrain linux true", "DeleteInstance gha-x", ...
	Data    admin.Status
	Details map[int64]admin.JobDetail
}

var _ admin.Backend = (*Backend)(nil)

// T0 is when the sample's first job was queued.
var T0 = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

// New returns a Backend serving the sample: pools "linux" (max 10) and
// "gpu" (draining, global limit), and jobs 1001 (completed), 1002 (in
// progress), 1003 (queued, waiting for a slot) and 1004 (ignored); the
// last webhook, a workflow_job, came a second after job 1004's.
func New() *Backend {
	jobs := []admin.Job{
		{ID: 1004, Repo: "acme/web", State: "ignored", Reason: "no pool matches the job's labels",
			Labels: []string{"ubuntu-latest"}, QueuedAt: T0.Add(3 * time.Minute)},
		{ID: 1003, Pool: "gpu", Repo: "acme/ml", State: "queued", Reason: "pool gpu is draining",
			Labels: []string{"self-hosted", "gpu"}, QueuedAt: T0.Add(2 * time.Minute), Wait: 192 * time.Second},
		{ID: 1002, Pool: "linux", Repo: "acme/api", State: "in_progress", Runner: "gha-linux-2b7c91d0",
			Labels: []string{"self-hosted", "linux"}, QueuedAt: T0.Add(time.Minute),
			StartedAt: T0.Add(time.Minute + 9*time.Second), Wait: 4 * time.Second, Boot: 5 * time.Second},
		{ID: 1001, Pool: "linux", Repo: "acme/api", State: "completed", Runner: "gha-linux-4aeb8f23", Conclusion: "success",
			Labels: []string{"self-hosted", "linux"}, QueuedAt: T0, StartedAt: T0.Add(20 * time.Second),
			CompletedAt: T0.Add(80 * time.Second), Wait: 10 * time.Second, Boot: 10 * time.Second, Run: time.Minute},
	}
	return &Backend{
		Data: admin.Status{
			Pools: []admin.PoolStatus{
				{Name: "linux", Queued: 0, Launching: 1, Idle: 2, Busy: 1, Max: 10},
				{Name: "gpu", Queued: 1, Draining: true},
			},
			Jobs:        jobs,
			Ready:       true,
			Checks:      map[string]string{"store": admin.CheckOK, "lxd": admin.CheckOK, "github": admin.CheckOK},
			LastWebhook: &admin.Webhook{Event: "workflow_job", At: T0.Add(3*time.Minute + time.Second)},
		},
		Details: map[int64]admin.JobDetail{
			1001: {Job: jobs[3], Events: []admin.Event{
				{At: T0, Kind: "queued", Detail: "labels self-hosted, linux"},
				{At: T0.Add(5 * time.Millisecond), Kind: "accepted", Detail: "pool linux"},
				{At: T0.Add(8 * time.Second), Kind: "launched", Detail: "gha-linux-4aeb8f23"},
				{At: T0.Add(10 * time.Second), Kind: "started", Detail: "gha-linux-4aeb8f23"},
				{At: T0.Add(14 * time.Second), Kind: "online", Detail: "gha-linux-4aeb8f23"},
				{At: T0.Add(20 * time.Second), Kind: "in_progress", Detail: "on gha-linux-4aeb8f23"},
				{At: T0.Add(80 * time.Second), Kind: "completed", Detail: "success"},
				{At: T0.Add(82 * time.Second), Kind: "deleted", Detail: "instance gha-linux-4aeb8f23"},
			}},
		},
	}
}

func (b *Backend) record(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.Calls = append(b.Calls, fmt.Sprintf(format, args...))
}

// CallLog returns the mutating calls made so far.
func (b *Backend) CallLog() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.Calls)
}

// Status implements admin.Backend.
func (b *Backend) Status(ctx context.Context) (admin.Status, error) {
	if b.StatusFunc != nil {
		return b.StatusFunc(ctx)
	}
	return b.Data, nil
}

// Jobs implements admin.Backend.
func (b *Backend) Jobs(ctx context.Context, f admin.JobFilter) ([]admin.Job, error) {
	b.record("Jobs pool=%s state=%s limit=%d", f.Pool, f.State, f.Limit)
	if b.JobsFunc != nil {
		return b.JobsFunc(ctx, f)
	}
	if f.Pool != "" && !b.hasPool(f.Pool) {
		return nil, fmt.Errorf("unknown pool %q: %w", f.Pool, admin.ErrBadRequest)
	}
	var out []admin.Job
	for _, j := range b.Data.Jobs {
		if (f.Pool == "" || j.Pool == f.Pool) && (f.State == "" || j.State == f.State) && (f.Limit == 0 || len(out) < f.Limit) {
			out = append(out, j)
		}
	}
	return out, nil
}

// Job implements admin.Backend.
func (b *Backend) Job(ctx context.Context, id int64) (admin.JobDetail, error) {
	if b.JobFunc != nil {
		return b.JobFunc(ctx, id)
	}
	if d, ok := b.Details[id]; ok {
		return d, nil
	}
	for _, j := range b.Data.Jobs {
		if j.ID == id {
			return admin.JobDetail{Job: j}, nil
		}
	}
	return admin.JobDetail{}, fmt.Errorf("job %d: %w", id, fleet.ErrNotFound)
}

// SetDrain implements admin.Backend.
func (b *Backend) SetDrain(ctx context.Context, pool string, drain bool) error {
	b.record("SetDrain %s %t", pool, drain)
	if b.SetDrainFunc != nil {
		return b.SetDrainFunc(ctx, pool, drain)
	}
	if !b.hasPool(pool) {
		return fmt.Errorf("unknown pool %q: %w", pool, admin.ErrBadRequest)
	}
	return nil
}

// DeleteInstance implements admin.Backend.
func (b *Backend) DeleteInstance(ctx context.Context, name string) error {
	b.record("DeleteInstance %s", name)
	if b.DeleteInstanceFunc != nil {
		return b.DeleteInstanceFunc(ctx, name)
	}
	for _, j := range b.Data.Jobs {
		if j.Runner == name && name != "" {
			return nil
		}
	}
	return fmt.Errorf("instance %s: %w", name, fleet.ErrNotFound)
}

func (b *Backend) hasPool(name string) bool {
	for _, p := range b.Data.Pools {
		if p.Name == name {
			return true
		}
	}
	return false
}

// Evil is text a workflow may choose for a label, a repository or a
// runner's name: a terminal title change (OSC), a screen clear (CSI), a
// newline, a tab, a C1 CSI, a right-to-left override, an isolate, a
// zero-width space and an invalid byte.
const Evil = "\x1b]0;owned\x07\x1b[2J\n\t\u009b31m\u202e\u2066\u200b\xff"

// Hostile returns a Backend whose every string ends in Evil: a pool, a job
// (its pool, repository, state, reason, runner, conclusion and labels)
// with its timeline, a failing check, a leader and the last webhook's
// event. Pool and check names
// come from the config and the code, not from workflows; they carry it
// too, so that a test sees every string printed.
func Hostile() *Backend {
	e := func(s string) string { return s + Evil }
	job := admin.Job{ID: 7, Pool: e("pool"), Repo: e("acme/"), State: e("in_progress"), Reason: e("why"),
		Runner: e("runner"), Conclusion: e("success"), Labels: []string{e("self-hosted"), e("linux")},
		QueuedAt: T0, Wait: time.Second}
	return &Backend{
		Data: admin.Status{
			Pools:       []admin.PoolStatus{{Name: e("pool"), Queued: 1}},
			Jobs:        []admin.Job{job},
			Checks:      map[string]string{e("lxd"): e("down"), "store": admin.CheckOK},
			Leader:      &admin.Leader{Replica: e("replica"), Leader: e("leader"), Since: T0},
			LastWebhook: &admin.Webhook{Event: e("ping"), At: T0},
		},
		Details: map[int64]admin.JobDetail{7: {Job: job, Events: []admin.Event{
			{At: T0, Kind: e("queued"), Detail: e("labels")},
			{At: T0.Add(time.Second), Kind: e("launched"), Detail: e("runner")},
		}}},
	}
}
