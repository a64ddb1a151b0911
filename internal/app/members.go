package app

import (
	"context"
	"fmt"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

var _ admin.MemberBackend = backend{}

// Members lists LXD's members with what of ours each holds: LXD's listing
// says where our instances are, the state what each runner is doing.
func (b backend) Members(ctx context.Context) ([]admin.Member, error) {
	if b.a.cluster == nil {
		return nil, fmt.Errorf("%w: the service does not read LXD's members", admin.ErrBadRequest)
	}
	topo, err := b.a.cluster.Topology(ctx)
	if err != nil {
		return nil, err
	}
	insts, err := b.a.instances.List(ctx)
	if err != nil {
		return nil, err
	}
	var live []fleet.Runner
	var drained map[string]bool
	err = b.a.st.View(ctx, func(tx fleet.Tx) error {
		if live, err = tx.LiveRunners(); err != nil {
			return err
		}
		drained, err = tx.DrainedMembers()
		return err
	})
	if err != nil {
		return nil, err
	}
	prefix := b.a.sched.Config().NamePrefix
	state := map[string]fleet.RunnerState{}
	for _, r := range live {
		state[r.Name] = r.State
	}
	where := map[string]string{}
	for _, in := range insts {
		if in.Labels.Owner == prefix {
			where[in.Name] = in.Location
		}
	}
	// A launch whose instance LXD does not list yet may be going anywhere.
	pending := false
	for _, r := range live {
		if _, listed := where[r.Name]; r.State == fleet.RunnerLaunching && !listed {
			pending = true
		}
	}
	out := make([]admin.Member, 0, len(topo.Members))
	for _, m := range topo.Members {
		v := admin.Member{Name: m.Name, Status: string(m.Status), Message: m.Message, Groups: m.Groups, Drained: drained[m.Name]}
		if v.Groups == nil {
			v.Groups = []string{}
		}
		if len(m.Architectures) > 0 {
			v.Architecture = m.Architectures[0]
		}
		for name, at := range where {
			if at != m.Name && (topo.Clustered || at != "") {
				continue
			}
			v.Instances++
			switch state[name] {
			case fleet.RunnerLaunching:
				v.Launching++
			case fleet.RunnerStarted:
				v.Idle++
			case fleet.RunnerBusy:
				v.Busy++
			case fleet.RunnerDeleting:
				v.Deleting++
			}
		}
		v.Empty = v.Instances == 0 && !pending
		out = append(out, v)
	}
	return out, nil
}

// SetMemberDrain stops (or resumes) launches on a member; any replica may,
// since drains are the operator's. Busy runners there finish their jobs;
// the leader retires idle ones.
func (b backend) SetMemberDrain(ctx context.Context, name string, drain bool) (admin.Member, error) {
	if b.a.cluster == nil {
		return admin.Member{}, fmt.Errorf("%w: the service does not read LXD's members", admin.ErrBadRequest)
	}
	topo, err := b.a.cluster.Topology(ctx)
	if err != nil {
		return admin.Member{}, err
	}
	if _, ok := topo.Member(name); !ok {
		return admin.Member{}, fmt.Errorf("%w: LXD has no member %q", admin.ErrBadRequest, name)
	}
	if err := b.a.st.Update(ctx, func(tx fleet.Tx) error { return tx.SetMemberDrained(name, drain) }); err != nil {
		return admin.Member{}, err
	}
	b.a.log.Info().Str("member", name).Bool("drained", drain).Msg("member drain changed")
	b.a.sched.Notify()
	ms, err := b.Members(ctx)
	if err != nil {
		return admin.Member{}, err
	}
	for _, m := range ms {
		if m.Name == name {
			return m, nil
		}
	}
	return admin.Member{}, fmt.Errorf("member %s: %w", name, fleet.ErrNotFound)
}
