package fleet

import (
	"context"
	"time"
)

// InstanceState is what LXD says of an instance, reduced to what the
// service acts on.
type InstanceState string

const (
	InstanceRunning InstanceState = "running"
	InstanceStopped InstanceState = "stopped"
	// InstanceError is LXD's "Error": it cannot tell, most often because
	// the cluster member that holds the instance does not answer.
	InstanceError InstanceState = "error"
	// InstanceOther is any other status (starting, frozen, ...).
	InstanceOther InstanceState = "other"
)

// InstanceLabels are the bookkeeping labels every runner instance carries,
// so that LXD alone can tell which instances are ours and what for, even
// with no state at all. internal/lxd alone knows how they are stored.
type InstanceLabels struct {
	Owner          string // the deployment's runner_prefix: several may share a project
	Pool           string
	JobID          int64 // the job whose queued event caused the launch
	RunnerID       int64 // GitHub's id of the JIT runner
	Org            string
	InstallationID int64
	CreatedAt      time.Time
}

// InstanceSpec is everything needed to create and start one runner instance.
type InstanceSpec struct {
	Name           string
	Image          string // local image alias or fingerprint; or
	SourceInstance string // an instance to copy, like `lxc copy --ephemeral`
	Type           string // "container" or "virtual-machine"
	Architecture   string // e.g. "aarch64"; empty means any
	Target         string // cluster member or "@group"; empty lets LXD choose
	Profiles       []string
	Config         map[string]string // the pool's own instance config
	Labels         InstanceLabels
	JITConfig      Secret // stored under KeyJITConfig
}

// Instance is what LXD reports about one instance.
type Instance struct {
	Name    string
	Managed bool // carries KeyManaged: made by a service like this one
	Labels  InstanceLabels
	State   InstanceState
	// Location is the cluster member that holds it; empty when LXD is
	// not clustered.
	Location string
	// Image is the fingerprint of the image it was made from; empty for
	// a copy of an instance.
	Image string
}

// Running reports whether LXD says the instance runs.
func (i Instance) Running() bool { return i.State == InstanceRunning }

// Instances creates, deletes and lists runner instances in LXD.
type Instances interface {
	// Create creates the instance as ephemeral and starts it.
	Create(ctx context.Context, spec InstanceSpec) error
	// Delete stops the instance with force and deletes it. An instance that
	// is already gone is success.
	Delete(ctx context.Context, name string) error
	// List returns the managed instances in the configured project.
	List(ctx context.Context) ([]Instance, error)
	// Get returns one instance, managed or not; ErrNotFound when it does
	// not exist.
	Get(ctx context.Context, name string) (Instance, error)

	// Prepare creates the instance as ephemeral and leaves it stopped:
	// made from its image, with its labels, holding no JIT config
	// (spec.JITConfig must be empty) and no registration. It costs disk,
	// not CPU or memory.
	Prepare(ctx context.Context, spec InstanceSpec) error
	// StartPrepared gives a prepared instance its runner (labels and the
	// JIT config) and starts it: a launch whose create was done ahead of
	// time. When the start fails the instance is deleted.
	StartPrepared(ctx context.Context, name string, labels InstanceLabels, jit Secret) error
	// ImageFingerprint returns the fingerprint an image alias (or a
	// fingerprint's prefix) stands for now; ErrNotFound when none.
	ImageFingerprint(ctx context.Context, image string) (string, error)
}
