package image

import (
	"context"
	"io"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

// What image builds need from LXD. *lxd.Client satisfies LXD; the check
// is in internal/lxd's tests, since lxd imports nothing of ours but
// fleet. The plain value types LaunchSpec, ExecSpec and ImageInfo stay
// lxd's: lxd cannot import them from here, and fleet is the scheduler's
// domain, which has no use for them.

// Guest runs commands in, and copies files into, a running instance: what
// installing, cleaning and the smoke test use.
type Guest interface {
	// Exec runs a command in name and returns its exit code; a non-zero
	// exit is not an error.
	Exec(ctx context.Context, name string, e lxd.ExecSpec) (int, error)
	// PushFile writes content to path in name, whose directory must exist,
	// owned by uid:gid with mode.
	PushFile(ctx context.Context, name, path string, content io.ReadSeeker, uid, gid int, mode int) error
}

// Instances is the lifecycle of the builder, smoke-test and template
// instances, and what runs in them.
type Instances interface {
	Guest
	// Launch creates spec and starts it.
	Launch(ctx context.Context, spec lxd.LaunchSpec) error
	Start(ctx context.Context, name string) error
	// Stop shuts name down cleanly, waiting at most timeout, then forces
	// it. A stopped instance is success.
	Stop(ctx context.Context, name string, timeout time.Duration) error
	// Status is LXD's status of name: "Running", "Stopped", ...
	Status(ctx context.Context, name string) (string, error)
	// Delete stops name with force and deletes it; a missing one is
	// success.
	Delete(ctx context.Context, name string) error
}

// ImageStore publishes, finds, aliases and deletes images.
type ImageStore interface {
	// Publish makes stopped instance name into an image with these
	// properties and aliases and returns its fingerprint.
	Publish(ctx context.Context, name string, properties map[string]string, aliases []string, compression string) (string, error)
	// Image returns the image an alias or (partial) fingerprint names.
	Image(ctx context.Context, name string) (lxd.ImageInfo, error)
	// Images lists the project's images.
	Images(ctx context.Context) ([]lxd.ImageInfo, error)
	// AliasTarget returns the fingerprint alias points to, or "" when
	// there is no such alias.
	AliasTarget(ctx context.Context, alias string) (string, error)
	// SetAlias points alias at fingerprint, creating or moving it.
	SetAlias(ctx context.Context, alias, fingerprint string) error
	// DeleteImage deletes an image and its aliases; a missing one is
	// success.
	DeleteImage(ctx context.Context, fingerprint string) error
}

// LXD is all of it: what Build and the Rebuilder take.
type LXD interface {
	Instances
	ImageStore
}
