package app

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/metrics"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

// backend answers the admin API from the state, the scheduler and LXD.
type backend struct {
	a *App
}

var _ admin.Backend = backend{}

var jobStates = map[string]bool{
	store.JobQueued: true, store.JobIgnored: true, store.JobInProgress: true, store.JobCompleted: true, store.JobAbandoned: true,
}

func (b backend) Status(ctx context.Context) (admin.Status, error) {
	snap, err := b.a.Store.Snapshot(ctx)
	if err != nil {
		return admin.Status{}, err
	}
	cfg := b.a.Sched.Config()
	byPool := map[string]*admin.PoolStatus{}
	var pools []admin.PoolStatus
	for _, p := range cfg.Pools {
		pools = append(pools, admin.PoolStatus{Name: p.Name, Max: p.MaxInstances, Draining: snap.Drained[p.Name]})
	}
	for i := range pools {
		byPool[pools[i].Name] = &pools[i]
	}
	for _, j := range snap.Queued {
		if p := byPool[j.Pool]; p != nil {
			p.Queued++
		}
	}
	for _, r := range snap.Live {
		p := byPool[r.Pool]
		if p == nil {
			continue
		}
		switch r.State {
		case store.RunnerLaunching:
			p.Launching++
		case store.RunnerStarted:
			p.Idle++
		case store.RunnerBusy:
			p.Busy++
		}
	}
	jobs, err := b.jobs(ctx, "", "", 20, snap.Drained)
	if err != nil {
		return admin.Status{}, err
	}
	ready, checks := b.a.ready.check(ctx)
	return admin.Status{Pools: pools, Jobs: jobs, Ready: ready, Checks: checks}, nil
}

func (b backend) Jobs(ctx context.Context, f admin.JobFilter) ([]admin.Job, error) {
	if f.Pool != "" && b.pool(f.Pool) == nil {
		return nil, fmt.Errorf("%w: unknown pool %q", admin.ErrBadRequest, f.Pool)
	}
	if f.State != "" && !jobStates[f.State] {
		return nil, fmt.Errorf("%w: unknown state %q (queued, ignored, in_progress, completed, abandoned)", admin.ErrBadRequest, f.State)
	}
	snap, err := b.a.Store.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return b.jobs(ctx, f.Pool, f.State, f.Limit, snap.Drained)
}

func (b backend) jobs(ctx context.Context, pool, state string, limit int, drained map[string]bool) ([]admin.Job, error) {
	rows, err := b.a.Store.JobsWhere(ctx, pool, state, limit)
	if err != nil {
		return nil, err
	}
	runners, err := b.runnersOf(ctx, rows)
	if err != nil {
		return nil, err
	}
	out := make([]admin.Job, 0, len(rows))
	for _, j := range rows {
		out = append(out, view(j, runners[j.RunnerName], drained))
	}
	return out, nil
}

// runnersOf returns the runners the jobs ran on, by name.
func (b backend) runnersOf(ctx context.Context, jobs []store.Job) (map[string]store.Runner, error) {
	out := map[string]store.Runner{}
	err := b.a.Store.View(ctx, func(tx *store.Tx) error {
		for _, j := range jobs {
			if j.RunnerName == "" {
				continue
			}
			r, err := tx.Runner(j.RunnerName)
			if errors.Is(err, store.ErrNotFound) {
				continue // not ours, or pruned
			}
			if err != nil {
				return err
			}
			out[r.Name] = r
		}
		return nil
	})
	return out, err
}

// view turns a job row into the admin view, with where its time went.
func view(j store.Job, r store.Runner, drained map[string]bool) admin.Job {
	v := admin.Job{
		ID: j.ID, Pool: j.Pool, Repo: j.Repo, State: j.State, Reason: j.Reason, Runner: j.RunnerName,
		Conclusion: j.Conclusion, Labels: j.Labels, QueuedAt: j.QueuedAt, StartedAt: j.StartedAt, CompletedAt: j.CompletedAt,
	}
	if j.State == store.JobQueued && drained[j.Pool] {
		v.Reason = "pool " + j.Pool + " is draining"
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
	var j store.Job
	err := b.a.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		j, err = tx.Job(id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return admin.JobDetail{}, fmt.Errorf("%w: job %d", admin.ErrNotFound, id)
	}
	if err != nil {
		return admin.JobDetail{}, err
	}
	runners, err := b.runnersOf(ctx, []store.Job{j})
	if err != nil {
		return admin.JobDetail{}, err
	}
	snap, err := b.a.Store.Snapshot(ctx)
	if err != nil {
		return admin.JobDetail{}, err
	}
	evs, err := b.a.Store.JobEvents(ctx, id)
	if err != nil {
		return admin.JobDetail{}, err
	}
	d := admin.JobDetail{Job: view(j, runners[j.RunnerName], snap.Drained), Events: []admin.Event{}}
	for _, e := range evs {
		d.Events = append(d.Events, admin.Event{At: e.At, Kind: e.Kind, Detail: e.Detail})
	}
	return d, nil
}

func (b backend) SetDrain(ctx context.Context, pool string, drain bool) error {
	err := b.a.Sched.SetDrain(ctx, pool, drain)
	if errors.Is(err, scheduler.ErrUnknownPool) {
		return fmt.Errorf("%w: %v", admin.ErrBadRequest, err)
	}
	return err
}

func (b backend) DeleteInstance(ctx context.Context, name string) error {
	insts, err := b.a.instances.List(ctx)
	if err != nil {
		return err
	}
	prefix := b.a.Sched.Config().NamePrefix
	for _, in := range insts {
		if in.Name == name && in.Owner == prefix {
			b.a.log.Warn().Str("instance", name).Msg("admin: deleting instance")
			return b.a.instances.Delete(ctx, name)
		}
	}
	return fmt.Errorf("%w: no instance %q of this service", admin.ErrNotFound, name)
}

func (b backend) pool(name string) *scheduler.Pool {
	cfg := b.a.Sched.Config()
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
	snap, err := a.Store.Snapshot(ctx)
	if err != nil {
		return out
	}
	now := time.Now()
	pools := a.Sched.Config().Pools
	names := make([]string, 0, len(pools))
	for _, p := range pools {
		names = append(names, p.Name)
		out.Jobs[[2]string{p.Name, store.JobQueued}] = 0 // zeros, so graphs show them
		out.OldestQueuedAge[p.Name] = 0
	}
	sort.Strings(names)
	for _, j := range snap.Queued {
		out.Jobs[[2]string{j.Pool, store.JobQueued}]++
		if age := now.Sub(j.QueuedAt); age > out.OldestQueuedAge[j.Pool] {
			out.OldestQueuedAge[j.Pool] = age
		}
	}
	for _, r := range snap.Live {
		state := r.State
		if state == store.RunnerStarted {
			state = "idle"
		}
		out.Instances[[2]string{r.Pool, state}]++
	}
	return out
}
