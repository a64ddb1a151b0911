package ghfake

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// runnerPath is where the fake runner talks to the stand-in (under the path
// prefix). These endpoints are this package's own protocol, not GitHub's.
const runnerPath = "/_fake/runner"

// maxPollWait caps a fake runner's long poll.
const maxPollWait = 30 * time.Second

// jitWire is the JSON inside the base64 encoded JIT config.
type jitWire struct {
	V          int    `json:"v"`
	URL        string `json:"url"` // stand-in base URL as seen by the runner
	RunnerID   int64  `json:"runner_id"`
	RunnerName string `json:"runner_name"`
	Secret     string `json:"secret"` // per-runner secret, single use
}

// JITConfig is a decoded JIT config. Secret prints as "[redacted]".
type JITConfig struct {
	URL        string
	RunnerID   int64
	RunnerName string
	Secret     fleet.Secret
}

// DecodeJITConfig decodes an encoded_jit_config issued by the stand-in.
func DecodeJITConfig(encoded string) (JITConfig, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return JITConfig{}, errors.New("jit config: not base64") // never echo the input
	}
	var w jitWire
	if err := json.Unmarshal(raw, &w); err != nil {
		return JITConfig{}, errors.New("jit config: not JSON")
	}
	if w.V != 1 || w.URL == "" || w.RunnerID <= 0 || w.Secret == "" {
		return JITConfig{}, errors.New("jit config: missing fields or unknown version")
	}
	return JITConfig{URL: w.URL, RunnerID: w.RunnerID, RunnerName: w.RunnerName, Secret: fleet.Secret(w.Secret)}, nil
}

type connectRequest struct {
	RunnerID int64  `json:"runner_id"`
	Secret   string `json:"secret"`
}

type connectResponse struct {
	Session string `json:"session,omitempty"`
	Hang    bool   `json:"hang,omitempty"`
	Stall   bool   `json:"stall,omitempty"` // online, then silent
}

type pollRequest struct {
	Since  int64 `json:"since"`
	WaitMS int64 `json:"wait_ms"`
}

type pollJob struct {
	ID         int64  `json:"id"`
	RunID      int64  `json:"run_id"`
	Name       string `json:"name"`
	Repo       string `json:"repo"`
	DurationMS int64  `json:"duration_ms"`
}

type pollResponse struct {
	Version int64    `json:"version"`
	State   string   `json:"state"` // idle, assigned, cancelled, removed, done
	Job     *pollJob `json:"job,omitempty"`
}

type completeRequest struct {
	JobID int64 `json:"job_id"`
}

func (s *Server) handleRunnerConnect(w http.ResponseWriter, r *http.Request) {
	var req connectRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad request")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rn := s.runners[req.RunnerID]
	switch {
	case rn == nil:
		writeError(w, http.StatusNotFound, "runner not registered (deleted?)")
		return
	case subtle.ConstantTimeCompare([]byte(rn.secret), []byte(req.Secret)) != 1:
		writeError(w, http.StatusUnauthorized, "bad runner credentials")
		return
	case rn.used:
		writeError(w, http.StatusConflict, "jit config already used")
		return
	}
	rn.used = true
	defer s.notifyLocked()
	if s.hang > 0 {
		s.hang--
		rn.hung = true
		s.log.Info().Int64("runner_id", rn.id).Str("runner_name", rn.name).Msg("runner told to hang")
		writeJSON(w, http.StatusOK, connectResponse{Hang: true})
		return
	}
	rn.connected, rn.os, rn.lastSeen = true, "Linux", time.Now()
	session := randomHex(24)
	s.sessions[session] = rn
	s.log.Info().Int64("runner_id", rn.id).Str("runner_name", rn.name).Msg("runner online")
	stall := s.stall > 0
	if stall {
		s.stall--
		s.log.Info().Int64("runner_id", rn.id).Str("runner_name", rn.name).Msg("runner told to go silent")
	}
	writeJSON(w, http.StatusOK, connectResponse{Session: session, Stall: stall})
}

func sessionOf(r *http.Request) string {
	scheme, v, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if scheme != "Session" {
		return ""
	}
	return v
}

func (s *Server) handleRunnerPoll(w http.ResponseWriter, r *http.Request) {
	var req pollRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad request")
		return
	}
	wait := min(max(time.Duration(req.WaitMS)*time.Millisecond, 0), maxPollWait)
	session := sessionOf(r)
	s.mu.Lock()
	rn := s.sessions[session]
	if rn == nil || session == "" {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "unknown session")
		return
	}
	rn.polling++
	s.dispatchLocked()
	s.notifyLocked()
	timer := time.NewTimer(wait)
	defer timer.Stop()
wait:
	for rn.version <= req.Since {
		ch := rn.wake
		s.mu.Unlock()
		select {
		case <-ch:
			s.mu.Lock()
		case <-timer.C:
			s.mu.Lock()
			break wait
		case <-r.Context().Done():
			s.mu.Lock()
			break wait
		}
	}
	resp := pollResponse{Version: rn.version, State: "idle"}
	if j := rn.job; j != nil && rn.stop == "" {
		resp.State = "assigned"
		resp.Job = &pollJob{ID: j.id, RunID: j.runID, Name: j.name, Repo: j.repo, DurationMS: j.duration.Milliseconds()}
	}
	if rn.stop != "" {
		resp.State = rn.stop
		delete(s.sessions, session) // nothing more to say to this runner
	}
	rn.polling--
	rn.lastSeen = time.Now()
	s.notifyLocked()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleRunnerComplete(w http.ResponseWriter, r *http.Request) {
	var req completeRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad request")
		return
	}
	session := sessionOf(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	rn := s.sessions[session]
	if rn == nil || session == "" {
		writeError(w, http.StatusNotFound, "unknown session")
		return
	}
	j := rn.job
	if j == nil || j.id != req.JobID || j.status != StatusInProgress {
		writeError(w, http.StatusConflict, fmt.Sprintf("job %d is not running on this runner", req.JobID))
		return
	}
	j.status, j.conclusion, j.completedAt = StatusCompleted, ConclusionSuccess, time.Now()
	s.log.Info().Int64("job_id", j.id).Int64("runner_id", rn.id).Str("runner_name", rn.name).Msg("job completed")
	s.enqueueJobEventLocked(j, "completed")
	// JIT runners are single-use: GitHub drops the record after the job.
	s.removeRunnerLocked(rn, stopDone)
	delete(s.sessions, session)
	w.WriteHeader(http.StatusNoContent)
}
