package ghfake

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v4"
)

type authKind int

const (
	authNone         authKind = iota // fake runner endpoints check their own secret
	authApp                          // App JWT
	authInstallation                 // installation token for the org in the path
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	s.route(mux, "POST /app/installations/{id}/access_tokens", authApp, s.handleAccessToken)
	s.route(mux, "GET /app/hook/deliveries", authApp, s.handleListDeliveries)
	s.route(mux, "POST /app/hook/deliveries/{id}/attempts", authApp, s.handleRedeliver)
	s.route(mux, "GET /orgs/{org}/actions/runner-groups", authInstallation, s.handleListGroups)
	s.route(mux, "POST /orgs/{org}/actions/runners/generate-jitconfig", authInstallation, s.handleGenerateJIT)
	s.route(mux, "GET /orgs/{org}/actions/runners", authInstallation, s.handleListRunners)
	s.route(mux, "GET /orgs/{org}/actions/runners/{id}", authInstallation, s.handleGetRunner)
	s.route(mux, "DELETE /orgs/{org}/actions/runners/{id}", authInstallation, s.handleDeleteRunner)
	s.route(mux, "POST "+runnerPath+"/connect", authNone, s.handleRunnerConnect)
	s.route(mux, "POST "+runnerPath+"/poll", authNone, s.handleRunnerPoll)
	s.route(mux, "POST "+runnerPath+"/complete", authNone, s.handleRunnerComplete)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests[r.Method+" (unmatched)"]++
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "Not Found")
	})
	return mux
}

// route registers h under the path prefix, counting requests by pattern and
// applying the fault hook and authentication first.
func (s *Server) route(mux *http.ServeMux, pattern string, auth authKind, h http.HandlerFunc) {
	method, path, _ := strings.Cut(pattern, " ")
	mux.HandleFunc(method+" "+s.prefix+path, func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		s.mu.Lock()
		s.requests[pattern]++
		fault := s.fault
		s.mu.Unlock()
		if auth == authNone {
			h(w, r)
			return
		}
		s.setAPIHeaders(w)
		if fault != nil {
			if status, hdr, ok := fault(r); ok {
				s.writeFault(w, status, hdr)
				return
			}
		}
		switch auth {
		case authApp:
			if msg := s.checkAppJWT(r); msg != "" {
				writeError(w, http.StatusUnauthorized, msg)
				return
			}
		case authInstallation:
			if !s.checkInstallationToken(r) {
				writeError(w, http.StatusUnauthorized, "Bad credentials")
				return
			}
		}
		h(w, r)
	})
}

func (s *Server) setAPIHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("X-GitHub-Request-Id", strings.ToUpper(randomHex(8)))
	h.Set("X-GitHub-Api-Version-Selected", "2022-11-28")
	h.Set("X-RateLimit-Limit", "5000")
	h.Set("X-RateLimit-Remaining", "4999")
	h.Set("X-RateLimit-Used", "1")
	h.Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
	h.Set("X-RateLimit-Resource", "core")
}

func (s *Server) writeFault(w http.ResponseWriter, status int, hdr http.Header) {
	for k, vs := range hdr {
		w.Header()[http.CanonicalHeaderKey(k)] = vs
	}
	body := map[string]string{"message": http.StatusText(status), "documentation_url": "https://docs.github.com/rest"}
	switch {
	case status == http.StatusForbidden && w.Header().Get("X-RateLimit-Remaining") == "0":
		body["message"] = fmt.Sprintf("API rate limit exceeded for installation ID %d.", s.opts.InstallationID)
		body["documentation_url"] = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-the-primary-rate-limit"
	case status == http.StatusForbidden || status == http.StatusTooManyRequests:
		body["message"] = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
		body["documentation_url"] = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
	}
	writeJSON(w, status, body)
}

// checkAppJWT returns "" when the request carries a valid App JWT, else
// GitHub's complaint.
func (s *Server) checkAppJWT(r *http.Request) string {
	scheme, raw, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return "A JSON web token could not be decoded"
	}
	claims := &jwt.RegisteredClaims{}
	tok, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) {
		return s.opts.AppPublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}))
	if err != nil || !tok.Valid {
		return "A JSON web token could not be decoded"
	}
	if claims.Issuer != strconv.FormatInt(s.opts.AppID, 10) {
		return "'Issuer' claim ('iss') must be the App ID"
	}
	if claims.ExpiresAt == nil || claims.IssuedAt == nil {
		return "'Expiration time' claim ('exp') and 'Issued at' claim ('iat') are required"
	}
	if claims.ExpiresAt.Sub(claims.IssuedAt.Time) > 10*time.Minute {
		return "'Expiration time' claim ('exp') is too far in the future"
	}
	return ""
}

func (s *Server) checkInstallationToken(r *http.Request) bool {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "token") && !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	s.mu.Lock()
	exp, ok := s.tokens[tok]
	s.mu.Unlock()
	return ok && time.Now().Before(exp) && strings.EqualFold(r.PathValue("org"), s.opts.Org)
}

func (s *Server) handleAccessToken(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id != s.opts.InstallationID {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	tok := "ghs_" + randomHex(18)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	s.mu.Lock()
	now := time.Now()
	for t, e := range s.tokens { // forget expired tokens
		if now.After(e) {
			delete(s.tokens, t)
		}
	}
	s.tokens[tok] = exp
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"token":                tok,
		"expires_at":           exp.Format(time.RFC3339),
		"permissions":          map[string]string{"organization_self_hosted_runners": "write", "metadata": "read"},
		"repository_selection": "all",
	})
}

// page parses GitHub's per_page/page parameters.
func page(r *http.Request) (perPage, pageNo int) {
	perPage, pageNo = 30, 1
	if v, err := strconv.Atoi(r.URL.Query().Get("per_page")); err == nil && v > 0 {
		perPage = min(v, 100)
	}
	if v, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && v > 0 {
		pageNo = v
	}
	return perPage, pageNo
}

// paginate returns the [lo, hi) window and sets GitHub's Link header.
func paginate(w http.ResponseWriter, r *http.Request, total int) (lo, hi int) {
	perPage, pageNo := page(r)
	last := max(1, (total+perPage-1)/perPage)
	link := func(p int, rel string) string {
		u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path}
		q := r.URL.Query()
		q.Set("per_page", strconv.Itoa(perPage))
		q.Set("page", strconv.Itoa(p))
		u.RawQuery = q.Encode()
		return fmt.Sprintf("<%s>; rel=%q", u.String(), rel)
	}
	var links []string
	if pageNo > 1 {
		links = append(links, link(min(pageNo-1, last), "prev"))
	}
	if pageNo < last {
		links = append(links, link(pageNo+1, "next"), link(last, "last"))
	}
	if pageNo > 1 {
		links = append(links, link(1, "first"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	lo = min((pageNo-1)*perPage, total)
	hi = min(lo+perPage, total)
	return lo, hi
}

type apiRunnerGroup struct {
	ID                       int64  `json:"id"`
	Name                     string `json:"name"`
	Visibility               string `json:"visibility"`
	Default                  bool   `json:"default"`
	RunnersURL               string `json:"runners_url"`
	Inherited                bool   `json:"inherited"`
	AllowsPublicRepositories bool   `json:"allows_public_repositories"`
	RestrictedToWorkflows    bool   `json:"restricted_to_workflows"`
	SelectedWorkflows        []any  `json:"selected_workflows"`
}

func (s *Server) handleListGroups(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	groups := append([]runnerGroup(nil), s.groups...)
	s.mu.Unlock()
	lo, hi := paginate(w, r, len(groups))
	out := []apiRunnerGroup{}
	for _, g := range groups[lo:hi] {
		out = append(out, apiRunnerGroup{
			ID: g.id, Name: g.name, Visibility: "all", Default: g.id == 1, AllowsPublicRepositories: g.allowsPublic,
			RunnersURL:        fmt.Sprintf("%sorgs/%s/actions/runner-groups/%d/runners", s.url, s.opts.Org, g.id),
			SelectedWorkflows: []any{},
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(groups), "runner_groups": out})
}

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
	var group *runnerGroup
	for i := range s.groups {
		if s.groups[i].id == body.RunnerGroupID {
			group = &s.groups[i]
		}
	}
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
		id: s.next.runner, name: body.Name, labels: labels, group: *group, os: "unknown",
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
	for _, rn := range s.sortedRunnersLocked() {
		if name == "" || strings.EqualFold(name, rn.name) {
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
	return s.runners[id]
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

type apiDelivery struct {
	ID             int64   `json:"id"`
	GUID           string  `json:"guid"`
	DeliveredAt    string  `json:"delivered_at"`
	Redelivery     bool    `json:"redelivery"`
	Duration       float64 `json:"duration"`
	Status         string  `json:"status"`
	StatusCode     int     `json:"status_code"`
	Event          string  `json:"event"`
	Action         *string `json:"action"`
	InstallationID int64   `json:"installation_id"`
	RepositoryID   *int64  `json:"repository_id"`
	ThrottledAt    *string `json:"throttled_at"`
}

// handleListDeliveries lists newest first with cursor pagination, like
// GitHub (Link: <...?cursor=...>; rel="next").
func (s *Server) handleListDeliveries(w http.ResponseWriter, r *http.Request) {
	perPage, _ := page(r)
	var before int64 = -1
	if c := r.URL.Query().Get("cursor"); c != "" {
		v, err := strconv.ParseInt(strings.TrimPrefix(c, "v1_"), 10, 64)
		if err != nil {
			writeError(w, http.StatusUnprocessableEntity, "Invalid cursor")
			return
		}
		before = v
	}
	s.mu.Lock()
	var out []apiDelivery
	more := false
	for i := len(s.deliveries) - 1; i >= 0; i-- {
		d := s.deliveries[i]
		if before >= 0 && d.id >= before {
			continue
		}
		if len(out) == perPage {
			more = true
			break
		}
		out = append(out, d.api(s.opts.InstallationID))
	}
	s.mu.Unlock()
	if more {
		u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path}
		q := url.Values{}
		q.Set("per_page", strconv.Itoa(perPage))
		q.Set("cursor", "v1_"+strconv.FormatInt(out[len(out)-1].ID, 10))
		u.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf("<%s>; rel=\"next\"", u.String()))
	}
	if out == nil {
		out = []apiDelivery{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRedeliver(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.deliveries {
		if d.id == id {
			s.redeliverLocked(d)
			writeJSON(w, http.StatusAccepted, map[string]any{})
			return
		}
	}
	writeError(w, http.StatusNotFound, "Not Found")
}
