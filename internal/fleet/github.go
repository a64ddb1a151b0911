package fleet

import (
	"context"
	"time"
)

// JITRequest asks GitHub for a just-in-time runner config.
type JITRequest struct {
	InstallationID int64
	Org            string
	Name           string   // runner name == instance name
	Labels         []string // exactly the pool's labels
	// RunnerGroup is the runner group the runner joins, by name: the
	// pool's. Empty: the GitHub client's default group.
	RunnerGroup string
}

// JITRunner is GitHub's answer: the runner record and its single-use config.
type JITRunner struct {
	RunnerID int64
	Config   Secret
}

// RunnerStatus is GitHub's view of one self-hosted runner.
type RunnerStatus struct {
	ID     int64
	Name   string
	Online bool // status == "online"
	Busy   bool
}

// JobStatus is GitHub's view of one workflow job, now.
type JobStatus struct {
	// Status is "queued", "in_progress" or "completed" (or, before it is
	// queued, "waiting", "pending" or "requested").
	Status     string
	Conclusion string // once completed: success, failure, cancelled, ...
	RunnerName string // once a runner took it
}

// Moved reports whether GitHub has moved the job past waiting for a
// runner: a runner took it, or it is over.
func (j JobStatus) Moved() bool {
	return j.Status == string(ActionInProgress) || j.Status == string(ActionCompleted)
}

// GitHub is what the scheduler needs from the GitHub App's REST API.
type GitHub interface {
	GenerateJITConfig(ctx context.Context, req JITRequest) (JITRunner, error)
	// Runner returns ErrNotFound when GitHub has no such runner.
	Runner(ctx context.Context, installationID int64, org string, runnerID int64) (RunnerStatus, error)
	// RemoveRunner deletes the runner record; one that is already gone is
	// success, a busy one ErrRunnerBusy.
	RemoveRunner(ctx context.Context, installationID int64, org string, runnerID int64) error
	// ListRunners returns the organization's self-hosted runners.
	ListRunners(ctx context.Context, installationID int64, org string) ([]RunnerStatus, error)
	// WorkflowJob returns GitHub's view of a job of repo ("owner/name");
	// ErrNotFound when GitHub has no such job there.
	WorkflowJob(ctx context.Context, installationID int64, repo string, jobID int64) (JobStatus, error)
	// Installations returns the organizations the App is installed on,
	// without suspended installations and accounts that are not
	// organizations.
	Installations(ctx context.Context) ([]Org, error)
}

// RunnerGroup is what GitHub enforces about a runner group: whose jobs it
// gives the group's runners. A job goes to any idle runner whose labels
// cover its own, in any group that admits the job's repository.
type RunnerGroup struct {
	ID   int64
	Name string
	// Visibility is "all" (every repository of the organization),
	// "selected" (Repositories) or "private" (every private repository).
	Visibility               string
	AllowsPublicRepositories bool
	Repositories             []string // "owner/name"; read for visibility "selected" only
}

// Runner group visibilities, as GitHub names them.
const (
	VisibilityAll      = "all"
	VisibilitySelected = "selected"
	VisibilityPrivate  = "private"
)

// AppDelivery is one attempt of GitHub to deliver one of the App's
// webhooks, as the App's delivery log lists it.
type AppDelivery struct {
	ID             int64
	GUID           string // X-GitHub-Delivery; redeliveries share it
	DeliveredAt    time.Time
	Redelivery     bool
	Status         string // e.g. "OK", "Invalid HTTP Response: 502"
	StatusCode     int    // 0 when GitHub got no HTTP answer
	Event          string
	Action         string
	InstallationID int64
	RepositoryID   int64
}

// Failed reports whether the receiver did not answer 2xx.
func (d AppDelivery) Failed() bool { return d.StatusCode < 200 || d.StatusCode > 299 }
