package fleettest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// Cluster is an in-memory LXD cluster's members: fleet.Cluster with knobs
// for a member's state.
type Cluster struct {
	mu     sync.Mutex
	topo   fleet.Topology
	images map[string]string // image or source instance -> architecture
	err    error
}

var _ fleet.Cluster = (*Cluster)(nil)

// NewCluster returns a cluster of these members, online, all running
// x86_64 (and i686) unless they say otherwise; every image is x86_64
// until SetImage says otherwise.
func NewCluster(members ...fleet.Member) *Cluster {
	c := &Cluster{topo: fleet.Topology{Clustered: true}, images: map[string]string{}}
	for _, m := range members {
		if m.Status == "" {
			m.Status = fleet.MemberOnline
		}
		if len(m.Architectures) == 0 {
			m.Architectures = []string{"x86_64", "i686"}
		}
		if m.Placement == "" {
			m.Placement = fleet.PlacementAll
		}
		c.topo.Members = append(c.topo.Members, m)
	}
	return c
}

func (c *Cluster) Topology(context.Context) (fleet.Topology, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return fleet.Topology{}, c.err
	}
	t := c.topo
	t.Members = slices.Clone(t.Members)
	return t, nil
}

func (c *Cluster) Architecture(_ context.Context, arch, image, source string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if arch != "" {
		return arch, nil
	}
	name := image + source
	a, ok := c.images[name]
	switch {
	case !ok:
		return "x86_64", nil
	case a == "":
		return "", fmt.Errorf("image %s: %w", name, fleet.ErrNotFound)
	}
	return a, nil
}

// NewStandalone returns a standalone LXD server: one member, not
// clustered.
func NewStandalone(name string) *Cluster {
	c := NewCluster(fleet.Member{Name: name})
	c.topo.Clustered = false
	return c
}

// SetStatus sets a member's status, with LXD's message.
func (c *Cluster) SetStatus(member string, st fleet.MemberStatus, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.topo.Members {
		if c.topo.Members[i].Name == member {
			c.topo.Members[i].Status, c.topo.Members[i].Message = st, msg
		}
	}
}

// SetImage gives an image (or source instance) an architecture; "" makes
// it missing.
func (c *Cluster) SetImage(image, arch string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.images[image] = arch
}

// SetError makes Topology fail with err (nil: answer again).
func (c *Cluster) SetError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}
