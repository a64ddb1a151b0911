package ghfake

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v4"
)

type authKind int

const (
	authNone         authKind = iota // fake runner endpoints check their own secret
	authAPINone                      // the REST API without authentication (the manifest conversion)
	authApp                          // App JWT
	authInstallation                 // installation token for the org (or repository owner) in the path
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	s.route(mux, "POST /app/installations/{id}/access_tokens", authApp, s.handleAccessToken)
	s.route(mux, "GET /app/hook/deliveries", authApp, s.handleListDeliveries)
	s.route(mux, "POST /app/hook/deliveries/{id}/attempts", authApp, s.handleRedeliver)
	s.route(mux, "GET /app/installations", authApp, s.handleListInstallations)
	s.route(mux, "GET /orgs/{org}/actions/runner-groups", authInstallation, s.handleListGroups)
	s.route(mux, "GET /orgs/{org}/actions/runner-groups/{id}", authInstallation, s.handleGetGroup)
	s.route(mux, "GET /orgs/{org}/actions/runner-groups/{id}/repositories", authInstallation, s.handleGroupRepositories)
	s.route(mux, "GET /repos/{owner}/{repo}/actions/jobs/{id}", authInstallation, s.handleGetJob)
	s.route(mux, "POST /orgs/{org}/actions/runners/generate-jitconfig", authInstallation, s.handleGenerateJIT)
	s.route(mux, "GET /orgs/{org}/actions/runners", authInstallation, s.handleListRunners)
	s.route(mux, "GET /orgs/{org}/actions/runners/{id}", authInstallation, s.handleGetRunner)
	s.route(mux, "DELETE /orgs/{org}/actions/runners/{id}", authInstallation, s.handleDeleteRunner)
	s.route(mux, "POST "+runnerPath+"/connect", authNone, s.handleRunnerConnect)
	s.route(mux, "POST "+runnerPath+"/poll", authNone, s.handleRunnerPoll)
	s.route(mux, "POST "+runnerPath+"/complete", authNone, s.handleRunnerComplete)
	s.webRoutes(mux)
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
		fault, delay := s.fault, s.latency[pattern]
		s.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
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
			app, msg := s.checkAppJWT(r)
			if msg != "" {
				writeError(w, http.StatusUnauthorized, msg)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), appKey{}, app))
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

// checkAppJWT returns the App whose valid JWT the request carries, or
// GitHub's complaint.
func (s *Server) checkAppJWT(r *http.Request) (*fakeApp, string) {
	scheme, raw, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return nil, "A JSON web token could not be decoded"
	}
	claims := &jwt.RegisteredClaims{}
	var app *fakeApp
	tok, err := jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		// The issuer names the App, whose key must have signed it.
		id, _ := strconv.ParseInt(t.Claims.(*jwt.RegisteredClaims).Issuer, 10, 64)
		s.mu.Lock()
		app = s.apps[id]
		s.mu.Unlock()
		if app == nil {
			return nil, errors.New("no such App")
		}
		return app.key, nil
	}, jwt.WithValidMethods([]string{"RS256"}))
	if app == nil && err != nil && claims.Issuer != "" {
		return nil, "'Issuer' claim ('iss') must be the App ID"
	}
	if err != nil || !tok.Valid {
		return nil, "A JSON web token could not be decoded"
	}
	if claims.ExpiresAt == nil || claims.IssuedAt == nil {
		return nil, "'Expiration time' claim ('exp') and 'Issued at' claim ('iat') are required"
	}
	if claims.ExpiresAt.Sub(claims.IssuedAt.Time) > 10*time.Minute {
		return nil, "'Expiration time' claim ('exp') is too far in the future"
	}
	return app, ""
}

func (s *Server) checkInstallationToken(r *http.Request) bool {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "token") && !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	s.mu.Lock()
	t, ok := s.tokens[tok]
	s.mu.Unlock()
	owner := r.PathValue("org")
	if owner == "" {
		owner = r.PathValue("owner")
	}
	return ok && time.Now().Before(t.exp) && strings.EqualFold(owner, t.org)
}

func (s *Server) handleAccessToken(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || !s.installed(r) {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	s.mu.Lock()
	in := s.installationLocked(id)
	if in == nil || in.removed {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	if in.suspended {
		s.mu.Unlock()
		writeError(w, http.StatusForbidden, "This installation has been suspended")
		return
	}
	tok := "ghs_" + randomHex(18)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	now := time.Now()
	for t, e := range s.tokens { // forget expired tokens
		if now.After(e.exp) {
			delete(s.tokens, t)
		}
	}
	s.tokens[tok] = token{org: in.org, exp: exp}
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
