// Package fleet is the service's domain: the jobs GitHub asks runners for,
// the runners and instances the service makes for them, the deliveries
// that tell it so, and the ports through which the scheduler reaches the
// state, LXD and GitHub. It imports nothing of ours; every adapter
// (store, lxd, ghapp, webhook, redeliver, metrics, admin) imports it and
// none imports another, so each can be read, replaced and tested alone.
//
// Fakes of the ports, shared by every package's tests, are in fleettest.
package fleet

import "errors"

// ErrNotFound is matched (errors.Is) by every port's error for a thing
// that does not exist, or no longer does: a job or runner row, an LXD
// instance or image, a GitHub runner.
var ErrNotFound = errors.New("not found")

// ErrUnreachable is matched by an Instances error when LXD did not answer:
// the daemon is down or went away during the call, so what it did is not
// known until it is asked again.
var ErrUnreachable = errors.New("lxd unreachable")

// ErrRunnerBusy is returned by GitHub.RemoveRunner when GitHub refuses to
// remove a runner because it is running a job.
var ErrRunnerBusy = errors.New("runner is busy")

// Secret holds a value that must never be printed: a JIT config. Formatting
// it with any verb, or marshalling it, gives a placeholder; Reveal gives the
// value to the one place that needs it (the instance config).
type Secret string

// Redacted is what a Secret prints as.
const Redacted = "[redacted]"

func (Secret) String() string               { return Redacted }
func (Secret) GoString() string             { return Redacted }
func (s Secret) Reveal() string             { return string(s) }
func (Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// The instance config keys a runner image reads from inside, through
// /dev/lxd/sock: the contract between the service and its images. The
// bookkeeping labels beside them are internal/lxd's business alone.
const (
	// KeyManaged is "true" on every runner instance; an image's bootstrap
	// acts only where it is set, so a template or a builder never runs a
	// runner or powers itself off.
	KeyManaged = "user.runner.managed"
	// KeyJITConfig holds the runner's single-use JIT config.
	KeyJITConfig = "user.runner.jitconfig"
)

// ErrNotLeader is returned for a write or an outside call made by a
// replica that does not hold the leadership (any more): only the leader
// decides and acts.
var ErrNotLeader = errors.New("not the leader")
