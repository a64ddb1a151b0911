package ghfake

// The App's installations: the one on Org that the stand-in starts with
// (or that the manifest flow's install page makes), and more added,
// suspended and removed while it runs, each with its installation webhook
// as GitHub sends them to every App.

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// token is an installation token: good for its organization's routes
// until it expires.
type token struct {
	org string
	exp time.Time
}

// installation is one installation of the current App.
type installation struct {
	id        int64
	org       string
	orgID     int64
	createdAt time.Time
	suspended bool
	removed   bool
}

// InstallationView is one installation, as a test sees it.
type InstallationView struct {
	ID        int64
	Org       string
	Suspended bool
}

// primaryLocked is the installation on Org, nil while the current App is
// not installed there.
func (s *Server) primaryLocked() *installation {
	if s.current == nil || !s.current.installed {
		return nil
	}
	return &installation{id: s.opts.InstallationID, org: s.opts.Org, orgID: s.orgID,
		createdAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// installationsLocked lists the current App's installations, removed ones
// left out.
func (s *Server) installationsLocked() []*installation {
	var out []*installation
	if p := s.primaryLocked(); p != nil {
		out = append(out, p)
	}
	for _, in := range s.installs {
		if !in.removed {
			out = append(out, in)
		}
	}
	return out
}

// installationLocked returns the installation with this id, or nil.
func (s *Server) installationLocked(id int64) *installation {
	for _, in := range s.installationsLocked() {
		if in.id == id {
			return in
		}
	}
	return nil
}

// installationOfLocked returns the installation on org, or nil.
func (s *Server) installationOfLocked(org string) *installation {
	for _, in := range s.installationsLocked() {
		if strings.EqualFold(in.org, org) {
			return in
		}
	}
	return nil
}

// AddInstallation installs the current App on another organization, as
// its owner's clicking "Install" would, and sends the installation
// webhook (action created). It returns the installation's id.
func (s *Server) AddInstallation(org string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return 0, fmt.Errorf("ghfake: no App to install")
	}
	if s.installationOfLocked(org) != nil {
		return 0, fmt.Errorf("ghfake: the App is already installed on %s", org)
	}
	s.next.install++
	in := &installation{id: s.next.install, org: org, orgID: s.orgID + s.next.install, createdAt: time.Now()}
	s.installs = append(s.installs, in)
	s.log.Info().Int64("installation_id", in.id).Str("org", org).Msg("app installed")
	s.enqueueInstallationEventLocked(in, "created")
	s.notifyLocked()
	return in.id, nil
}

// SuspendInstallation suspends (or unsuspends) an installation added with
// AddInstallation, with its webhook (suspend, unsuspend): a suspended
// installation gets no token.
func (s *Server) SuspendInstallation(id int64, suspended bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.addedLocked(id)
	if in == nil {
		return fmt.Errorf("ghfake: installation %d: not found", id)
	}
	in.suspended = suspended
	action := "unsuspend"
	if suspended {
		action = "suspend"
	}
	s.enqueueInstallationEventLocked(in, action)
	s.notifyLocked()
	return nil
}

// RemoveInstallation uninstalls an installation added with
// AddInstallation, with its webhook (deleted).
func (s *Server) RemoveInstallation(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.addedLocked(id)
	if in == nil {
		return fmt.Errorf("ghfake: installation %d: not found", id)
	}
	in.removed = true
	s.enqueueInstallationEventLocked(in, "deleted")
	s.notifyLocked()
	return nil
}

func (s *Server) addedLocked(id int64) *installation {
	for _, in := range s.installs {
		if in.id == id && !in.removed {
			return in
		}
	}
	return nil
}

// Installations lists the current App's installations.
func (s *Server) Installations() []InstallationView {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []InstallationView
	for _, in := range s.installationsLocked() {
		out = append(out, InstallationView{ID: in.id, Org: in.org, Suspended: in.suspended})
	}
	return out
}

// apiInstallationLocked is an installation as the REST API and webhooks
// show it.
func (s *Server) apiInstallationLocked(in *installation) apiInstallation {
	at := in.createdAt.UTC().Format(time.RFC3339)
	a := apiInstallation{
		ID: in.id, AppID: s.currentAppIDLocked(), TargetID: in.orgID, TargetType: "Organization",
		Account:             hookUser{Login: in.org, ID: in.orgID, Type: "Organization"},
		RepositorySelection: "all",
		Permissions:         map[string]string{"organization_self_hosted_runners": "write", "actions": "read", "metadata": "read"},
		Events:              []string{"workflow_job"},
		CreatedAt:           at, UpdatedAt: at,
	}
	if in.suspended {
		a.SuspendedAt = ts(time.Now())
	}
	return a
}

type installationEvent struct {
	Action       string          `json:"action"`
	Installation apiInstallation `json:"installation"`
	Repositories []any           `json:"repositories,omitempty"`
	Sender       hookUser        `json:"sender"`
}

// enqueueInstallationEventLocked sends an installation webhook, as GitHub
// sends it to every App whatever its subscribed events.
func (s *Server) enqueueInstallationEventLocked(in *installation, action string) {
	ev := installationEvent{Action: action, Installation: s.apiInstallationLocked(in),
		Sender: hookUser{Login: "octocat", ID: 583231, Type: "User"}}
	if action == "created" || action == "deleted" {
		ev.Repositories = []any{}
	}
	payload, err := json.Marshal(ev)
	if err != nil { // cannot happen with these types
		s.log.Error().Err(err).Msg("encode webhook")
		return
	}
	s.enqueueLocked(&delivery{guid: newUUID(), event: "installation", action: action, installationID: in.id, payload: payload})
}
