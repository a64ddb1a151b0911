package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
)

// checkLXD asks LXD, with the config's credentials, what no file can say:
// that it answers and has the project, and that some member can run each
// pool's instances (its target, and its architecture or its image's). It
// prints what it found to out and returns every problem, one per line.
func checkLXD(ctx context.Context, cfg *config, out io.Writer) error {
	lx, err := lxd.Connect(ctx, cfg.LXD)
	if err != nil {
		return err
	}
	topo, err := lx.Topology(ctx)
	if err != nil {
		return err
	}
	sc := cfg.App.Scheduler
	arch, archErr := map[string]string{}, map[string]string{}
	var problems []error
	for _, p := range sc.Pools {
		a, err := lx.Architecture(ctx, p.Architecture, p.Image, p.SourceInstance)
		switch {
		case errors.Is(err, fleet.ErrUnreachable):
			return err
		case err != nil:
			archErr[p.Name] = err.Error()
		default:
			arch[p.Name] = a
		}
	}
	var members []string
	groups := map[string]bool{}
	for _, m := range topo.Members {
		s := m.Name + " (" + strings.Join(m.Architectures[:min(1, len(m.Architectures))], "")
		if len(m.Groups) > 0 {
			s += ", @" + strings.Join(m.Groups, " @")
		}
		s += ", " + string(m.Status) + ")"
		members = append(members, s)
		for _, g := range m.Groups {
			groups[g] = true
		}
	}
	kind := "standalone server"
	if topo.Clustered {
		kind = fmt.Sprintf("cluster of %d members", len(topo.Members))
	}
	fmt.Fprintf(out, "lxd %s: %s: %s\n", lx.Address(), kind, strings.Join(members, ", "))
	why := scheduler.Unplaceable(sc, topo, arch, archErr)
	for i, p := range sc.Pools {
		if w, ok := why[p.Name]; ok {
			problems = append(problems, fmt.Errorf("pools[%d] (%s): no LXD member can run its instances, so its jobs would stay queued: %s", i, p.Name, w))
			continue
		}
		fmt.Fprintf(out, "pool %s: placed on LXD members running %s\n", p.Name, arch[p.Name])
	}
	for _, k := range slices.Sorted(maps.Keys(sc.TargetLimits)) {
		g, isGroup := strings.CutPrefix(k, "@")
		_, isMember := topo.Member(k)
		if (isGroup && !groups[g]) || (!isGroup && !isMember) {
			problems = append(problems, fmt.Errorf("limits.targets %q: LXD has no such %s", k, map[bool]string{true: "cluster group", false: "member"}[isGroup]))
		}
	}
	return errors.Join(problems...)
}
