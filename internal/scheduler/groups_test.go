package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// groups is a GroupReader over fixed answers: group settings by org and
// name.
type groups struct {
	orgs    []fleet.Org
	orgsErr error
	byName  map[string]fleet.RunnerGroup // "org/name"
	reads   int
}

func (g *groups) Installations(context.Context) ([]fleet.Org, error) { return g.orgs, g.orgsErr }

func (g *groups) RunnerGroup(_ context.Context, _ int64, org, name string) (fleet.RunnerGroup, error) {
	g.reads++
	if name == "flaky" {
		return fleet.RunnerGroup{}, errors.New("github: 502")
	}
	rg, ok := g.byName[org+"/"+name]
	if !ok {
		return fleet.RunnerGroup{}, fmt.Errorf("runner group %q in %s: %w", name, org, fleet.ErrNotFound)
	}
	return rg, nil
}

func TestCheckRunnerGroups(t *testing.T) {
	acme := fleet.Org{InstallationID: 1, Login: "acme"}
	pool := func(mod func(*Pool)) Config {
		p := Pool{Name: "linux", Labels: []string{"self-hosted", "linux"}, Image: "img"}
		mod(&p)
		return Config{MaxInstances: 1, Pools: []Pool{p}}
	}
	all := fleet.RunnerGroup{ID: 1, Name: "Default", Visibility: fleet.VisibilityAll}
	public := fleet.RunnerGroup{ID: 1, Name: "Default", Visibility: fleet.VisibilityAll, AllowsPublicRepositories: true}
	selected := fleet.RunnerGroup{ID: 1, Name: "Default", Visibility: fleet.VisibilitySelected, Repositories: []string{"acme/app", "acme/tools", "acme/web"}}
	private := fleet.RunnerGroup{ID: 1, Name: "Default", Visibility: fleet.VisibilityPrivate}
	for _, tc := range []struct {
		name  string
		cfg   Config
		group fleet.RunnerGroup
		want  string // the error, "" for none
		warn  string // the one warning, "" for none
	}{
		{"no allow-list, private repositories only", pool(func(*Pool) {}), all, "", ""},
		{"public repositories the pool refuses", pool(func(*Pool) {}), public,
			`pools[0] (linux): runner group "Default" of org acme admits public repositories, which the pool refuses (allow_public_repositories is off): ` +
				`GitHub would give their jobs to the pool's idle runners: turn off public repositories for the group, or set runner_group_policy: warn`, ""},
		{"public repositories the pool takes", pool(func(p *Pool) { p.AllowPublicRepositories = true }), public, "", ""},
		{"public repositories, policy warn", pool(func(p *Pool) { p.RunnerGroupPolicy = PolicyWarn }), public, "",
			`pools[0] (linux): runner group "Default" of org acme admits public repositories, which the pool refuses (allow_public_repositories is off): ` +
				`GitHub would give their jobs to the pool's idle runners (runner_group_policy: warn)`},
		{"allow-list, visibility all", pool(func(p *Pool) { p.Repositories = []string{"acme/app"} }), all,
			`pools[0] (linux): runner group "Default" of org acme admits every repository (visibility all), not only the pool's repositories (acme/app): ` +
				`GitHub would give other repositories' jobs to the pool's idle runners: give the group selected repositories only, or set runner_group_policy: warn`, ""},
		{"allow-list, visibility private", pool(func(p *Pool) { p.Repositories = []string{"acme/app"} }), private,
			`pools[0] (linux): runner group "Default" of org acme admits every private repository (visibility private), not only the pool's repositories (acme/app)`, ""},
		{"allow-list, selected within it", pool(func(p *Pool) { p.Repositories = []string{"acme/app", "tools", "web"} }), selected, "", ""},
		{"allow-list, selected beyond it", pool(func(p *Pool) { p.Repositories = []string{"acme/app"} }), selected,
			`pools[0] (linux): runner group "Default" of org acme admits acme/tools, acme/web, not in the pool's repositories (acme/app): ` +
				`GitHub would give their jobs to the pool's idle runners: remove them from the group, or set runner_group_policy: warn`, ""},
		{"a group that does not exist", pool(func(p *Pool) { p.RunnerGroup = "gpu" }), all,
			`pools[0] (linux): runner group "gpu" of org acme does not exist: runner group "gpu" in acme: not found: create it, or name an existing group, or set runner_group_policy: warn`, ""},
		{"a group that cannot be read", pool(func(p *Pool) { p.RunnerGroup = "flaky" }), all,
			`pools[0] (linux): runner group "flaky" of org acme cannot be checked now: github: 502`, ""},
		{"a group that cannot be read, policy warn", pool(func(p *Pool) { p.RunnerGroup = "flaky"; p.RunnerGroupPolicy = PolicyWarn }), all, "",
			`pools[0] (linux): runner group "flaky" of org acme cannot be checked now: github: 502 (runner_group_policy: warn)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gr := &groups{orgs: []fleet.Org{acme}, byName: map[string]fleet.RunnerGroup{"acme/Default": tc.group}}
			warns, err := CheckRunnerGroups(context.Background(), tc.cfg, gr)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n")):
				t.Fatalf("err = %v\nwant %s", err, tc.want)
			}
			if tc.warn == "" && len(warns) != 0 || tc.warn != "" && (len(warns) != 1 || warns[0] != tc.warn) {
				t.Fatalf("warnings = %q\nwant %q", warns, tc.warn)
			}
			// Only GitHub's failing to answer is worth asking again.
			if got, want := Unchecked(err), strings.Contains(tc.want, "cannot be checked now"); got != want {
				t.Fatalf("Unchecked(%v) = %v", err, got)
			}
		})
	}
}

// Every organization the App is installed on is checked, each group read
// once per organization, and every problem reported, one per line.
func TestCheckRunnerGroupsEveryOrgAndPool(t *testing.T) {
	cfg := Config{MaxInstances: 1, Pools: []Pool{
		{Name: "linux", Labels: []string{"linux"}, Image: "img"},
		{Name: "arm", Labels: []string{"arm"}, Image: "img"},
		{Name: "gpu", Labels: []string{"gpu"}, Image: "img", RunnerGroup: "gpu", Repositories: []string{"ml"}},
	}}
	gr := &groups{
		orgs: []fleet.Org{{InstallationID: 1, Login: "acme"}, {InstallationID: 2, Login: "umbrella"}},
		byName: map[string]fleet.RunnerGroup{
			"acme/Default":     {Visibility: fleet.VisibilityAll},
			"acme/gpu":         {Visibility: fleet.VisibilitySelected, Repositories: []string{"acme/ml"}},
			"umbrella/Default": {Visibility: fleet.VisibilityAll, AllowsPublicRepositories: true},
			"umbrella/gpu":     {Visibility: fleet.VisibilitySelected, Repositories: []string{"umbrella/ml", "umbrella/web"}},
		},
	}
	_, err := CheckRunnerGroups(context.Background(), cfg, gr)
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		`pools[0] (linux): runner group "Default" of org umbrella admits public repositories`,
		`pools[1] (arm): runner group "Default" of org umbrella admits public repositories`,
		`pools[2] (gpu): runner group "gpu" of org umbrella admits umbrella/web, not in the pool's repositories (ml)`,
	}
	if len(lines) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: %s\nwant %s...", i, lines[i], w)
		}
	}
	if gr.reads != 4 {
		t.Errorf("%d group reads, want 4 (two groups in two orgs)", gr.reads)
	}
	if Unchecked(err) {
		t.Fatal("findings are not Unchecked")
	}
	gr.orgsErr = errors.New("502")
	if _, err := CheckRunnerGroups(context.Background(), cfg, gr); err == nil || !strings.Contains(err.Error(), "502") || !Unchecked(err) {
		t.Fatalf("installations unreadable: %v", err)
	}
}

// Pools in one group whose labels are a superset of another's: GitHub may
// give the smaller pool's jobs to the larger's idle runners.
func TestWarningsForLabelSupersets(t *testing.T) {
	cfg := testConfig() // gpu's labels are linux's and gpu, both in the Default group
	ws := cfg.Warnings()
	want := `a job labelled [self-hosted, linux, x64] that pool linux serves can also run on an idle runner of pool gpu (both join runner group "Default"): ` +
		`give pool gpu a runner group of its own (pools[].runner_group), restricted to the repositories that need it`
	if len(ws) != 1 || ws[0] != want {
		t.Fatalf("warnings = %q", ws)
	}
	cfg.Pools[1].RunnerGroup = "gpu-runners"
	if ws := cfg.Warnings(); len(ws) != 0 {
		t.Fatalf("separate groups: warnings = %q", ws)
	}
	same := Config{MaxInstances: 1, Pools: []Pool{
		{Name: "a", Labels: []string{"self-hosted", "Linux"}, Image: "i"},
		{Name: "b", Labels: []string{"linux", "self-hosted"}, Image: "i", RunnerGroup: "default"},
	}}
	if ws := same.Warnings(); len(ws) != 2 {
		t.Fatalf("equal labels, one group: warnings = %q", ws)
	}
}
