package main

// doctor's checks of the GitHub App: its JWT, installations and runner groups.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghapp"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
	"github.com/rs/zerolog"
)

// checkGitHub: GitHub takes the App's JWT, the App is installed on an
// organization, and each pool's runner group exists there and admits no
// more than its pool. It returns the App's webhook URL at GitHub ("" when
// unknown).
func (d *doctor) checkGitHub(ctx context.Context, cfg *config) string {
	gh, err := ghapp.New(cfg.GitHub, zerolog.Nop())
	if err != nil { // loadConfig checked the same
		d.fail("github app", err.Error(), "")
		return ""
	}
	cctx, cancel := d.ctx(ctx)
	defer cancel()
	app, err := gh.App(cctx)
	switch {
	case errors.Is(err, ghapp.ErrBadCredentials):
		d.fail("github app", fmt.Sprintf("GitHub at %s refused the JWT of App %d", cfg.GitHub.APIURL, cfg.GitHub.AppID),
			"github.app_id must be the App's id (its settings: About) and github.private_key_file one of its private keys (Private keys: Generate)")
	case err != nil:
		d.fail("github app", err.Error(), "is github.api_url ("+cfg.GitHub.APIURL+") right, and GitHub reachable from here?")
	}
	if err != nil {
		d.skip("github installations", "they need the App")
		d.skip("runner groups", "they need the App")
		return ""
	}
	d.ok("github app", "%s (id %d, owner %s): GitHub accepts its JWT", app.Slug, app.ID, app.Owner)
	hookURL, err := gh.WebhookURL(cctx)
	if err != nil {
		d.warn("github app", "cannot read its webhook URL: "+err.Error())
	}

	orgs, err := gh.Installations(cctx)
	switch {
	case err != nil:
		d.fail("github installations", err.Error(), "")
	case len(orgs) == 0:
		d.fail("github installations", "the App is installed on no organization",
			"install it: "+app.HTMLURL+"/installations/new, the organization, All repositories")
	default:
		var where []string
		for _, o := range orgs {
			where = append(where, fmt.Sprintf("%s (installation %d)", o.Login, o.InstallationID))
		}
		d.ok("github installations", "installed on %s", strings.Join(where, ", "))
	}
	if len(orgs) == 0 {
		d.skip("runner groups", "they are read in the organizations the App is installed on")
		return hookURL
	}

	sched := cfg.App.Scheduler.WithDefaults()
	groups := &doctorGroups{gh: gh, orgs: orgs, read: map[string]fleet.RunnerGroup{}}
	found := true
	for _, o := range orgs {
		var seen []string
		for _, p := range sched.Pools {
			if slices.Contains(seen, p.RunnerGroup) {
				continue
			}
			seen = append(seen, p.RunnerGroup)
			name := fmt.Sprintf("runner group %q of %s", p.RunnerGroup, o.Login)
			g, err := groups.RunnerGroup(cctx, o.InstallationID, o.Login, p.RunnerGroup)
			switch {
			case errors.Is(err, fleet.ErrNotFound):
				found = false
				d.fail(name, "does not exist", "create it in the organization's settings (Actions, Runner groups), or name an existing group (pools[].runner_group)")
			case err != nil:
				found = false
				d.fail(name, err.Error(), "")
			default:
				d.ok(name, "found (id %d): %s, public repositories %s", g.ID, groupAccess(g), onOff(g.AllowsPublicRepositories))
			}
		}
	}
	if !found {
		d.skip("runner groups", "what they admit is compared once each exists")
		return hookURL
	}
	warnings, err := scheduler.CheckRunnerGroups(cctx, cfg.App.Scheduler, groups)
	for _, w := range warnings {
		d.warn("runner groups", w)
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			d.fail("runner groups", line, "")
		}
	} else {
		d.ok("runner groups", "each admits no more than its pools")
	}
	return hookURL
}

// isFalse is how LXD reads a boolean key as false.
func isFalse(v string) bool {
	switch strings.ToLower(v) {
	case "false", "0", "no", "off":
		return true
	}
	return false
}

func groupAccess(g fleet.RunnerGroup) string {
	switch g.Visibility {
	case fleet.VisibilitySelected:
		return "selected repositories (" + listUpTo(g.Repositories, 5) + ")"
	case fleet.VisibilityPrivate:
		return "every private repository"
	}
	return "every repository"
}

func listUpTo(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(s[:n], ", "), len(s)-n)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// doctorGroups reads each runner group once for the doctor's own lines
// and for scheduler.CheckRunnerGroups.
type doctorGroups struct {
	gh   *ghapp.Client
	orgs []fleet.Org
	read map[string]fleet.RunnerGroup
}

func (g *doctorGroups) Installations(context.Context) ([]fleet.Org, error) { return g.orgs, nil }

func (g *doctorGroups) RunnerGroup(ctx context.Context, installationID int64, org, name string) (fleet.RunnerGroup, error) {
	k := fmt.Sprint(installationID, "/", org, "/", name)
	if v, ok := g.read[k]; ok {
		return v, nil
	}
	v, err := g.gh.RunnerGroup(ctx, installationID, org, name)
	if err == nil {
		g.read[k] = v
	}
	return v, err
}
