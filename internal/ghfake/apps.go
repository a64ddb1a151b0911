package ghfake

// GitHub Apps: the one the stand-in starts with, and those made through
// GitHub's App-manifest flow, as GitHub's docs describe it:
//
//  1. A page POSTs a form field "manifest" (the App's JSON) to
//     /organizations/ORG/settings/apps/new?state=STATE (github.com and
//     GitHub Enterprise Server alike: the web pages are at the host's
//     root, the API under its own base URL).
//  2. GitHub shows it to the organization's owner, who confirms, and
//     sends the browser to the manifest's redirect_url with ?code=…&state=….
//  3. POST /app-manifests/{code}/conversions, without authentication,
//     creates the App and answers its id, slug, key (pem) and webhook
//     secret, once, within an hour.
//
// GitHub then pings the App's webhook URL. The owner installs the App on
// the organization at /apps/SLUG/installations/new (InstallApp does the
// same). The App last created is the one installed on Org: its webhook
// secret signs the webhooks, which go to its webhook URL.

import (
	"cmp"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// fakeApp is a GitHub App.
type fakeApp struct {
	id          int64
	slug, name  string
	key         *rsa.PublicKey
	installed   bool // on Org
	createdAt   time.Time
	permissions map[string]string
	events      []string
}

// manifest is an App manifest posted to the flow, from its post to its
// conversion.
type manifest struct {
	raw      appManifest
	state    string
	postedAt time.Time
}

// appManifest is what the stand-in reads of a manifest.
type appManifest struct {
	Name           string `json:"name"`
	URL            string `json:"url"`
	Description    string `json:"description"`
	HookAttributes struct {
		URL    string `json:"url"`
		Active *bool  `json:"active"`
	} `json:"hook_attributes"`
	RedirectURL        string            `json:"redirect_url"`
	Public             bool              `json:"public"`
	DefaultPermissions map[string]string `json:"default_permissions"`
	DefaultEvents      []string          `json:"default_events"`
}

// manifestTTL is how long a manifest flow may take, from the post to the
// conversion, as on GitHub.
const manifestTTL = time.Hour

type appKey struct{}

// requestApp is the App whose JWT authenticated r (authApp routes).
func requestApp(r *http.Request) *fakeApp {
	a, _ := r.Context().Value(appKey{}).(*fakeApp)
	return a
}

// installed reports whether the App that authenticated r is the one
// installed on Org.
func (s *Server) installed(r *http.Request) bool {
	a := requestApp(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	return a != nil && a == s.current && a.installed
}

func (s *Server) currentAppIDLocked() int64 {
	if s.current == nil {
		return 0
	}
	return s.current.id
}

// AppView is an App as a test sees it.
type AppView struct {
	ID        int64
	Slug      string
	Installed bool // on Org
	Current   bool // its webhooks are sent
}

// Apps returns every App, oldest first.
func (s *Server) Apps() []AppView {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []AppView
	for _, a := range s.apps {
		out = append(out, AppView{ID: a.id, Slug: a.slug, Installed: a.installed, Current: a == s.current})
	}
	slices.SortFunc(out, func(a, b AppView) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// SetInstalled installs the current App on Org, or uninstalls it, as its
// owner would in the organization's settings.
func (s *Server) SetInstalled(installed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return fmt.Errorf("ghfake: no App to install")
	}
	s.current.installed = installed
	s.notifyLocked()
	return nil
}

// WebhookURL is where webhooks go now.
func (s *Server) WebhookURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhookURL
}

func (s *Server) webRoutes(mux *http.ServeMux) {
	s.route(mux, "POST /app-manifests/{code}/conversions", authAPINone, s.handleConversion)
	s.route(mux, "GET /app", authApp, s.handleGetApp)
	s.route(mux, "GET /app/hook/config", authApp, s.handleHookConfig)
	for pattern, h := range map[string]http.HandlerFunc{
		"POST /organizations/{org}/settings/apps/new":         s.handleManifestPost,
		"POST /organizations/{org}/settings/apps/new/confirm": s.handleManifestConfirm,
		"GET /apps/{slug}/installations/new":                  s.handleInstallPage,
		"POST /apps/{slug}/installations/new":                 s.handleInstall,
	} {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			s.mu.Lock()
			s.requests[pattern]++
			s.mu.Unlock()
			h(w, r)
		})
	}
}

// page writes a small HTML page, as GitHub's would be: a title, a
// paragraph and, optionally, a form with one button.
func webPage(w http.ResponseWriter, status int, title, text, action, button string, hidden map[string]string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	var b strings.Builder
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head><body>\n<h1>%s</h1>\n<p id=\"text\">%s</p>\n",
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(text))
	if action != "" {
		fmt.Fprintf(&b, "<form method=\"post\" action=\"%s\">\n", html.EscapeString(action))
		keys := make([]string, 0, len(hidden))
		for k := range hidden {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "<input type=\"hidden\" name=\"%s\" value=\"%s\">\n", html.EscapeString(k), html.EscapeString(hidden[k]))
		}
		fmt.Fprintf(&b, "<button type=\"submit\" id=\"submit\">%s</button>\n</form>\n", html.EscapeString(button))
	}
	b.WriteString("</body></html>\n")
	_, _ = w.Write([]byte(b.String()))
}

// handleManifestPost is step 1: the owner's browser posts the manifest.
// Like GitHub, it shows what it got and asks the owner to confirm.
func (s *Server) handleManifestPost(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.PathValue("org"), s.opts.Org) {
		webPage(w, http.StatusNotFound, "Page not found", "No organization "+r.PathValue("org")+".", "", "", nil)
		return
	}
	var m appManifest
	if err := json.Unmarshal([]byte(r.PostFormValue("manifest")), &m); err != nil {
		webPage(w, http.StatusUnprocessableEntity, "Invalid GitHub App manifest", "The manifest is not JSON: "+err.Error(), "", "", nil)
		return
	}
	if problems := m.check(); len(problems) > 0 {
		webPage(w, http.StatusUnprocessableEntity, "Invalid GitHub App manifest", strings.Join(problems, "; "), "", "", nil)
		return
	}
	token := randomHex(16)
	s.mu.Lock()
	s.manifests[token] = &manifest{raw: m, state: r.URL.Query().Get("state"), postedAt: time.Now()}
	s.mu.Unlock()
	webPage(w, http.StatusOK, "Create GitHub App",
		fmt.Sprintf("%s, owned by %s, with the webhook %s and the events %s.", m.Name, s.opts.Org, m.HookAttributes.URL, strings.Join(m.DefaultEvents, ", ")),
		"/organizations/"+url.PathEscape(s.opts.Org)+"/settings/apps/new/confirm", "Create GitHub App for "+s.opts.Org,
		map[string]string{"token": token})
}

// check lists what GitHub would refuse in a manifest.
func (m appManifest) check() []string {
	var out []string
	switch {
	case m.Name == "":
		out = append(out, "name is required")
	case len(m.Name) > 34:
		out = append(out, "name is too long (maximum is 34 characters)")
	}
	for key, u := range map[string]string{"url": m.URL, "hook_attributes.url": m.HookAttributes.URL, "redirect_url": m.RedirectURL} {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			out = append(out, key+" must be an http(s) URL")
		}
	}
	for k, v := range m.DefaultPermissions {
		if v != "read" && v != "write" {
			out = append(out, fmt.Sprintf("default_permissions.%s must be read or write", k))
		}
	}
	if slices.Contains(m.DefaultEvents, "workflow_job") && m.DefaultPermissions["actions"] == "" {
		out = append(out, "the workflow_job event needs the actions permission")
	}
	slices.Sort(out)
	return out
}

// handleManifestConfirm is step 2: the owner confirms, and GitHub sends
// the browser to redirect_url with a code and the state.
func (s *Server) handleManifestConfirm(w http.ResponseWriter, r *http.Request) {
	token := r.PostFormValue("token")
	s.mu.Lock()
	m := s.manifests[token]
	delete(s.manifests, token)
	var code string
	if m != nil && time.Since(m.postedAt) < manifestTTL {
		code = randomHex(10)
		s.codes[code] = m
	}
	s.mu.Unlock()
	if code == "" {
		webPage(w, http.StatusNotFound, "Page not found", "This App manifest flow has expired or was used: start again.", "", "", nil)
		return
	}
	u, _ := url.Parse(m.raw.RedirectURL) // checked when posted
	q := u.Query()
	q.Set("code", code)
	if m.state != "" {
		q.Set("state", m.state)
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

type apiApp struct {
	ID          int64             `json:"id"`
	Slug        string            `json:"slug"`
	NodeID      string            `json:"node_id"`
	Owner       hookUser          `json:"owner"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	ExternalURL string            `json:"external_url"`
	HTMLURL     string            `json:"html_url"`
	CreatedAt   string            `json:"created_at"`
	UpdatedAt   string            `json:"updated_at"`
	Permissions map[string]string `json:"permissions"`
	Events      []string          `json:"events"`
}

func (s *Server) apiAppLocked(a *fakeApp) apiApp {
	created := a.createdAt.UTC().Format(time.RFC3339)
	return apiApp{
		ID: a.id, Slug: a.slug, NodeID: fmt.Sprintf("A_fake%d", a.id), Name: a.name,
		Owner:   hookUser{Login: s.opts.Org, ID: s.orgID, Type: "Organization"},
		HTMLURL: s.WebURL() + "apps/" + a.slug, CreatedAt: created, UpdatedAt: created,
		Permissions: a.permissions, Events: a.events,
	}
}

// handleConversion is step 3: the code becomes an App, once.
func (s *Server) handleConversion(w http.ResponseWriter, r *http.Request) {
	code := r.PathValue("code")
	s.mu.Lock()
	m := s.codes[code]
	delete(s.codes, code)
	s.mu.Unlock()
	if m == nil || time.Since(m.postedAt) > manifestTTL {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "key generation failed")
		return
	}
	secret := randomHex(20)
	s.mu.Lock()
	s.next.app++
	a := &fakeApp{id: s.next.app, name: m.raw.Name, slug: slugOf(m.raw.Name), key: &key.PublicKey, createdAt: time.Now(),
		permissions: m.raw.DefaultPermissions, events: m.raw.DefaultEvents}
	s.apps[a.id], s.current = a, a
	s.secret, s.webhookURL = []byte(secret), m.raw.HookAttributes.URL
	out := struct {
		apiApp
		ClientID      string `json:"client_id"`
		ClientSecret  string `json:"client_secret"`
		WebhookSecret string `json:"webhook_secret"`
		PEM           string `json:"pem"`
	}{
		apiApp: s.apiAppLocked(a), ClientID: "Iv1." + randomHex(8), ClientSecret: randomHex(20), WebhookSecret: secret,
		PEM: string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})),
	}
	out.Description, out.ExternalURL = m.raw.Description, m.raw.URL
	s.notifyLocked()
	s.mu.Unlock()
	s.log.Info().Int64("app_id", a.id).Str("slug", a.slug).Msg("App created from a manifest")
	s.Ping() // as GitHub does once the App exists
	writeJSON(w, http.StatusCreated, out)
}

var notSlug = regexp.MustCompile(`[^a-z0-9]+`)

// slugOf is GitHub's slug of an App's name: lower case, runs of anything
// but letters and digits as one hyphen.
func slugOf(name string) string {
	return strings.Trim(notSlug.ReplaceAllString(strings.ToLower(name), "-"), "-")
}

// handleGetApp answers GET /app: the App whose JWT came.
func (s *Server) handleGetApp(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := s.apiAppLocked(requestApp(r))
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// handleHookConfig answers GET /app/hook/config: where the App's webhooks
// go (the stand-in has one URL, the current App's).
func (s *Server) handleHookConfig(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	u := s.webhookURL
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"content_type": "json", "insecure_ssl": "0", "url": u})
}

func (s *Server) appBySlugLocked(slug string) *fakeApp {
	for _, a := range s.apps {
		if a.slug == slug {
			return a
		}
	}
	return nil
}

// handleInstallPage is where an App's owner installs it: on Org, for all
// its repositories.
func (s *Server) handleInstallPage(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	a := s.appBySlugLocked(r.PathValue("slug"))
	s.mu.Unlock()
	if a == nil {
		webPage(w, http.StatusNotFound, "Page not found", "No App "+r.PathValue("slug")+".", "", "", nil)
		return
	}
	webPage(w, http.StatusOK, "Install "+a.name, "Install on the organization "+s.opts.Org+", all repositories.",
		"/apps/"+url.PathEscape(a.slug)+"/installations/new", "Install", nil)
}

func (s *Server) handleInstall(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	a := s.appBySlugLocked(r.PathValue("slug"))
	ok := a != nil && a == s.current
	if ok {
		a.installed = true
		s.notifyLocked()
	}
	s.mu.Unlock()
	if !ok {
		webPage(w, http.StatusNotFound, "Page not found", "No App "+r.PathValue("slug")+" to install here.", "", "", nil)
		return
	}
	webPage(w, http.StatusOK, "Installed", a.name+" is installed on "+s.opts.Org+".", "", "", nil)
}
