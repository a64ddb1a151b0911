package main

// setup's one-page form on loopback and GitHub's redirect back to it.

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

type setupResult struct {
	message string
	err     error
}

// setupHandler serves the form and takes GitHub's answer, once.
type setupHandler struct {
	p    *setupPlan
	once sync.Mutex
	used bool
	done chan setupResult
}

func (h *setupHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Only this machine's browser: refuse a page whose name resolves to
	// 127.0.0.1 (DNS rebinding).
	host := r.Host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		host = hh
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		http.Error(w, "setup answers on loopback only", http.StatusForbidden)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// No script; the one form may go to GitHub only.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action "+h.p.web.Scheme+"://"+h.p.web.Host+"; frame-ancestors 'none'")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		h.form(w)
	case r.Method == http.MethodGet && r.URL.Path == "/callback":
		h.callback(w, r)
	default:
		http.NotFound(w, r)
	}
}

var setupPage = template.Must(template.New("setup").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lxd-gha-autoscaler setup</title>
<style>body{font:15px/1.5 system-ui,sans-serif;margin:2em;max-width:46em;color:#222}
th{text-align:left;padding-right:1em;vertical-align:top}td{font-family:monospace}
button{font-size:1.05em;padding:.4em 1em}.err{color:#c62828}</style></head>
<body><h1>{{.Title}}</h1>
{{if .Form}}<p>This creates the service's GitHub App on {{.Host}}, owned by {{.Org}}. GitHub asks you to confirm,
then sends you back here, and the command that serves this page writes the App's key and webhook secret.</p>
<table>
<tr><th>name</th><td>{{.Name}}</td></tr>
<tr><th>webhook URL</th><td>{{.Hook}}</td></tr>
<tr><th>permissions</th><td>{{.Permissions}}</td></tr>
<tr><th>events</th><td>{{.Events}}</td></tr>
</table>
<form method="post" action="{{.Action}}">
<input type="hidden" name="manifest" value="{{.Manifest}}">
<p><button type="submit" id="create">Create the GitHub App on {{.Host}}</button></p>
</form>
{{else}}<p id="result"{{if .Error}} class="err"{{end}}>{{.Text}}</p>
{{if .Install}}<p><a id="install" href="{{.Install}}">{{.Install}}</a></p>{{end}}
{{end}}</body></html>
`))

type setupPageData struct {
	Title, Text, Install                                         string
	Error, Form                                                  bool
	Host, Org, Name, Hook, Permissions, Events, Action, Manifest string
}

func (h *setupHandler) form(w http.ResponseWriter) {
	var m struct {
		Permissions map[string]string `json:"default_permissions"`
		Events      []string          `json:"default_events"`
	}
	_ = json.Unmarshal(h.p.manifest, &m) // ours, filled in
	var perms []string
	for k, v := range m.Permissions {
		perms = append(perms, k+": "+v)
	}
	slices.Sort(perms)
	action := h.p.web.String() + "/organizations/" + url.PathEscape(h.p.org) + "/settings/apps/new?state=" + h.p.state
	h.page(w, http.StatusOK, setupPageData{Title: "Create the GitHub App", Form: true, Host: h.p.web.Host, Org: h.p.org,
		Name: h.p.name, Hook: h.p.webhookURL, Permissions: strings.Join(perms, ", "), Events: strings.Join(m.Events, ", "),
		Action: action, Manifest: string(h.p.manifest)})
}

func (h *setupHandler) page(w http.ResponseWriter, status int, d setupPageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = setupPage.Execute(w, d)
}

// callback takes GitHub's redirect: the state must be this setup's, and
// the code is exchanged once.
func (h *setupHandler) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	code, state := q.Get("code"), q.Get("state")
	if subtle.ConstantTimeCompare([]byte(state), []byte(h.p.state)) != 1 {
		// Not from GitHub for this setup (or an old tab): keep waiting.
		h.page(w, http.StatusBadRequest, setupPageData{Title: "Not this setup's answer", Error: true,
			Text: "The state GitHub sent back is not this setup's: this address was not reached through the form this command serves. Nothing was done; start from the form again."})
		return
	}
	if code == "" || len(code) > 100 || strings.ContainsAny(code, "/?#%") {
		h.page(w, http.StatusBadRequest, setupPageData{Title: "No code", Error: true, Text: "GitHub's answer holds no usable code: start from the form again."})
		return
	}
	h.once.Lock()
	defer h.once.Unlock()
	if h.used {
		h.page(w, http.StatusConflict, setupPageData{Title: "Already done", Text: "This setup has already taken GitHub's answer: see the command's output."})
		return
	}
	h.used = true
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	app, err := h.p.convert(ctx, code)
	if err == nil {
		err = h.p.write(app)
	}
	if err != nil {
		h.page(w, http.StatusBadGateway, setupPageData{Title: "Setup failed", Error: true, Text: err.Error()})
		h.done <- setupResult{err: err}
		return
	}
	install := strings.TrimRight(app.HTMLURL, "/") + "/installations/new"
	h.page(w, http.StatusOK, setupPageData{Title: "The GitHub App is created", Install: install,
		Text: fmt.Sprintf("%s (id %d) is created, and its key, webhook secret and a config are in %s. Now install it on %s, for all repositories:",
			app.Slug, app.ID, h.p.dir, h.p.org)})
	h.done <- setupResult{message: h.p.summary(app, install)}
}

// convert exchanges the code for the App: POST /app-manifests/{code}/conversions,
// which needs no credentials and answers once.
