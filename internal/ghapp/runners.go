package ghapp

// The org's self-hosted runners: JIT configs, runner records and their
// runner group; what satisfies fleet.GitHub.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-github/v62/github"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// GenerateJITConfig registers a JIT runner in the request's runner group
// (the configured default when it names none) and returns its id and
// single-use config. A 5xx answer is not retried: the
// runner may have been created, and the caller retries with a new name.
func (c *Client) GenerateJITConfig(ctx context.Context, req fleet.JITRequest) (fleet.JITRunner, error) {
	if err := checkTarget(req.InstallationID, req.Org); err != nil {
		return fleet.JITRunner{}, fmt.Errorf("generate jit config: %w", err)
	}
	if req.Name == "" || len(req.Labels) == 0 {
		return fleet.JITRunner{}, errors.New("generate jit config: name and labels are required")
	}
	group := req.RunnerGroup
	if group == "" {
		group = c.groupName
	}
	groupID, err := c.runnerGroupID(ctx, req.InstallationID, req.Org, group)
	if err != nil {
		return fleet.JITRunner{}, fmt.Errorf("generate jit config for %s: %w", req.Name, err)
	}
	// Wait for a token of the write budget; a ctx that ends first fails the
	// launch, which backs off and retries: no request is sent.
	if err := c.jitLimit.Wait(ctx); err != nil {
		return fleet.JITRunner{}, fmt.Errorf("generate jit config for %s: rate limiter: %w", req.Name, err)
	}
	var out *github.JITRunnerConfig
	err = c.call(ctx, "generate jit config", req.InstallationID, false, func(ctx context.Context, gh *github.Client) (*github.Response, error) {
		cfg, resp, err := gh.Actions.GenerateOrgJITConfig(ctx, req.Org, &github.GenerateJITConfigRequest{
			Name: req.Name, RunnerGroupID: groupID, Labels: req.Labels,
		})
		out = cfg
		return resp, err
	})
	if err != nil {
		switch statusOf(err) {
		case http.StatusConflict:
			err = fmt.Errorf("%w: %w", ErrRunnerExists, err)
		case http.StatusNotFound, http.StatusUnprocessableEntity:
			c.forgetGroup(req.InstallationID, req.Org, group) // maybe the group went away
		}
		return fleet.JITRunner{}, fmt.Errorf("generate jit config for %s in %s: %w", req.Name, req.Org, err)
	}
	if out == nil || out.GetRunner().GetID() == 0 || out.GetEncodedJITConfig() == "" {
		return fleet.JITRunner{}, fmt.Errorf("generate jit config for %s in %s: answer lacks runner id or config", req.Name, req.Org)
	}
	c.log.Debug().Str("org", req.Org).Str("runner_name", req.Name).Int64("runner_id", out.GetRunner().GetID()).
		Int64("runner_group_id", groupID).Msg("jit runner registered")
	return fleet.JITRunner{RunnerID: out.GetRunner().GetID(), Config: fleet.Secret(out.GetEncodedJITConfig())}, nil
}

// Runner returns GitHub's view of one runner, or an error wrapping
// fleet.ErrNotFound.
func (c *Client) Runner(ctx context.Context, installationID int64, org string, runnerID int64) (fleet.RunnerStatus, error) {
	if err := checkTarget(installationID, org); err != nil {
		return fleet.RunnerStatus{}, fmt.Errorf("get runner %d: %w", runnerID, err)
	}
	var r *github.Runner
	err := c.call(ctx, "get runner", installationID, true, func(ctx context.Context, gh *github.Client) (*github.Response, error) {
		var resp *github.Response
		var err error
		r, resp, err = gh.Actions.GetOrganizationRunner(ctx, org, runnerID)
		return resp, err
	})
	if statusOf(err) == http.StatusNotFound {
		return fleet.RunnerStatus{}, fmt.Errorf("runner %d in %s: %w", runnerID, org, fleet.ErrNotFound)
	}
	if err != nil {
		return fleet.RunnerStatus{}, fmt.Errorf("get runner %d in %s: %w", runnerID, org, err)
	}
	return runnerStatus(r), nil
}

func runnerStatus(r *github.Runner) fleet.RunnerStatus {
	return fleet.RunnerStatus{ID: r.GetID(), Name: r.GetName(), Online: r.GetStatus() == "online", Busy: r.GetBusy()}
}

// RemoveRunner deletes a runner record; one already gone is success. GitHub
// refuses to delete a busy runner: that error wraps ErrRunnerBusy.
func (c *Client) RemoveRunner(ctx context.Context, installationID int64, org string, runnerID int64) error {
	if err := checkTarget(installationID, org); err != nil {
		return fmt.Errorf("remove runner %d: %w", runnerID, err)
	}
	err := c.call(ctx, "remove runner", installationID, true, func(ctx context.Context, gh *github.Client) (*github.Response, error) {
		return gh.Actions.RemoveOrganizationRunner(ctx, org, runnerID)
	})
	if err == nil {
		c.log.Debug().Str("org", org).Int64("runner_id", runnerID).Msg("runner removed")
		return nil
	}
	switch statusOf(err) {
	case http.StatusNotFound:
		return nil
	case http.StatusUnprocessableEntity:
		err = fmt.Errorf("%w: %w", ErrRunnerBusy, err)
	}
	return fmt.Errorf("remove runner %d in %s: %w", runnerID, org, err)
}

// ListRunners returns all the org's self-hosted runners (every page).
func (c *Client) ListRunners(ctx context.Context, installationID int64, org string) ([]fleet.RunnerStatus, error) {
	if err := checkTarget(installationID, org); err != nil {
		return nil, fmt.Errorf("list runners: %w", err)
	}
	var out []fleet.RunnerStatus
	err := eachPage(ctx, c, "list runners", installationID,
		func(ctx context.Context, gh *github.Client, lo github.ListOptions) ([]*github.Runner, *github.Response, error) {
			rs, resp, err := gh.Actions.ListOrganizationRunners(ctx, org, &github.ListRunnersOptions{ListOptions: lo})
			if rs == nil {
				return nil, resp, err
			}
			return rs.Runners, resp, err
		},
		func(r *github.Runner) bool { out = append(out, runnerStatus(r)); return true })
	if err != nil {
		return nil, fmt.Errorf("list runners in %s: %w", org, err)
	}
	return out, nil
}

// maxPages bounds pagination against a misbehaving server.
const maxPages = 1000

// eachPage lists page after page, by GitHub's page numbers, handing each
// item to yield until yield returns false or there is no next page.
func eachPage[T any](ctx context.Context, c *Client, op string, installationID int64,
	list func(context.Context, *github.Client, github.ListOptions) ([]T, *github.Response, error), yield func(T) bool) error {
	opts := github.ListOptions{PerPage: c.pageSize}
	for range maxPages {
		var items []T
		var next int
		err := c.call(ctx, op, installationID, true, func(ctx context.Context, gh *github.Client) (*github.Response, error) {
			var resp *github.Response
			var err error
			items, resp, err = list(ctx, gh, opts)
			if resp != nil {
				next = resp.NextPage
			}
			return resp, err
		})
		if err != nil {
			return err
		}
		for _, it := range items {
			if !yield(it) {
				return nil
			}
		}
		if next == 0 || next <= opts.Page {
			return nil
		}
		opts.Page = next
	}
	return fmt.Errorf("more than %d pages", maxPages)
}

// runnerGroupID resolves a group name for an org, once; the answer is
// cached until a JIT request suggests it went stale.
func (c *Client) runnerGroupID(ctx context.Context, installationID int64, org, name string) (int64, error) {
	key := groupKey{installationID, strings.ToLower(org), name}
	c.mu.Lock()
	id, ok := c.groups[key]
	c.mu.Unlock()
	if ok {
		return id, nil
	}
	// Many jobs queued at once must not all list the groups.
	v, err, _ := c.sf.Do(fmt.Sprintf("%d/%s/%s", installationID, key.org, name), func() (any, error) {
		id, err := c.lookupGroup(ctx, installationID, org, name)
		if err != nil {
			return int64(0), err
		}
		c.mu.Lock()
		c.groups[key] = id
		c.mu.Unlock()
		return id, nil
	})
	if err != nil {
		return 0, err
	}
	return v.(int64), nil
}

func (c *Client) lookupGroup(ctx context.Context, installationID int64, org, name string) (int64, error) {
	var names []string
	var exact, fold int64
	err := eachPage(ctx, c, "list runner groups", installationID,
		func(ctx context.Context, gh *github.Client, lo github.ListOptions) ([]*github.RunnerGroup, *github.Response, error) {
			gs, resp, err := gh.Actions.ListOrganizationRunnerGroups(ctx, org, &github.ListOrgRunnerGroupOptions{ListOptions: lo})
			if gs == nil {
				return nil, resp, err
			}
			return gs.RunnerGroups, resp, err
		},
		func(g *github.RunnerGroup) bool {
			switch {
			case g.GetName() == name:
				exact = g.GetID()
				return false
			case fold == 0 && strings.EqualFold(g.GetName(), name):
				fold = g.GetID()
			}
			names = append(names, g.GetName())
			return true
		})
	if err != nil {
		if s := statusOf(err); (s == http.StatusNotFound || s == http.StatusForbidden) && strings.EqualFold(name, defaultRunnerGroup) {
			// Plans without runner groups still have the default group,
			// whose id is always 1.
			c.log.Warn().Err(err).Str("org", org).Msg("cannot list runner groups; using the default group id 1")
			return 1, nil
		}
		return 0, fmt.Errorf("resolve runner group %q in %s: %w", name, org, err)
	}
	if exact != 0 {
		return exact, nil
	}
	if fold != 0 {
		return fold, nil
	}
	return 0, fmt.Errorf("%w %q in %s (it has: %s)", ErrUnknownRunnerGroup, name, org, strings.Join(names, ", "))
}

func (c *Client) forgetGroup(installationID int64, org, name string) {
	c.mu.Lock()
	delete(c.groups, groupKey{installationID, strings.ToLower(org), name})
	c.mu.Unlock()
}
