package scheduler

import (
	"context"
	"errors"
	"time"
)

// The scheduler owns the small interfaces it needs from LXD and GitHub;
// internal/lxd and internal/ghapp satisfy them. Keeping them here is what
// lets the scheduler be tested with in-memory fakes and a fake clock.

// Instance config keys that mark an LXD instance as ours. LXD alone can then
// tell which instances this service created, even with no state at all.
const (
	KeyManaged   = "user.runner.managed"    // "true" on every instance we create
	KeyOwner     = "user.runner.owner"      // the deployment's name prefix: several may share a project
	KeyPool      = "user.runner.pool"       // pool name
	KeyJobID     = "user.runner.job-id"     // the job whose queued event caused the launch
	KeyCreatedAt = "user.runner.created-at" // RFC 3339, UTC
	KeyRunnerID  = "user.runner.runner-id"  // GitHub runner id of the JIT runner
	KeyOrg       = "user.runner.org"        // organization the runner is registered in
	KeyInstall   = "user.runner.installation-id"
	KeyJITConfig = "user.runner.jitconfig" // read from inside through /dev/lxd/sock
)

// ErrNotFound is returned by Instances and GitHub implementations when the
// thing asked about does not exist (any more).
var ErrNotFound = errors.New("not found")

// ErrUnreachable is matched by Instances errors when LXD did not answer:
// the daemon is down or went away during the call, so what it did is not
// known until it is asked again.
var ErrUnreachable = errors.New("lxd unreachable")

// ErrRunnerBusy is returned by GitHub.RemoveRunner when GitHub refuses to
// remove a runner because it is running a job.
var ErrRunnerBusy = errors.New("runner is busy")

// Secret holds a value that must never be printed: a JIT config. Formatting
// it with any verb prints a placeholder; Reveal gives the value to the one
// place that needs it (the instance config).
type Secret string

func (Secret) String() string               { return "[redacted]" }
func (Secret) GoString() string             { return "[redacted]" }
func (s Secret) Reveal() string             { return string(s) }
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// InstanceSpec is everything needed to create and start one runner instance.
type InstanceSpec struct {
	Name           string
	Image          string // local image alias or fingerprint; or
	SourceInstance string // an instance to copy, like `lxc copy --ephemeral`
	Type           string // "container" or "virtual-machine"
	Architecture   string // e.g. "aarch64"; empty means any
	Target         string // cluster member or "@group"; empty lets LXD choose
	Profiles       []string
	Config         map[string]string // pool config plus the user.runner.* labels
	JITConfig      Secret            // stored as KeyJITConfig
}

// Instance is what LXD reports about one of our instances.
type Instance struct {
	Name      string
	Owner     string // KeyOwner: which deployment made it
	Pool      string
	JobID     int64
	RunnerID  int64
	Org       string
	InstallID int64
	Status    string // LXD status: "Running", "Stopped", ...
	CreatedAt time.Time
}

// Instances creates, deletes and lists our LXD instances.
type Instances interface {
	// Create creates the instance as ephemeral and starts it.
	Create(ctx context.Context, spec InstanceSpec) error
	// Delete stops the instance with force and deletes it. An instance that
	// is already gone is success.
	Delete(ctx context.Context, name string) error
	// List returns the instances that carry KeyManaged, in the configured project.
	List(ctx context.Context) ([]Instance, error)
	// Get returns one instance, ours or not; ErrNotFound when it does not exist.
	Get(ctx context.Context, name string) (Instance, error)
}

// JITRequest asks GitHub for a just-in-time runner config.
type JITRequest struct {
	InstallationID int64
	Org            string
	Name           string   // runner name == instance name
	Labels         []string // exactly the pool's labels
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

// GitHub is what the scheduler needs from the GitHub App's REST API.
type GitHub interface {
	GenerateJITConfig(ctx context.Context, req JITRequest) (JITRunner, error)
	// Runner returns ErrNotFound when GitHub has no such runner.
	Runner(ctx context.Context, installationID int64, org string, runnerID int64) (RunnerStatus, error)
	// RemoveRunner deletes the runner record; one that is already gone is success.
	RemoveRunner(ctx context.Context, installationID int64, org string, runnerID int64) error
	// ListRunners returns the organization's self-hosted runners.
	ListRunners(ctx context.Context, installationID int64, org string) ([]RunnerStatus, error)
}

// Metrics is what the scheduler reports; internal/metrics satisfies it.
// Labels are pool names from the config and short fixed codes only.
type Metrics interface {
	JobQueued(pool string)
	JobIgnored(reason string)
	JobStarted(pool string, queueWait time.Duration)
	JobCompleted(pool, conclusion string, runTime time.Duration)
	Launch(pool, result string, d time.Duration)
	RunnerReady(pool string, d time.Duration)
	Teardown(pool, reason string)
	ReconcileAction(kind string)
	ReconcileError()
	ReconcileDone(t time.Time)
}

type nopMetrics struct{}

func (nopMetrics) JobQueued(string)                           {}
func (nopMetrics) JobIgnored(string)                          {}
func (nopMetrics) JobStarted(string, time.Duration)           {}
func (nopMetrics) JobCompleted(string, string, time.Duration) {}
func (nopMetrics) Launch(string, string, time.Duration)       {}
func (nopMetrics) RunnerReady(string, time.Duration)          {}
func (nopMetrics) Teardown(string, string)                    {}
func (nopMetrics) ReconcileAction(string)                     {}
func (nopMetrics) ReconcileError()                            {}
func (nopMetrics) ReconcileDone(time.Time)                    {}
