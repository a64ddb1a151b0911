package ghfake

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake/ghfaketest"
)

// The group endpoints answer what an owner set, in GitHub's shapes, paged.
func TestRunnerGroupSettingsThroughTheAPI(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.RunnerGroups = map[string]int64{"Default": 1, "lxd": 3, "open": 4}
		o.RunnerGroupSettings = map[string]RunnerGroupSettings{
			"lxd":  {Visibility: VisibilitySelected, Repositories: []string{"acme/app", "acme/tools", "acme/web"}},
			"open": {AllowsPublicRepositories: true},
		}
	})
	gh := e.gh()
	g, _, err := gh.Actions.GetOrganizationRunnerGroup(ctx(t), "acme", 3)
	if err != nil {
		t.Fatal(err)
	}
	if g.GetName() != "lxd" || g.GetVisibility() != "selected" || g.GetAllowsPublicRepositories() || g.GetDefault() ||
		!strings.HasSuffix(g.GetSelectedRepositoriesURL(), "/orgs/acme/actions/runner-groups/3/repositories") {
		t.Fatalf("group 3: %v", g)
	}
	g, _, err = gh.Actions.GetOrganizationRunnerGroup(ctx(t), "acme", 4)
	if err != nil || g.GetVisibility() != "all" || !g.GetAllowsPublicRepositories() || g.SelectedRepositoriesURL != nil {
		t.Fatalf("group 4: %v %v", g, err)
	}
	if _, _, err := gh.Actions.GetOrganizationRunnerGroup(ctx(t), "acme", 99); statusOf(err) != 404 {
		t.Fatalf("unknown group: %v", err)
	}
	if _, _, err := gh.Actions.GetOrganizationRunnerGroup(ctx(t), "other", 3); statusOf(err) != 401 {
		t.Fatalf("another org's group: %v", err)
	}

	var names []string
	opts := &github.ListOptions{PerPage: 2}
	for {
		rs, resp, err := gh.Actions.ListRepositoryAccessRunnerGroup(ctx(t), "acme", 3, opts)
		if err != nil {
			t.Fatal(err)
		}
		if rs.GetTotalCount() != 3 {
			t.Fatalf("total_count %d", rs.GetTotalCount())
		}
		for _, r := range rs.Repositories {
			if r.GetID() == 0 || !r.GetPrivate() || r.GetOwner().GetLogin() != "acme" {
				t.Fatalf("repository %v", r)
			}
			names = append(names, r.GetFullName())
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	if strings.Join(names, ",") != "acme/app,acme/tools,acme/web" {
		t.Fatalf("selected repositories %v", names)
	}
	rs, _, err := gh.Actions.ListRepositoryAccessRunnerGroup(ctx(t), "acme", 1, nil)
	if err != nil || rs.GetTotalCount() != 0 || len(rs.Repositories) != 0 {
		t.Fatalf("a visibility-all group's selected repositories: %v %v", rs, err)
	}

	// Changed later: the API says so.
	if err := e.srv.SetRunnerGroup("lxd", RunnerGroupSettings{Visibility: VisibilityPrivate}); err != nil {
		t.Fatal(err)
	}
	if g, _, err := gh.Actions.GetOrganizationRunnerGroup(ctx(t), "acme", 3); err != nil || g.GetVisibility() != "private" {
		t.Fatalf("after the change: %v %v", g, err)
	}
	if err := e.srv.SetRunnerGroup("nope", RunnerGroupSettings{}); err == nil {
		t.Fatal("SetRunnerGroup of an unknown group: no error")
	}
	if err := e.srv.SetRunnerGroup("lxd", RunnerGroupSettings{Visibility: "everyone"}); err == nil {
		t.Fatal("a bad visibility: no error")
	}
	req := e.srv.Requests()
	if req["GET /orgs/{org}/actions/runner-groups/{id}"] != 5 || req["GET /orgs/{org}/actions/runner-groups/{id}/repositories"] != 3 {
		t.Fatalf("requests %v", req)
	}
}

func TestNewChecksGroupSettings(t *testing.T) {
	for name, mod := range map[string]func(*Options){
		"unknown group":  func(o *Options) { o.RunnerGroupSettings = map[string]RunnerGroupSettings{"nope": {}} },
		"bad visibility": func(o *Options) { o.RunnerGroupSettings = map[string]RunnerGroupSettings{"lxd": {Visibility: "x"}} },
		"repos, not selected": func(o *Options) {
			o.RunnerGroupSettings = map[string]RunnerGroupSettings{"lxd": {Repositories: []string{"acme/a"}}}
		},
	} {
		opts := Options{AppID: 1, AppPublicKey: &ghfaketest.AppKey().PublicKey, RunnerGroups: map[string]int64{"Default": 1, "lxd": 3}}
		mod(&opts)
		if s, err := New(opts); err == nil {
			s.Close()
			t.Errorf("%s: no error", name)
		}
	}
}

// The installations list names the organization the stand-in serves; it
// takes the App's JWT, not an installation token.
func TestInstallations(t *testing.T) {
	e := newEnv(t, nil)
	inst, _, err := e.appGH().Apps.ListInstallations(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(inst) != 1 || inst[0].GetID() != 7 || inst[0].GetAccount().GetLogin() != "acme" || inst[0].GetAccount().GetType() != "Organization" ||
		inst[0].GetTargetType() != "Organization" || inst[0].GetAppID() != 42 {
		t.Fatalf("installations: %v", inst)
	}
	if _, _, err := e.gh().Apps.ListInstallations(ctx(t), nil); statusOf(err) != 401 {
		t.Fatalf("with an installation token: %v", err)
	}
}

// GitHub gives a job only to runners of a group that admits its
// repository: selected repositories, or private ones.
func TestDispatchFollowsGroupVisibility(t *testing.T) {
	for _, tc := range []struct {
		set      RunnerGroupSettings
		takes    []string // repositories whose jobs the runner may take
		public   bool
		comments string
	}{
		{RunnerGroupSettings{Visibility: VisibilitySelected, Repositories: []string{"acme/ok"}}, []string{"acme/ok"}, false, "selected"},
		{RunnerGroupSettings{Visibility: VisibilityPrivate, AllowsPublicRepositories: true}, []string{"acme/ok", "acme/other"}, true, "private"},
	} {
		t.Run(tc.comments, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.RunnerGroupSettings = map[string]RunnerGroupSettings{"Default": tc.set} })
			jobs := map[string]int64{}
			for _, repo := range []string{"acme/pub", "acme/other", "acme/ok"} {
				jobs[repo] = e.srv.QueueJob(JobSpec{Labels: []string{"linux"}, Repo: repo, Public: repo == "acme/pub", Duration: 10 * time.Millisecond})
			}
			for i := range tc.takes {
				done, _ := startRunner(t, e.jit(fmt.Sprintf("r%d", i), "linux").GetEncodedJITConfig())
				if err := result(t, done); err != nil {
					t.Fatal(err)
				}
			}
			for repo, id := range jobs {
				j, _ := e.srv.Job(id)
				if want := slices.Contains(tc.takes, repo); (j.Status == StatusCompleted) != want {
					t.Errorf("job of %s is %s; want taken = %v", repo, j.Status, want)
				}
			}
		})
	}
}

// GET /repos/{owner}/{repo}/actions/jobs/{id}: the job as GitHub sees it
// now, and 404 under another repository.
func TestGetJob(t *testing.T) {
	e := newEnv(t, nil)
	gh := e.gh()
	id := e.srv.QueueJob(JobSpec{Labels: []string{"linux"}, Repo: "acme/app"})
	j, _, err := gh.Actions.GetWorkflowJobByID(ctx(t), "acme", "app", id)
	if err != nil || j.GetID() != id || j.GetStatus() != "queued" || j.GetConclusion() != "" || j.GetRunnerName() != "" ||
		strings.Join(j.Labels, ",") != "linux" {
		t.Fatalf("queued job: %v %v", j, err)
	}
	if err := e.srv.CancelJob(id); err != nil {
		t.Fatal(err)
	}
	j, _, err = gh.Actions.GetWorkflowJobByID(ctx(t), "acme", "app", id)
	if err != nil || j.GetStatus() != "completed" || j.GetConclusion() != "cancelled" || j.GetCompletedAt().IsZero() {
		t.Fatalf("cancelled job: %v %v", j, err)
	}
	for _, p := range [][2]string{{"acme", "other"}, {"other", "app"}} {
		if _, _, err := gh.Actions.GetWorkflowJobByID(ctx(t), p[0], p[1], id); statusOf(err) != 404 && statusOf(err) != 401 {
			t.Errorf("%s/%s: %v, want 404 (or 401 for another owner)", p[0], p[1], err)
		}
	}
	if _, _, err := gh.Actions.GetWorkflowJobByID(ctx(t), "acme", "app", 1); statusOf(err) != 404 {
		t.Errorf("unknown job: %v", err)
	}
}
