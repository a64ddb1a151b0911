package admin

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// MemberBackend is what the admin API needs for LXD's cluster members; a
// Backend that also has it serves the members' routes:
//
//	GET  /api/members                  {"members": [Member...]}
//	POST /api/members/{name}/drain     Member
//	POST /api/members/{name}/undrain   Member
type MemberBackend interface {
	// Members lists LXD's members with our runners on each.
	Members(ctx context.Context) ([]Member, error)
	// SetMemberDrain stops (or resumes) launches on a member: ErrBadRequest
	// for one LXD does not have.
	SetMemberDrain(ctx context.Context, name string, drain bool) (Member, error)
}

// Member is one LXD cluster member (or the standalone server) and what of
// ours it holds.
type Member struct {
	Name         string   `json:"name"`
	Status       string   `json:"status"` // online, evacuated or offline
	Message      string   `json:"message,omitempty"`
	Groups       []string `json:"groups"`
	Architecture string   `json:"architecture"`
	// Drained: an operator drained it here; nothing new is launched there
	// and idle runners there are retired.
	Drained bool `json:"drained"`
	// Our runners there, by state, as the state has them.
	Launching int `json:"launching"`
	Idle      int `json:"idle"`
	Busy      int `json:"busy"`
	Deleting  int `json:"deleting"`
	// Instances of ours there, as LXD lists them.
	Instances int `json:"instances"`
	// Empty: nothing of ours is there and no launch of ours is under way
	// anywhere, so evacuating the member stops nothing of ours.
	Empty bool `json:"empty"`
}

// routeMembers adds the members' routes when the backend has them.
func (h *handler) routeMembers(r chi.Router) {
	mb, ok := h.b.(MemberBackend)
	if !ok {
		return
	}
	r.Get("/api/members", func(w http.ResponseWriter, r *http.Request) {
		ms, err := mb.Members(r.Context())
		if err != nil {
			h.fail(w, r, "members", err)
			return
		}
		if ms == nil {
			ms = []Member{}
		}
		writeJSON(w, http.StatusOK, struct {
			Members []Member `json:"members"`
		}{ms})
	})
	drain := func(on bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			name, ok := pathParam(w, r, "name")
			if !ok {
				return
			}
			m, err := mb.SetMemberDrain(r.Context(), name, on)
			if err != nil {
				h.fail(w, r, "drain member", err)
				return
			}
			h.log.Info().Str("member", name).Bool("drained", on).Str("remote", r.RemoteAddr).Msg("member drain set")
			writeJSON(w, http.StatusOK, m)
		}
	}
	r.Post("/api/members/{name}/drain", drain(true))
	r.Post("/api/members/{name}/undrain", drain(false))
}
