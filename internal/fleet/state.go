package fleet

import (
	"context"
	"time"
)

// State is the durable state: deliveries as they arrived, what was decided
// for each job, the runners launched, and each job's timeline. Every
// change the scheduler makes goes through Update, in one transaction,
// before any outside call; so a crash at any point repeats or resumes
// work without doubling it.
type State interface {
	// Update runs fn in one write transaction, durable when it returns.
	// When fn fails nothing of it is kept.
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read transaction: a consistent snapshot.
	View(ctx context.Context, fn func(Tx) error) error
	// Record stores a delivery durably, returning only after the commit,
	// and reports whether it was new (false for a delivery id seen before).
	Record(ctx context.Context, d Delivery) (fresh bool, err error)
	// SeenDeliveries reports which of these delivery ids are recorded.
	SeenDeliveries(ctx context.Context, ids []string) (map[string]bool, error)
	// Ping checks that the state answers and is writable.
	Ping(ctx context.Context) error
}

// Tx is one transaction of the State. Lookups of one row return an error
// matching ErrNotFound when there is none.
type Tx interface {
	// PendingDeliveries returns up to limit deliveries not yet applied,
	// oldest first.
	PendingDeliveries(limit int) ([]Delivery, error)
	MarkApplied(seq int64) error

	Job(id int64) (Job, error)
	// JobByRunner returns the latest job that ran on the named runner.
	JobByRunner(name string) (Job, error)
	PutJob(Job) error
	// QueuedJobs returns the jobs waiting for a runner, oldest first (FIFO).
	QueuedJobs() ([]Job, error)
	// Jobs lists jobs newest first, filtered by pool and state when set.
	Jobs(f JobFilter) ([]Job, error)
	// JobOrgs returns the organizations whose jobs were routed to a pool.
	JobOrgs() ([]Org, error)

	Runner(name string) (Runner, error)
	PutRunner(Runner) error
	// LiveRunners returns the runners whose instances may exist, oldest first.
	LiveRunners() ([]Runner, error)
	// Runners lists all runners, newest first, at most limit.
	Runners(limit int) ([]Runner, error)
	// RunnerOrgs returns the organizations runners were launched for.
	RunnerOrgs() ([]Org, error)

	// AddEvent appends to a job's timeline; job id 0 (a warm pool's
	// runner) is not recorded.
	AddEvent(jobID int64, at time.Time, kind, detail string) error
	// Events returns a job's timeline, oldest first.
	Events(jobID int64) ([]Event, error)

	// Drained returns the pools an operator drained.
	Drained() (map[string]bool, error)
	SetDrained(pool string, drained bool) error
	// DrainedMembers returns the cluster members an operator drained: no
	// runner is launched there, and idle ones there are retired.
	DrainedMembers() (map[string]bool, error)
	SetMemberDrained(member string, drained bool) error

	// HeardWebhook records that a webhook with a valid signature (any
	// event: ping, workflow_job, ...) arrived at at. The latest time is
	// kept: replicas may record out of order.
	HeardWebhook(event string, at time.Time) error
	// LastWebhook is the latest webhook HeardWebhook recorded; zero when
	// none was.
	LastWebhook() (Webhook, error)

	// PutInstallation records what was heard of an installation of the
	// App, unless a later word on it is recorded already (by At).
	PutInstallation(Installation) error
	// Installations returns every installation heard of, by id.
	Installations() ([]Installation, error)
	// PutPrepared adds or replaces a prepared instance's row.
	PutPrepared(Prepared) error
	// PreparedInstances returns the prepared instances, oldest first.
	PreparedInstances() ([]Prepared, error)
	// DeletePrepared removes a prepared instance's row: its instance is
	// gone, or a job took it. A missing row is no error.
	DeletePrepared(name string) error
	// Prune deletes what is older than before and no longer needed:
	// finished jobs and their timelines, applied deliveries and ended
	// runners. It reports the rows deleted.
	Prune(before time.Time) (int64, error)
}

// Webhook is a webhook that arrived with a valid signature: its event
// (X-GitHub-Event) and when.
type Webhook struct {
	Event string
	At    time.Time
}

// JobFilter selects jobs; empty fields match all.
type JobFilter struct {
	Pool  string
	State JobState
	Limit int
}
