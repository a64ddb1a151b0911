package fleet

import "time"

// PreparedState is where a prepared instance is.
type PreparedState string

const (
	PreparedCreating PreparedState = "creating" // decided: the instance is being made
	PreparedReady    PreparedState = "ready"    // created and stopped: a job may take it
	PreparedDeleting PreparedState = "deleting" // surplus, its image changed, or too old
)

// Prepared is one prepared instance: created from its pool's image and
// left stopped ahead of any job, holding no secret and no registration.
// It is not a runner, and counts against no runner limit (it costs disk,
// not CPU or memory), only against the pool's prepared count and
// limits.max_prepared. When a job takes it, its row goes and a runner of
// the same name takes its place in the same transaction: from then on it
// is counted, torn down and reconciled as any runner.
type Prepared struct {
	Name   string
	Pool   string
	Image  string // fingerprint of the image it was made from; empty until made
	Member string // the cluster member it is on; empty: standalone, or LXD's choice
	State  PreparedState
	Reason string // why it is being deleted
	// CreatedAt is when it was decided; max_idle_age counts from it.
	CreatedAt time.Time
}

// InstallationState is whether an installation of the App serves its
// organization.
type InstallationState string

const (
	InstallationActive    InstallationState = "active"
	InstallationSuspended InstallationState = "suspended"
	InstallationDeleted   InstallationState = "deleted"
)

// Installation is one installation of the App, as the service last heard
// of it: from GitHub's list of installations, or from an installation
// webhook, whichever replica took it.
type Installation struct {
	ID    int64
	Login string // the organization's login
	State InstallationState
	// At is when this was known; a word of an earlier time changes
	// nothing, so replicas may record out of order.
	At time.Time
}

// Org is the organization it serves.
func (i Installation) Org() Org { return Org{InstallationID: i.ID, Login: i.Login} }
