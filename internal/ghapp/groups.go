package ghapp

// What GitHub enforces: the organizations the App is installed on, and the
// access settings of their runner groups.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-github/v62/github"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// Installations returns the organizations the App is installed on, except
// suspended installations and accounts that are not organizations (runner
// groups are an organization's).
func (c *Client) Installations(ctx context.Context) ([]fleet.Org, error) {
	var out []fleet.Org
	err := eachPage(ctx, c, "list installations", 0,
		func(ctx context.Context, gh *github.Client, lo github.ListOptions) ([]*github.Installation, *github.Response, error) {
			return gh.Apps.ListInstallations(ctx, &lo)
		},
		func(in *github.Installation) bool {
			if in.SuspendedAt == nil && strings.EqualFold(in.GetAccount().GetType(), "Organization") {
				out = append(out, fleet.Org{InstallationID: in.GetID(), Login: in.GetAccount().GetLogin()})
			}
			return true
		})
	if err != nil {
		return nil, fmt.Errorf("list the App's installations: %w", err)
	}
	return out, nil
}

// RunnerGroup reads the access settings of the named runner group of an
// org, with its selected repositories when its visibility is "selected".
// A group the org does not have is an error wrapping both
// ErrUnknownRunnerGroup and fleet.ErrNotFound.
func (c *Client) RunnerGroup(ctx context.Context, installationID int64, org, name string) (fleet.RunnerGroup, error) {
	if err := checkTarget(installationID, org); err != nil {
		return fleet.RunnerGroup{}, fmt.Errorf("runner group %q: %w", name, err)
	}
	id, err := c.runnerGroupID(ctx, installationID, org, name)
	if errors.Is(err, ErrUnknownRunnerGroup) {
		return fleet.RunnerGroup{}, notFound{err}
	}
	if err != nil {
		return fleet.RunnerGroup{}, err
	}
	var g *github.RunnerGroup
	err = c.call(ctx, "get runner group", installationID, true, func(ctx context.Context, gh *github.Client) (*github.Response, error) {
		var resp *github.Response
		var err error
		g, resp, err = gh.Actions.GetOrganizationRunnerGroup(ctx, org, id)
		return resp, err
	})
	if statusOf(err) == http.StatusNotFound {
		c.forgetGroup(installationID, org, name) // deleted since it was resolved
		return fleet.RunnerGroup{}, notFound{fmt.Errorf("%w %q (id %d) in %s: %w", ErrUnknownRunnerGroup, name, id, org, err)}
	}
	if err != nil {
		return fleet.RunnerGroup{}, fmt.Errorf("get runner group %q (id %d) in %s: %w", name, id, org, err)
	}
	out := fleet.RunnerGroup{ID: id, Name: g.GetName(), Visibility: g.GetVisibility(), AllowsPublicRepositories: g.GetAllowsPublicRepositories()}
	if out.Visibility != fleet.VisibilitySelected {
		return out, nil
	}
	err = eachPage(ctx, c, "list runner group repositories", installationID,
		func(ctx context.Context, gh *github.Client, lo github.ListOptions) ([]*github.Repository, *github.Response, error) {
			rs, resp, err := gh.Actions.ListRepositoryAccessRunnerGroup(ctx, org, id, &lo)
			if rs == nil {
				return nil, resp, err
			}
			return rs.Repositories, resp, err
		},
		func(r *github.Repository) bool {
			out.Repositories = append(out.Repositories, r.GetFullName())
			return true
		})
	if err != nil {
		return fleet.RunnerGroup{}, fmt.Errorf("list the repositories of runner group %q in %s: %w", name, org, err)
	}
	return out, nil
}

// notFound makes err match fleet.ErrNotFound too, keeping its message: the
// scheduler, which knows only fleet's errors, tells a group that does not
// exist from one that could not be read.
type notFound struct{ error }

func (e notFound) Unwrap() error      { return e.error }
func (notFound) Is(target error) bool { return target == fleet.ErrNotFound }
