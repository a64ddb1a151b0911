// Package admin serves the operator's view of the service: a JSON API and a
// status page that answer "why is my job still queued?" and "where does the
// time of a job go?", plus the few actions an operator needs (drain a pool,
// delete an instance). It runs on its own listener, never the webhook port.
//
// The package declares what it needs from the service as Backend and knows
// nothing of the store or the scheduler: its types are plain views, and
// it imports only the domain (internal/fleet) for its not-found error.
package admin

import (
	"context"
	"errors"
	"time"
)

// Backend is what the admin API needs from the service.
type Backend interface {
	// Status is the pools, the last 20 jobs and readiness.
	Status(ctx context.Context) (Status, error)
	// Jobs lists jobs newest first. An unknown pool or state should be
	// ErrBadRequest, so a typo is not mistaken for "no such jobs".
	Jobs(ctx context.Context, f JobFilter) ([]Job, error)
	// Job is one job with its timeline, or fleet.ErrNotFound.
	Job(ctx context.Context, id int64) (JobDetail, error)
	// SetDrain stops (or resumes) launches for a pool; ErrBadRequest for
	// an unknown pool.
	SetDrain(ctx context.Context, pool string, drain bool) error
	// DeleteInstance deletes one of our instances; fleet.ErrNotFound when it is
	// not ours or does not exist.
	DeleteInstance(ctx context.Context, name string) error
}

// ErrBadRequest is wrapped (with %w) by a Backend's error for a request
// that can never succeed, e.g. an unknown pool: 400. An error matching
// fleet.ErrNotFound is 404.
var ErrBadRequest = errors.New("bad request")

// Status is the state of the whole service.
type Status struct {
	Pools []PoolStatus `json:"pools"`
	Jobs  []Job        `json:"jobs"` // the last 20, newest first
	Ready bool         `json:"ready"`
	// Checks maps each readiness check to "ok" or what is wrong.
	Checks map[string]string `json:"checks"`
	// Leader is set when several replicas share the state.
	Leader *Leader `json:"leader,omitempty"`
	// LastWebhook is the latest webhook that arrived with a valid
	// signature (a ping counts), at any replica; nil before the first.
	// A workflow_job is recorded at most every 10 s.
	LastWebhook *Webhook `json:"last_webhook,omitempty"`
}

// Webhook is a webhook the service took: its event and when.
type Webhook struct {
	Event string    `json:"event"`
	At    time.Time `json:"at"`
}

// Leader says which replica leads (decides and acts) and since when.
type Leader struct {
	Replica string    `json:"replica"`        // the one answering
	Leader  string    `json:"leader"`         // empty while none does
	Since   time.Time `json:"since,omitzero"` // when it took the lead
	Leading bool      `json:"leading"`        // the one answering leads
}

// CheckOK is the value of a passing readiness check.
const CheckOK = "ok"

// PoolStatus counts one pool's jobs and runners.
type PoolStatus struct {
	Name      string `json:"name"`
	Queued    int    `json:"queued"`    // jobs waiting for a runner
	Launching int    `json:"launching"` // runners being made
	Idle      int    `json:"idle"`      // runners up, without a job
	Busy      int    `json:"busy"`      // runners running a job
	Prepared  int    `json:"prepared"`  // prepared instances ready: made and stopped, no runner yet
	Max       int    `json:"max"`       // 0: only the global limit applies
	Draining  bool   `json:"draining"`
}

// Job is one GitHub job as the service saw it.
type Job struct {
	ID          int64     `json:"id"`
	Pool        string    `json:"pool"` // empty when ignored
	Repo        string    `json:"repo"`
	State       string    `json:"state"`
	Reason      string    `json:"reason"` // why it is ignored, waiting or given up
	Runner      string    `json:"runner"`
	Conclusion  string    `json:"conclusion"`
	Labels      []string  `json:"labels"`
	QueuedAt    time.Time `json:"queued_at,omitzero"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
	// Where its time went, zero when unknown. Wait: queued until the runner
	// that took it was launched (for a job still queued: so far, by the
	// service's clock); Boot: from then until in progress; Run: in progress
	// until completed. In JSON, integer nanoseconds.
	Wait time.Duration `json:"wait_ns,omitzero"`
	Boot time.Duration `json:"boot_ns,omitzero"`
	Run  time.Duration `json:"run_ns,omitzero"`
}

// JobFilter selects jobs. Empty fields match all; the handler sets Limit
// (default 50, at most 1000).
type JobFilter struct {
	Pool  string `json:"pool"`
	State string `json:"state"`
	Limit int    `json:"limit"`
}

// JobDetail is a job and its timeline, oldest event first.
type JobDetail struct {
	Job
	Events []Event `json:"events"`
}

// Event is one step of a job's timeline: queued, accepted for a pool or
// ignored (with the reason), launched, runner online, in progress,
// completed, instance deleted, retries and timer actions.
type Event struct {
	At     time.Time `json:"at"`
	Kind   string    `json:"kind"`
	Detail string    `json:"detail"`
}
