package ghapp

import (
	"errors"
	"strings"
	"testing"

	"github.com/bradleyfalzon/ghinstallation/v2"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
)

func TestInstallations(t *testing.T) {
	e := newEnv(t, nil, nil)
	orgs, err := e.c.Installations(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(orgs) != 1 || orgs[0] != (fleet.Org{InstallationID: instID, Login: org}) {
		t.Fatalf("installations: %+v", orgs)
	}
	if n := e.fake.Requests()["GET /app/installations"]; n != 1 {
		t.Fatalf("%d list requests", n)
	}
}

// A group's settings as GitHub has them: visibility, public repositories,
// and the selected repositories, every page of them.
func TestRunnerGroupSettings(t *testing.T) {
	e := newEnv(t, func(o *ghfake.Options) {
		o.RunnerGroups["open"] = 4
		o.RunnerGroupSettings = map[string]ghfake.RunnerGroupSettings{
			"lxd-runners": {Visibility: ghfake.VisibilitySelected, Repositories: []string{"acme/a", "acme/b", "acme/c"}},
			"open":        {AllowsPublicRepositories: true},
		}
	}, nil)
	e.c.pageSize = 2
	g, err := e.c.RunnerGroup(ctx(t), instID, org, "lxd-runners")
	if err != nil {
		t.Fatal(err)
	}
	if g.ID != 3 || g.Name != "lxd-runners" || g.Visibility != fleet.VisibilitySelected || g.AllowsPublicRepositories ||
		strings.Join(g.Repositories, ",") != "acme/a,acme/b,acme/c" {
		t.Fatalf("lxd-runners: %+v", g)
	}
	g, err = e.c.RunnerGroup(ctx(t), instID, org, "open")
	if err != nil || g.Visibility != fleet.VisibilityAll || !g.AllowsPublicRepositories || g.Repositories != nil {
		t.Fatalf("open: %+v %v", g, err)
	}
	req := e.fake.Requests()
	if req["GET /orgs/{org}/actions/runner-groups/{id}"] != 2 || req["GET /orgs/{org}/actions/runner-groups/{id}/repositories"] != 2 {
		t.Fatalf("requests %v", req)
	}
	if _, err := e.c.RunnerGroup(ctx(t), instID, org, "nope"); !errors.Is(err, ErrUnknownRunnerGroup) || !errors.Is(err, fleet.ErrNotFound) ||
		!strings.HasPrefix(err.Error(), `unknown runner group "nope" in acme (it has: `) {
		t.Fatalf("unknown group: %v", err)
	}
	// A 502 is not "not found": the group may well exist.
	e.fault(-1, path("GET", "/runner-groups/4"), 502, nil)
	if _, err := e.c.RunnerGroup(ctx(t), instID, org, "open"); err == nil || errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("502: %v", err)
	}
}

// The App as GitHub has it, its webhook URL, and a JWT GitHub refuses.
func TestApp(t *testing.T) {
	e := newEnv(t, func(o *ghfake.Options) { o.WebhookURL = "https://runners.example.com/webhook" }, nil)
	a, err := e.c.App(ctx(t))
	if err != nil || a.ID == 0 || a.Slug == "" || a.Owner != org || !strings.HasSuffix(a.HTMLURL, "/apps/"+a.Slug) {
		t.Fatalf("App = %+v, %v", a, err)
	}
	if u, err := e.c.WebhookURL(ctx(t)); err != nil || u != "https://runners.example.com/webhook" {
		t.Fatalf("WebhookURL = %q, %v", u, err)
	}
	e.c.appID++ // not the App whose key this is
	e.c.app = e.c.newGitHub(ghinstallation.NewAppsTransportFromPrivateKey(e.c.base, e.c.appID, e.c.key))
	if _, err := e.c.App(ctx(t)); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("App with another id: %v, want ErrBadCredentials", err)
	}
}
