package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// GitHubTransport wraps base (http.DefaultTransport when nil) to count every
// GitHub API attempt by route, method and status, time it to the response
// headers, and keep the last X-RateLimit-Remaining. Put it under the GitHub
// client (ghapp.Config.Transport) so that token requests and retries are
// counted too. With a nil m it returns base unchanged.
//
// Labels hold only a route pattern, the method and the status code: never
// the path's ids, the query, a token or any other header value.
func GitHubTransport(base http.RoundTripper, m *Metrics) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	if m == nil {
		return base
	}
	return &ghTransport{base: base, m: m}
}

type ghTransport struct {
	base http.RoundTripper
	m    *Metrics
}

func (t *ghTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	endpoint := EndpointOther
	if req.URL != nil {
		endpoint = endpointOf(req.URL.Path)
	}
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	t.m.ghDuration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
	status := StatusError
	if err == nil && resp != nil {
		status = strconv.Itoa(resp.StatusCode)
		if n, err := strconv.ParseInt(strings.TrimSpace(resp.Header.Get("X-RateLimit-Remaining")), 10, 64); err == nil && n >= 0 {
			t.m.ghRateLimit.WithLabelValues().Set(float64(n))
		}
	}
	t.m.ghRequests.WithLabelValues(endpoint, foldMethod(req.Method), status).Inc()
	return resp, err
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach base.
func (t *ghTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// githubRoutes are the REST routes the service calls, as path segments.
// "{id}" matches a number only; "{org}", "{owner}" and "{repo}" any one
// segment.
var githubRoutes = [][]string{
	{"app", "installations", "{id}", "access_tokens"},
	{"app", "installations", "{id}"},
	{"app", "installations"},
	{"app", "hook", "deliveries"},
	{"app", "hook", "deliveries", "{id}"},
	{"app", "hook", "deliveries", "{id}", "attempts"},
	{"orgs", "{org}", "actions", "runners"},
	{"orgs", "{org}", "actions", "runners", "generate-jitconfig"},
	{"orgs", "{org}", "actions", "runners", "{id}"},
	{"orgs", "{org}", "actions", "runner-groups"},
	{"orgs", "{org}", "actions", "runner-groups", "{id}"},
	{"orgs", "{org}", "actions", "runner-groups", "{id}", "repositories"},
	{"repos", "{owner}", "{repo}", "actions", "jobs", "{id}"},
}

// endpointOf maps a request path to its route pattern, such as
// /orgs/{org}/actions/runners/{id}, or "other". Any base path before the
// route (/api/v3 on GitHub Enterprise Server) is skipped: the first
// position from which the rest of the path is a whole route wins.
func endpointOf(path string) string {
	segs := strings.FieldsFunc(path, func(r rune) bool { return r == '/' })
	for i, s := range segs {
		if s != "app" && s != "orgs" && s != "repos" {
			continue
		}
		for _, r := range githubRoutes {
			if matchRoute(r, segs[i:]) {
				return "/" + strings.Join(r, "/")
			}
		}
	}
	return EndpointOther
}

func matchRoute(route, segs []string) bool {
	if len(route) != len(segs) {
		return false
	}
	for i, r := range route {
		switch r {
		case "{org}", "{owner}", "{repo}":
		case "{id}":
			if _, err := strconv.ParseUint(segs[i], 10, 64); err != nil {
				return false
			}
		default:
			if r != segs[i] {
				return false
			}
		}
	}
	return true
}

func foldMethod(m string) string {
	switch m {
	case "":
		return http.MethodGet // net/http's meaning of an empty method
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead:
		return m
	}
	return "other"
}
