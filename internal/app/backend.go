package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/metrics"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
)

// backend answers the admin API from the state, the scheduler and LXD.
type backend struct {
	a *App
}

var _ admin.Backend = backend{}

// snapshot is a consistent read of what the status views need.
type snapshot struct {
	queued   []fleet.Job
	live     []fleet.Runner
	prepared []fleet.Prepared
	drained  map[string]bool
	webhook  fleet.Webhook // the last heard
}

func (a *App) snapshot(ctx context.Context) (snapshot, error) {
	var s snapshot
	err := a.st.View(ctx, func(tx fleet.Tx) error {
		var err error
		if s.queued, err = tx.QueuedJobs(); err != nil {
			return err
		}
		if s.live, err = tx.LiveRunners(); err != nil {
			return err
		}
		if s.prepared, err = tx.PreparedInstances(); err != nil {
			return err
		}
		if s.drained, err = tx.Drained(); err != nil {
			return err
		}
		s.webhook, err = tx.LastWebhook()
		return err
	})
	return s, err
}

func (b backend) Status(ctx context.Context) (admin.Status, error) {
	snap, err := b.a.snapshot(ctx)
	if err != nil {
		return admin.Status{}, err
	}
	cfg := b.a.sched.Config()
	pools := make([]admin.PoolStatus, 0, len(cfg.Pools))
	byPool := map[string]int{}
	for i, p := range cfg.Pools {
		pools = append(pools, admin.PoolStatus{Name: p.Name, Max: p.MaxInstances, Draining: snap.drained[p.Name]})
		byPool[p.Name] = i
	}
	for _, j := range snap.queued {
		if i, ok := byPool[j.Pool]; ok {
			pools[i].Queued++
		}
	}
	for _, r := range snap.live {
		i, ok := byPool[r.Pool]
		if !ok {
			continue
		}
		switch r.State {
		case fleet.RunnerLaunching:
			pools[i].Launching++
		case fleet.RunnerStarted:
			pools[i].Idle++
		case fleet.RunnerBusy:
			pools[i].Busy++
		}
	}
	for _, x := range snap.prepared {
		if i, ok := byPool[x.Pool]; ok && x.State == fleet.PreparedReady {
			pools[i].Prepared++
		}
	}
	jobs, err := b.jobs(ctx, fleet.JobFilter{Limit: 20}, snap.drained)
	if err != nil {
		return admin.Status{}, err
	}
	ready, checks := b.a.ready.check(ctx)
	st := admin.Status{Pools: pools, Jobs: jobs, Ready: ready, Checks: checks}
	if w := snap.webhook; !w.At.IsZero() {
		st.LastWebhook = &admin.Webhook{Event: w.Event, At: w.At}
	}
	if l := b.a.leaderStatus(ctx); l != nil {
		st.Leader = &admin.Leader{Replica: l.Replica, Leader: l.Leader, Since: l.Since, Leading: l.Leading}
	}
	return st, nil
}

func (b backend) Jobs(ctx context.Context, f admin.JobFilter) ([]admin.Job, error) {
	if f.Pool != "" && b.a.pool(f.Pool) == nil {
		return nil, fmt.Errorf("%w: unknown pool %q", admin.ErrBadRequest, f.Pool)
	}
	state := fleet.JobState(f.State)
	if f.State != "" && !slices.Contains(fleet.JobStates, state) {
		return nil, fmt.Errorf("%w: unknown state %q (queued, ignored, in_progress, completed, abandoned)", admin.ErrBadRequest, f.State)
	}
	snap, err := b.a.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return b.jobs(ctx, fleet.JobFilter{Pool: f.Pool, State: state, Limit: f.Limit}, snap.drained)
}

// jobs lists the jobs f selects, each with the runner it ran on.
func (b backend) jobs(ctx context.Context, f fleet.JobFilter, drained map[string]bool) ([]admin.Job, error) {
	var out []admin.Job
	err := b.a.st.View(ctx, func(tx fleet.Tx) error {
		rows, err := tx.Jobs(f)
		if err != nil {
			return err
		}
		out = make([]admin.Job, 0, len(rows))
		for _, j := range rows {
			r, err := runnerOf(tx, j)
			if err != nil {
				return err
			}
			out = append(out, view(j, r, drained, b.a.sched.Held(), b.a.clock.Now()))
		}
		return nil
	})
	return out, err
}

// runnerOf returns the runner the job ran on: zero when none, or when it
// is not ours or was pruned.
func runnerOf(tx fleet.Tx, j fleet.Job) (fleet.Runner, error) {
	if j.RunnerName == "" {
		return fleet.Runner{}, nil
	}
	r, err := tx.Runner(j.RunnerName)
	if errors.Is(err, fleet.ErrNotFound) {
		return fleet.Runner{}, nil
	}
	return r, err
}

// view turns a job row into the admin view, with where its time went (for
// a job still queued, its wait so far at now).
func view(j fleet.Job, r fleet.Runner, drained map[string]bool, held string, now time.Time) admin.Job {
	v := admin.Job{
		ID: j.ID, Pool: j.Pool, Repo: j.Repo, State: string(j.State), Reason: j.Reason, Runner: j.RunnerName,
		Conclusion: j.Conclusion, Labels: j.Labels, QueuedAt: j.QueuedAt, StartedAt: j.StartedAt, CompletedAt: j.CompletedAt,
	}
	if j.State == fleet.JobQueued {
		v.Wait = max(now.Sub(j.QueuedAt), 0)
		switch {
		case held != "":
			v.Reason = "launches held: " + held
		case drained[j.Pool]:
			v.Reason = "pool " + j.Pool + " is draining"
		}
	}
	if !j.StartedAt.IsZero() {
		// Wait: queued until the runner that took it was launched (zero for
		// a warm runner launched before); boot: from then until in progress.
		launched := j.QueuedAt
		if r.CreatedAt.After(launched) && r.CreatedAt.Before(j.StartedAt) {
			launched = r.CreatedAt
		}
		v.Wait = launched.Sub(j.QueuedAt)
		v.Boot = max(j.StartedAt.Sub(launched), 0)
	}
	if !j.CompletedAt.IsZero() && !j.StartedAt.IsZero() {
		v.Run = max(j.CompletedAt.Sub(j.StartedAt), 0)
	}
	return v
}

func (b backend) Job(ctx context.Context, id int64) (admin.JobDetail, error) {
	var d admin.JobDetail
	err := b.a.st.View(ctx, func(tx fleet.Tx) error {
		j, err := tx.Job(id)
		if err != nil {
			return err
		}
		r, err := runnerOf(tx, j)
		if err != nil {
			return err
		}
		drained, err := tx.Drained()
		if err != nil {
			return err
		}
		evs, err := tx.Events(id)
		if err != nil {
			return err
		}
		d = admin.JobDetail{Job: view(j, r, drained, b.a.sched.Held(), b.a.clock.Now()), Events: make([]admin.Event, 0, len(evs))}
		for _, e := range evs {
			d.Events = append(d.Events, admin.Event{At: e.At, Kind: e.Kind, Detail: e.Detail})
		}
		return nil
	})
	return d, err
}

// SetDrain stops (or resumes) launches in a pool; any replica may, since
// the drained pools are the operator's, not the leader's. Runners already
// running finish their jobs. It is kept across restarts.
func (b backend) SetDrain(ctx context.Context, pool string, drain bool) error {
	if b.a.pool(pool) == nil {
		return fmt.Errorf("%w: unknown pool %q", admin.ErrBadRequest, pool)
	}
	if err := b.a.st.Update(ctx, func(tx fleet.Tx) error { return tx.SetDrained(pool, drain) }); err != nil {
		return err
	}
	b.a.log.Info().Str("pool", pool).Bool("drained", drain).Msg("pool drain changed")
	b.a.sched.Notify()
	return nil
}

func (b backend) DeleteInstance(ctx context.Context, name string) error {
	insts, err := b.a.instances.List(ctx)
	if err != nil {
		return err
	}
	prefix := b.a.sched.Config().NamePrefix
	for _, in := range insts {
		if in.Name == name && in.Labels.Owner == prefix {
			b.a.log.Warn().Str("instance", name).Msg("admin: deleting instance")
			return b.a.instances.Delete(ctx, name)
		}
	}
	return fmt.Errorf("no instance %q of this service: %w", name, fleet.ErrNotFound)
}

func (a *App) pool(name string) *scheduler.Pool {
	cfg := a.sched.Config()
	for i := range cfg.Pools {
		if cfg.Pools[i].Name == name {
			return &cfg.Pools[i]
		}
	}
	return nil
}

// stateSource gives the metrics the counts read at scrape time.
func (a *App) stateSource() metrics.StateSnapshot {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := metrics.StateSnapshot{Jobs: map[[2]string]int{}, Instances: map[[2]string]int{}, OldestQueuedAge: map[string]time.Duration{}}
	snap, err := a.snapshot(ctx)
	if err != nil {
		return out
	}
	now := a.clock.Now()
	for _, p := range a.sched.Config().Pools {
		out.Jobs[[2]string{p.Name, string(fleet.JobQueued)}] = 0 // zeros, so graphs show them
		out.OldestQueuedAge[p.Name] = 0
	}
	for _, j := range snap.queued {
		out.Jobs[[2]string{j.Pool, string(fleet.JobQueued)}]++
		if age := now.Sub(j.QueuedAt); age > out.OldestQueuedAge[j.Pool] {
			out.OldestQueuedAge[j.Pool] = age
		}
	}
	for _, r := range snap.live {
		state := string(r.State)
		if r.State == fleet.RunnerStarted {
			state = "idle"
		}
		out.Instances[[2]string{r.Pool, state}]++
	}
	return out
}
