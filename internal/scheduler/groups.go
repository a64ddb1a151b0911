package scheduler

// Runner groups: what GitHub enforces, against what the pools decide.
//
// The service launches only for jobs a pool admits (labels, repositories,
// public or not), but GitHub gives a queued job to any idle runner whose
// labels cover the job's, in any runner group that admits the job's
// repository. A job the service ignored can so take a runner launched for
// another job, or a warm one; and a job of one pool can take an idle
// runner of another pool whose labels are a superset. Only the group
// draws a line GitHub keeps.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// ErrUnchecked is matched by every line of CheckRunnerGroups' error that
// says GitHub could not be read (an outage, a timeout), as opposed to a
// group that admits too much or does not exist: asking again later may
// succeed.
var ErrUnchecked = errors.New("cannot be checked now")

// Unchecked reports whether err, from CheckRunnerGroups, holds only
// problems of reading GitHub: then the check is worth trying again.
func Unchecked(err error) bool {
	if err == nil {
		return false
	}
	all := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	}
	for _, e := range all {
		if !errors.Is(e, ErrUnchecked) {
			return false
		}
	}
	return true
}

// GroupReader reads what GitHub enforces: the organizations the App is
// installed on, and their runner groups' access settings. internal/ghapp
// satisfies it.
type GroupReader interface {
	Installations(ctx context.Context) ([]fleet.Org, error)
	RunnerGroup(ctx context.Context, installationID int64, org, name string) (fleet.RunnerGroup, error)
}

// Warnings lists what is valid but likely not meant, in the config file's
// words: pools whose runners join one runner group while one's labels are
// a superset of another's, so that GitHub may give a job that one pool
// serves to an idle runner of the other.
func (c Config) Warnings() []string {
	c = c.WithDefaults()
	var out []string
	for _, serves := range c.Pools {
		for _, takes := range c.Pools {
			if serves.Name == takes.Name || !strings.EqualFold(serves.RunnerGroup, takes.RunnerGroup) ||
				!labelsCover(takes.Labels, serves.Labels) {
				continue
			}
			out = append(out, fmt.Sprintf(
				"a job labelled [%s] that pool %s serves can also run on an idle runner of pool %s (both join runner group %q): "+
					"give pool %s a runner group of its own (pools[].runner_group), restricted to the repositories that need it",
				strings.Join(serves.Labels, ", "), serves.Name, takes.Name, serves.RunnerGroup, takes.Name))
		}
	}
	return out
}

// CheckRunnerGroups reads each pool's runner group in every organization
// the App is installed on, and compares what the group admits with what
// the pool admits. A group that admits public repositories while its pool
// refuses them, or repositories beyond the pool's allow-list, would let
// GitHub give jobs the service ignored to the pool's runners. For a pool
// whose runner_group_policy is refuse, each such finding (or a group that
// cannot be read) is in the error, one per line; for one whose policy is
// warn, it is a warning instead. A line that says only that GitHub could
// not be read matches ErrUnchecked.
func CheckRunnerGroups(ctx context.Context, cfg Config, gh GroupReader) (warnings []string, err error) {
	cfg = cfg.WithDefaults()
	orgs, err := gh.Installations(ctx)
	if err != nil {
		return nil, fmt.Errorf("the App's installations %w", uncheckedError{err})
	}
	if len(orgs) == 0 {
		return []string{"the App is installed on no organization: no runner group to check"}, nil
	}
	type key struct {
		org   fleet.Org
		group string
	}
	read := map[key]fleet.RunnerGroup{}
	readErr := map[key]error{}
	var refusals []error
	for _, o := range orgs {
		for i, p := range cfg.Pools {
			k := key{o, p.RunnerGroup}
			if _, done := read[k]; !done && readErr[k] == nil {
				g, err := gh.RunnerGroup(ctx, o.InstallationID, o.Login, p.RunnerGroup)
				if err != nil {
					if ctx.Err() != nil {
						return nil, fmt.Errorf("runner groups %w", uncheckedError{ctx.Err()})
					}
					readErr[k] = err
				} else {
					read[k] = g
				}
			}
			where := fmt.Sprintf("pools[%d] (%s): runner group %q of org %s", i, p.Name, p.RunnerGroup, o.Login)
			var findings []groupFinding
			switch err := readErr[k]; {
			case errors.Is(err, fleet.ErrNotFound):
				findings = []groupFinding{{problem: "does not exist: " + err.Error(), fix: "create it, or name an existing group"}}
			case err != nil:
				findings = []groupFinding{{problem: uncheckedError{err}.Error(), unchecked: uncheckedError{err}}}
			default:
				findings = compareGroup(p, read[k])
			}
			for _, f := range findings {
				switch {
				case p.RunnerGroupPolicy == PolicyWarn:
					warnings = append(warnings, fmt.Sprintf("%s %s (runner_group_policy: warn)", where, f.problem))
				case f.unchecked != nil:
					refusals = append(refusals, fmt.Errorf("%s %w", where, f.unchecked))
				default:
					refusals = append(refusals, fmt.Errorf("%s %s: %s, or set runner_group_policy: warn", where, f.problem, f.fix))
				}
			}
		}
	}
	return warnings, errors.Join(refusals...)
}

type groupFinding struct {
	problem, fix string
	unchecked    error // GitHub could not be read: the problem is this
}

// uncheckedError is GitHub's failing to answer; it matches ErrUnchecked.
type uncheckedError struct{ err error }

func (e uncheckedError) Error() string      { return ErrUnchecked.Error() + ": " + e.err.Error() }
func (e uncheckedError) Unwrap() error      { return e.err }
func (uncheckedError) Is(target error) bool { return target == ErrUnchecked }

// compareGroup says what g admits that pool p does not.
func compareGroup(p Pool, g fleet.RunnerGroup) []groupFinding {
	var out []groupFinding
	if g.AllowsPublicRepositories && !p.AllowPublicRepositories {
		out = append(out, groupFinding{
			problem: "admits public repositories, which the pool refuses (allow_public_repositories is off): " +
				"GitHub would give their jobs to the pool's idle runners",
			fix: "turn off public repositories for the group"})
	}
	if len(p.Repositories) == 0 {
		return out
	}
	allowed := "the pool's repositories (" + strings.Join(p.Repositories, ", ") + ")"
	switch g.Visibility {
	case fleet.VisibilitySelected:
		var extra []string
		for _, r := range g.Repositories {
			if !repoAllowed(p.Repositories, r) {
				extra = append(extra, r)
			}
		}
		if len(extra) > 0 {
			out = append(out, groupFinding{
				problem: "admits " + listSome(extra, 10) + ", not in " + allowed + ": GitHub would give their jobs to the pool's idle runners",
				fix:     "remove them from the group"})
		}
	case fleet.VisibilityPrivate:
		out = append(out, groupFinding{
			problem: "admits every private repository (visibility private), not only " + allowed +
				": GitHub would give other repositories' jobs to the pool's idle runners",
			fix: "give the group selected repositories only"})
	default: // "all", or anything GitHub adds: assume the widest
		out = append(out, groupFinding{
			problem: fmt.Sprintf("admits every repository (visibility %s), not only %s", g.Visibility, allowed) +
				": GitHub would give other repositories' jobs to the pool's idle runners",
			fix: "give the group selected repositories only"})
	}
	return out
}

// listSome joins at most n of names, saying how many more there are.
func listSome(names []string, n int) string {
	names = slices.Clone(names)
	slices.Sort(names)
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}
