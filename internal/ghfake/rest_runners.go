package ghfake

// The stand-in's REST API for runners and JIT configs.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

type apiLabel struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
}

type apiRunner struct {
	ID            int64      `json:"id"`
	Name          string     `json:"name"`
	OS            string     `json:"os"`
	Status        string     `json:"status"`
	Busy          bool       `json:"busy"`
	Ephemeral     bool       `json:"ephemeral"`
	RunnerGroupID int64      `json:"runner_group_id"`
	Labels        []apiLabel `json:"labels"`
}

func (s *Server) apiRunnerLocked(rn *runner, now time.Time) apiRunner {
	a := apiRunner{
		ID: rn.id, Name: rn.name, OS: rn.os, Status: s.statusLocked(rn, now), Busy: rn.busy(),
		Ephemeral: true, RunnerGroupID: rn.group.id, Labels: []apiLabel{},
	}
	for _, l := range rn.labels {
		a.Labels = append(a.Labels, apiLabel{ID: s.labelIDLocked(l), Name: l, Type: "custom"})
	}
	return a
}

func (s *Server) labelIDLocked(name string) int64 {
	k := strings.ToLower(name)
	id, ok := s.labelIDs[k]
	if !ok {
		s.next.label++
		id = s.next.label
		s.labelIDs[k] = id
	}
	return id
}

func (s *Server) handleGenerateJIT(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name          string   `json:"name"`
		RunnerGroupID int64    `json:"runner_group_id"`
		Labels        []string `json:"labels"`
		WorkFolder    string   `json:"work_folder"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	var labels []string
	seen := map[string]bool{}
	for _, l := range body.Labels {
		if l = strings.TrimSpace(l); l != "" && !seen[strings.ToLower(l)] {
			seen[strings.ToLower(l)] = true
			labels = append(labels, l)
		}
	}
	switch {
	case strings.TrimSpace(body.Name) == "":
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"name\" wasn't supplied.")
		return
	case len(labels) == 0:
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"labels\" must have at least 1 item.")
		return
	case len(labels) > 100:
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"labels\" must have at most 100 items.")
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	group := s.groupLocked(body.RunnerGroupID)
	if group == nil {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("Runner group %d does not exist.", body.RunnerGroupID))
		return
	}
	for _, rn := range s.runners {
		if strings.EqualFold(rn.name, body.Name) {
			writeError(w, http.StatusConflict, fmt.Sprintf("Already exists - A runner with the name %s already exists.", body.Name))
			return
		}
	}
	s.next.runner++
	rn := &runner{
		id: s.next.runner, org: r.PathValue("org"), name: body.Name, labels: labels, group: group, os: "unknown",
		secret: randomHex(32), createdAt: time.Now(), wake: make(chan struct{}),
	}
	s.runners[rn.id] = rn
	cfg, err := json.Marshal(jitWire{V: 1, URL: s.runnerURL, RunnerID: rn.id, RunnerName: rn.name, Secret: rn.secret})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode jit config")
		return
	}
	s.notifyLocked()
	s.log.Info().Int64("runner_id", rn.id).Str("runner_name", rn.name).Strs("labels", labels).Msg("jit runner registered")
	writeJSON(w, http.StatusCreated, map[string]any{
		"runner":             s.apiRunnerLocked(rn, time.Now()),
		"encoded_jit_config": base64.StdEncoding.EncodeToString(cfg),
	})
}

func (s *Server) sortedRunnersLocked() []*runner {
	out := make([]*runner, 0, len(s.runners))
	for _, rn := range s.runners {
		out = append(out, rn)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (s *Server) handleListRunners(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	s.mu.Lock()
	now := time.Now()
	var all []apiRunner
	org := r.PathValue("org")
	for _, rn := range s.sortedRunnersLocked() {
		if (name == "" || strings.EqualFold(name, rn.name)) && strings.EqualFold(rn.org, org) {
			all = append(all, s.apiRunnerLocked(rn, now))
		}
	}
	s.mu.Unlock()
	lo, hi := paginate(w, r, len(all))
	out := append([]apiRunner{}, all[lo:hi]...)
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(all), "runners": out})
}

func (s *Server) runnerFromPathLocked(r *http.Request) *runner {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return nil
	}
	if rn := s.runners[id]; rn != nil && strings.EqualFold(rn.org, r.PathValue("org")) {
		return rn
	}
	return nil
}

func (s *Server) handleGetRunner(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rn := s.runnerFromPathLocked(r)
	if rn == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, s.apiRunnerLocked(rn, time.Now()))
}

func (s *Server) handleDeleteRunner(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rn := s.runnerFromPathLocked(r)
	if rn == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	if rn.busy() {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("Bad request - Runner %q is still running a job\"", rn.name))
		return
	}
	s.removeRunnerLocked(rn, stopRemoved)
	s.log.Info().Int64("runner_id", rn.id).Str("runner_name", rn.name).Msg("runner deleted")
	w.WriteHeader(http.StatusNoContent)
}
