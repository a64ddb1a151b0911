package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/rs/zerolog"
)

// Options configure the handler.
type Options struct {
	// Token, when set, is required on every request as
	// "Authorization: Bearer TOKEN".
	Token string
	Clock fleet.Clock // the status page's "ago"; nil: the wall clock
	Log   zerolog.Logger
}

// Limits of GET /api/jobs.
const (
	DefaultJobLimit = 50
	MaxJobLimit     = 1000
)

type handler struct {
	b     Backend
	clock fleet.Clock
	log   zerolog.Logger
}

// NewHandler serves the admin API and the status page:
//
//	GET    /                          status page (HTML)
//	GET    /api/status                Status
//	GET    /api/jobs?pool=&state=&limit=   {"jobs": [Job...]}
//	GET    /api/jobs/{id}             JobDetail
//	POST   /api/pools/{name}/drain    {"pool": name, "draining": true}
//	POST   /api/pools/{name}/undrain  {"pool": name, "draining": false}
//	DELETE /api/instances/{name}      {"instance": name, "deleted": true}
//
// Errors are {"error": "..."} with 400, 401, 403 (cross-origin, or a
// non-loopback Host without a token), 404, 405 or 500.
func NewHandler(b Backend, opts Options) http.Handler {
	if opts.Clock == nil {
		opts.Clock = fleet.WallClock
	}
	h := &handler{b: b, clock: opts.Clock, log: opts.Log.With().Str("component", "admin").Logger()}
	r := chi.NewRouter()
	if opts.Token != "" {
		r.Use(requireToken(opts.Token))
	} else {
		r.Use(loopbackHostOnly)
	}
	r.Get("/", h.page)
	r.Get("/api/status", h.status)
	r.Get("/api/jobs", h.jobs)
	r.Get("/api/jobs/{id}", h.job)
	r.Post("/api/pools/{name}/drain", h.drain(true))
	r.Post("/api/pools/{name}/undrain", h.drain(false))
	r.Delete("/api/instances/{name}", h.deleteInstance)
	h.routeMembers(r)
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "no such route")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	// A listener on loopback without a token is reachable from any web page
	// the operator's browser opens: refuse cross-origin POST and DELETE.
	return http.NewCrossOriginProtection().Handler(r)
}

func requireToken(token string) func(http.Handler) http.Handler {
	// Hashing both sides first keeps the comparison constant-time in the
	// token's length too: ConstantTimeCompare returns early on a length
	// mismatch.
	want := sha256.Sum256([]byte(token))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got, ok := bearer(r.Header.Get("Authorization"))
			sum := sha256.Sum256([]byte(got))
			if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="lxd-gha-autoscaler"`)
				writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// loopbackHostOnly guards a TCP listener without a token against DNS
// rebinding: a web page whose name resolves to 127.0.0.1 could otherwise
// read the API and, being same-origin, drain pools. It refuses a Host
// that is not localhost or a loopback address. Unix sockets, which no
// browser reaches, are left alone.
func loopbackHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := net.SplitHostPort(r.RemoteAddr); err != nil {
			next.ServeHTTP(w, r) // not TCP: a unix socket's peer is "@" or ""
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		ip := net.ParseIP(strings.Trim(host, "[]"))
		if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("host %q refused: without a token the admin API answers only to localhost or a loopback address", r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	st, err := h.b.Status(r.Context())
	if err != nil {
		h.fail(w, r, "status", err)
		return
	}
	writeJSON(w, http.StatusOK, normStatus(st))
}

func (h *handler) jobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := JobFilter{Pool: q.Get("pool"), State: q.Get("state"), Limit: DefaultJobLimit}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxJobLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: want 1 to %d", s, MaxJobLimit))
			return
		}
		f.Limit = n
	}
	jobs, err := h.b.Jobs(r.Context(), f)
	if err != nil {
		h.fail(w, r, "jobs", err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Jobs []Job `json:"jobs"`
	}{normJobs(jobs)})
}

func (h *handler) job(w http.ResponseWriter, r *http.Request) {
	s := chi.URLParam(r, "id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("job id %q: want a positive integer", s))
		return
	}
	d, err := h.b.Job(r.Context(), id)
	if err != nil {
		h.fail(w, r, "job", err)
		return
	}
	d.Job = normJob(d.Job)
	if d.Events == nil {
		d.Events = []Event{}
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *handler) drain(drain bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pool, ok := pathParam(w, r, "name")
		if !ok {
			return
		}
		if err := h.b.SetDrain(r.Context(), pool, drain); err != nil {
			h.fail(w, r, "drain", err)
			return
		}
		h.log.Info().Str("pool", pool).Bool("draining", drain).Str("remote", r.RemoteAddr).Msg("pool drain set")
		writeJSON(w, http.StatusOK, struct {
			Pool     string `json:"pool"`
			Draining bool   `json:"draining"`
		}{pool, drain})
	}
}

func (h *handler) deleteInstance(w http.ResponseWriter, r *http.Request) {
	name, ok := pathParam(w, r, "name")
	if !ok {
		return
	}
	if err := h.b.DeleteInstance(r.Context(), name); err != nil {
		h.fail(w, r, "delete instance", err)
		return
	}
	h.log.Info().Str("instance", name).Str("remote", r.RemoteAddr).Msg("instance deleted by operator")
	writeJSON(w, http.StatusOK, struct {
		Instance string `json:"instance"`
		Deleted  bool   `json:"deleted"`
	}{name, true})
}

// pathParam is a path segment, unescaped: chi matches on the escaped path
// when there is one, so "a%2Fb" arrives as is.
func pathParam(w http.ResponseWriter, r *http.Request, key string) (string, bool) {
	v, err := url.PathUnescape(chi.URLParam(r, key))
	if err != nil || v == "" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad %s in path", key))
		return "", false
	}
	return v, true
}

// fail maps a Backend error to its status.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrBadRequest):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
	default:
		h.log.Error().Err(err).Str("op", op).Msg("admin request failed")
		writeError(w, http.StatusInternalServerError, op+": "+err.Error())
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the status is sent; a write error means the client left
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, struct {
		Error string `json:"error"`
	}{msg})
}

// Empty lists are [] in JSON, not null, so clients need no special case.
func normStatus(st Status) Status {
	if st.Pools == nil {
		st.Pools = []PoolStatus{}
	}
	st.Jobs = normJobs(st.Jobs)
	if st.Checks == nil {
		st.Checks = map[string]string{}
	}
	return st
}

func normJobs(jobs []Job) []Job {
	out := make([]Job, len(jobs))
	for i, j := range jobs {
		out[i] = normJob(j)
	}
	return out
}

func normJob(j Job) Job {
	if j.Labels == nil {
		j.Labels = []string{}
	}
	return j
}
