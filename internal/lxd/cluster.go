package lxd

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"
	"github.com/canonical/lxd/shared/osarch"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

var _ fleet.Cluster = (*Client)(nil)

// probeTimeout bounds the check of an address that stopped answering.
const probeTimeout = 2 * time.Second

// Topology returns LXD's members: a standalone server as one member. A
// member whose own address (one of the client's URLs) stopped answering
// this client is reported offline at once, before LXD's heartbeats notice
// (about 20 s); it is asked again each time, and is online again when it
// answers.
func (c *Client) Topology(ctx context.Context) (fleet.Topology, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	var srv *api.Server
	var members []api.ClusterMember
	err := c.read(ctx, func(s lxdclient.InstanceServer) (err error) {
		if srv, _, err = s.GetServer(); err != nil || !srv.Environment.ServerClustered {
			return err
		}
		members, err = s.GetClusterMembers()
		return err
	})
	if err != nil {
		return fleet.Topology{}, classify(fmt.Errorf("read lxd cluster members: %w", err))
	}
	if !srv.Environment.ServerClustered {
		return fleet.Topology{Members: []fleet.Member{{
			Name: srv.Environment.ServerName, Architectures: srv.Environment.Architectures,
			Status: fleet.MemberOnline, Placement: fleet.PlacementAll,
		}}}, nil
	}
	down := c.recheck(ctx)
	t := fleet.Topology{Clustered: true}
	for _, m := range members {
		fm := fleet.Member{Name: m.ServerName, Architectures: architectures(m.Architecture), Groups: m.Groups,
			Placement: fleet.PlacementAll, Message: m.Message}
		switch m.Status {
		case "Online":
			fm.Status, fm.Message = fleet.MemberOnline, ""
		case "Evacuated":
			fm.Status = fleet.MemberEvacuated
		default:
			fm.Status = fleet.MemberOffline
		}
		if p := m.Config["scheduler.instance"]; p != "" {
			fm.Placement = p
		}
		if why, ok := down[hostOf(m.URL)]; ok && fm.Status != fleet.MemberOffline {
			fm.Status, fm.Message = fleet.MemberOffline, "does not answer at "+m.URL+": "+why
		}
		t.Members = append(t.Members, fm)
	}
	return t, nil
}

// recheck asks each address that stopped answering whether it answers
// again, and returns, by host:port, those that still do not.
func (c *Client) recheck(ctx context.Context) map[string]string {
	out := map[string]string{}
	for _, ep := range c.eps {
		ep.mu.Lock()
		failed := !ep.failedAt.IsZero()
		ep.mu.Unlock()
		if !failed {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, _, err := ep.server(pctx, c.project, "").GetServer()
		cancel()
		c.observe(ep, err)
		if err != nil {
			out[hostOf(ep.addr)] = err.Error()
		} else {
			c.log.Info().Str("address", ep.addr).Msg("lxd: address answers again")
		}
	}
	return out
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Host
}

// architectures is what a member of architecture arch runs: arch, then
// its personalities (x86_64 runs i686), in LXD's names.
func architectures(arch string) []string {
	out := []string{arch}
	id, err := osarch.ArchitectureId(arch)
	if err != nil {
		return out
	}
	ps, _ := osarch.ArchitecturePersonalities(id)
	for _, p := range ps {
		if name, err := osarch.ArchitectureName(p); err == nil {
			out = append(out, name)
		}
	}
	return out
}

// Architecture returns the architecture a pool's instances get, in LXD's
// name: arch when set (aliases such as amd64 or arm64 are resolved), else
// the image's or the source instance's.
func (c *Client) Architecture(ctx context.Context, arch, image, sourceInstance string) (string, error) {
	if arch != "" {
		id, err := osarch.ArchitectureId(strings.TrimSpace(arch))
		if err != nil {
			return "", fmt.Errorf("architecture %q: LXD does not know it", arch)
		}
		return osarch.ArchitectureName(id)
	}
	ctx, cancel := c.call(ctx)
	defer cancel()
	var got string
	err := c.read(ctx, func(s lxdclient.InstanceServer) error {
		if image != "" {
			fp, err := resolveImage(s, image)
			if err != nil {
				return err
			}
			img, _, err := s.GetImage(fp)
			if err != nil {
				return fmt.Errorf("image %s: %w", image, notFound(err))
			}
			got = img.Architecture
			return nil
		}
		inst, _, err := s.GetInstance(sourceInstance)
		if err != nil {
			return fmt.Errorf("source instance %s: %w", sourceInstance, notFound(err))
		}
		got = inst.Architecture
		return nil
	})
	if err != nil {
		return "", classify(fmt.Errorf("architecture: %w", err))
	}
	return got, nil
}
