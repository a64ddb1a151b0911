package fleet

import (
	"context"
	"errors"
)

// ErrMemberUnreachable is matched by an Instances or Cluster error when
// LXD answered but the cluster member the call needed did not: the
// member is down or cut off. Unlike ErrUnreachable, the rest of the
// cluster works.
var ErrMemberUnreachable = errors.New("lxd cluster member unreachable")

// MemberStatus is what a cluster member can take, reduced to what the
// service acts on.
type MemberStatus string

const (
	MemberOnline MemberStatus = "online"
	// MemberEvacuated: an operator took it out of service (lxc cluster
	// evacuate); LXD places nothing there.
	MemberEvacuated MemberStatus = "evacuated"
	// MemberOffline: it does not answer, to LXD's heartbeats or to this
	// service; its instances cannot be reached.
	MemberOffline MemberStatus = "offline"
)

// Member placement policies (LXD's scheduler.instance): which launches
// may land on a member when it is not named.
const (
	PlacementAll    = "all"    // any launch
	PlacementGroup  = "group"  // only launches that target a group it is in
	PlacementManual = "manual" // only launches that name it
)

// Member is one LXD cluster member, or a standalone LXD server.
type Member struct {
	Name string
	// Architectures it runs: its own first, then its personalities (an
	// x86_64 member runs i686), in LXD's names.
	Architectures []string
	Groups        []string
	Status        MemberStatus
	Message       string // why, in LXD's or the client's words, when not online
	Placement     string // PlacementAll, PlacementGroup or PlacementManual
}

// Topology is where instances can go.
type Topology struct {
	// Clustered is false for a standalone server: then Members holds that
	// one server, and a launch cannot name a target.
	Clustered bool
	Members   []Member
}

// Member returns the named member.
func (t Topology) Member(name string) (Member, bool) {
	for _, m := range t.Members {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// Cluster is what the scheduler reads about LXD's members, to place
// runners itself: on members that can run them, that answer, and that
// no operator is draining.
type Cluster interface {
	// Topology returns the members as LXD has them, with a member this
	// client has found unreachable marked offline.
	Topology(ctx context.Context) (Topology, error)
	// Architecture returns LXD's name of the architecture a pool's
	// instances get: arch itself (an alias such as arm64 is resolved)
	// when set, else the architecture of the image or source instance.
	// The error matches ErrNotFound when that image or instance is
	// missing.
	Architecture(ctx context.Context, arch, image, sourceInstance string) (string, error)
}
