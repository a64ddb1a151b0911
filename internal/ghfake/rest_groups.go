package ghfake

// Runner groups and what they admit, the App's installations and workflow
// jobs: the REST API as GitHub's docs describe it, for the parts the
// service reads.

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// A runner group's visibility: which repositories may use its runners.
const (
	VisibilityAll      = "all"      // every repository of the organization
	VisibilitySelected = "selected" // the repositories selected for it
	VisibilityPrivate  = "private"  // every private repository
)

// RunnerGroupSettings are what an organization owner sets on a runner
// group: whose jobs GitHub gives its runners.
type RunnerGroupSettings struct {
	// Visibility is VisibilityAll (the default), VisibilitySelected or
	// VisibilityPrivate.
	Visibility string
	// AllowsPublicRepositories lets jobs of public repositories reach the
	// group's runners; off unless set, as on GitHub.
	AllowsPublicRepositories bool
	// Repositories ("owner/name") may use the group when Visibility is
	// VisibilitySelected.
	Repositories []string
}

func (g RunnerGroupSettings) check() error {
	switch g.Visibility {
	case "", VisibilityAll, VisibilitySelected, VisibilityPrivate:
	default:
		return fmt.Errorf("visibility %q: want all, selected or private", g.Visibility)
	}
	if len(g.Repositories) > 0 && g.Visibility != VisibilitySelected {
		return errors.New("repositories are selected only with visibility selected")
	}
	return nil
}

type runnerGroup struct {
	id           int64
	name         string
	visibility   string
	allowsPublic bool
	selected     []string // owner/name, for visibility selected
}

func (g *runnerGroup) set(set RunnerGroupSettings) {
	g.visibility = set.Visibility
	if g.visibility == "" {
		g.visibility = VisibilityAll
	}
	g.allowsPublic = set.AllowsPublicRepositories
	g.selected = slices.Clone(set.Repositories)
}

// admits reports whether GitHub gives a job of the repository to the
// group's runners.
func (g *runnerGroup) admits(repo string, public bool) bool {
	if public && !g.allowsPublic {
		return false
	}
	switch g.visibility {
	case VisibilitySelected:
		return slices.ContainsFunc(g.selected, func(r string) bool { return strings.EqualFold(r, repo) })
	case VisibilityPrivate:
		return !public
	}
	return true
}

func (s *Server) groupLocked(id int64) *runnerGroup {
	for _, g := range s.groups {
		if g.id == id {
			return g
		}
	}
	return nil
}

// SetRunnerGroup changes the access settings of a group, as an
// organization owner would. Runners already in the group follow them.
func (s *Server) SetRunnerGroup(name string, set RunnerGroupSettings) error {
	if err := set.check(); err != nil {
		return fmt.Errorf("ghfake: runner group %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.groups {
		if g.name == name {
			g.set(set)
			s.dispatchLocked()
			s.notifyLocked()
			return nil
		}
	}
	return fmt.Errorf("ghfake: no runner group %q", name)
}

type apiRunnerGroup struct {
	ID                       int64   `json:"id"`
	Name                     string  `json:"name"`
	Visibility               string  `json:"visibility"`
	Default                  bool    `json:"default"`
	SelectedRepositoriesURL  *string `json:"selected_repositories_url,omitempty"`
	RunnersURL               string  `json:"runners_url"`
	Inherited                bool    `json:"inherited"`
	AllowsPublicRepositories bool    `json:"allows_public_repositories"`
	RestrictedToWorkflows    bool    `json:"restricted_to_workflows"`
	SelectedWorkflows        []any   `json:"selected_workflows"`
	WorkflowRestrictionsRO   bool    `json:"workflow_restrictions_read_only"`
}

func (s *Server) apiGroup(g *runnerGroup) apiRunnerGroup {
	base := fmt.Sprintf("%sorgs/%s/actions/runner-groups/%d", s.url, s.opts.Org, g.id)
	a := apiRunnerGroup{
		ID: g.id, Name: g.name, Visibility: g.visibility, Default: g.id == 1, AllowsPublicRepositories: g.allowsPublic,
		RunnersURL: base + "/runners", SelectedWorkflows: []any{},
	}
	if g.visibility == VisibilitySelected {
		u := base + "/repositories"
		a.SelectedRepositoriesURL = &u
	}
	return a
}

func (s *Server) handleListGroups(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	var all []apiRunnerGroup
	for _, g := range s.groups {
		all = append(all, s.apiGroup(g))
	}
	s.mu.Unlock()
	lo, hi := paginate(w, r, len(all))
	out := append([]apiRunnerGroup{}, all[lo:hi]...)
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(all), "runner_groups": out})
}

// groupFromPathLocked is the group named by the path's id, or nil.
func (s *Server) groupFromPathLocked(r *http.Request) *runnerGroup {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return nil
	}
	return s.groupLocked(id)
}

func (s *Server) handleGetGroup(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	g := s.groupFromPathLocked(r)
	var out apiRunnerGroup
	if g != nil {
		out = s.apiGroup(g)
	}
	s.mu.Unlock()
	if g == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleGroupRepositories lists the repositories selected for a group
// (none unless its visibility is selected), paged like GitHub.
func (s *Server) handleGroupRepositories(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	g := s.groupFromPathLocked(r)
	var all []hookRepo
	if g != nil {
		for _, full := range g.selected {
			id, ok := s.repoIDs[full]
			if !ok {
				s.next.repo++
				id = s.next.repo
				s.repoIDs[full] = id
			}
			all = append(all, s.repoLocked(full, id, s.repoPublic[full]))
		}
	}
	s.mu.Unlock()
	if g == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	lo, hi := paginate(w, r, len(all))
	out := append([]hookRepo{}, all[lo:hi]...)
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(all), "repositories": out})
}

type apiInstallation struct {
	ID                  int64             `json:"id"`
	Account             hookUser          `json:"account"`
	AppID               int64             `json:"app_id"`
	TargetID            int64             `json:"target_id"`
	TargetType          string            `json:"target_type"`
	RepositorySelection string            `json:"repository_selection"`
	Permissions         map[string]string `json:"permissions"`
	Events              []string          `json:"events"`
	CreatedAt           string            `json:"created_at"`
	UpdatedAt           string            `json:"updated_at"`
	SuspendedAt         *string           `json:"suspended_at"`
}

// handleListInstallations lists the App's installations: on the
// organization the stand-in serves, once the App is installed there, and
// those AddInstallation made.
func (s *Server) handleListInstallations(w http.ResponseWriter, r *http.Request) {
	a := requestApp(r)
	s.mu.Lock()
	var all []apiInstallation
	if a != nil && a == s.current {
		for _, in := range s.installationsLocked() {
			all = append(all, s.apiInstallationLocked(in))
		}
	}
	s.mu.Unlock()
	lo, hi := paginate(w, r, len(all))
	writeJSON(w, http.StatusOK, append([]apiInstallation{}, all[lo:hi]...))
}

// handleGetJob answers GET /repos/{owner}/{repo}/actions/jobs/{id}: 404
// unless the job is one of that repository's.
func (s *Server) handleGetJob(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	repo := r.PathValue("owner") + "/" + r.PathValue("repo")
	s.mu.Lock()
	j := s.jobsByID[id]
	var out hookWorkflowJob
	found := err == nil && j != nil && strings.EqualFold(j.repo, repo)
	if found {
		out = s.workflowJobLocked(j)
	}
	s.mu.Unlock()
	if !found {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, out)
}
