package fleet

import "time"

// RunnerState is where one runner (an instance and its JIT registration)
// is. launching, started, busy and deleting are live: the instance may
// exist and counts against the limits.
type RunnerState string

const (
	RunnerLaunching RunnerState = "launching" // name chosen; JIT config and instance being made
	RunnerStarted   RunnerState = "started"   // instance started; runner not known to have a job
	RunnerBusy      RunnerState = "busy"      // an in_progress event named it
	RunnerDeleting  RunnerState = "deleting"  // teardown decided; instance may still exist
	RunnerDeleted   RunnerState = "deleted"
	RunnerFailed    RunnerState = "failed" // launch failed and was cleaned up
)

// Live reports whether a runner in this state may have an instance.
func (s RunnerState) Live() bool {
	switch s {
	case RunnerLaunching, RunnerStarted, RunnerBusy, RunnerDeleting:
		return true
	}
	return false
}

// DeleteMode is how much care a runner's teardown needs.
type DeleteMode string

const (
	// ModeJobDone: the runner's own job completed. Delete the instance; the
	// JIT runner record is removed by GitHub.
	ModeJobDone DeleteMode = "job_done"
	// ModeSurplus: an idle runner nobody needs. Remove its GitHub record
	// first; GitHub refuses if the runner took a job meanwhile, and then it
	// is kept. Only after a successful removal is the instance deleted, so
	// a runner that just picked up a job is never killed.
	ModeSurplus DeleteMode = "surplus"
	// ModeRegistration: not online or busy within the registration timeout.
	// Ask GitHub first; an online or busy runner is kept.
	ModeRegistration DeleteMode = "registration_timeout"
	// ModeForce: the job ran past max_job_duration, the instance is gone
	// or stopped, or a launch was interrupted before GitHub had a record
	// of its runner. Delete the instance, then remove the GitHub record
	// as far as GitHub allows.
	ModeForce DeleteMode = "force"
)

// Checked reports whether a teardown in this mode asks GitHub before it
// deletes, so that a runner that takes a job meanwhile is claimed back.
func (m DeleteMode) Checked() bool { return m == ModeSurplus || m == ModeRegistration }

// Runner is one runner instance the service decided to launch.
type Runner struct {
	Name           string
	Pool           string
	InstallationID int64
	Org            string
	JobID          int64 // the queued job that caused the launch; not a binding
	RunnerID       int64 // GitHub's runner id, once the JIT config exists
	State          RunnerState
	Reason         string // why it was deleted or failed
	DeleteMode     DeleteMode
	CreatedAt      time.Time
	StartedAt      time.Time
	OnlineAt       time.Time
	BusyAt         time.Time
	EndedAt        time.Time
}

// Live reports whether the runner's instance may exist.
func (r Runner) Live() bool { return r.State.Live() }
