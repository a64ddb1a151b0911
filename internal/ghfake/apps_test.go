package ghfake

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"
	"github.com/rs/zerolog"
)

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func postForm(t *testing.T, u string, v url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := noRedirect.PostForm(u, v)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const testManifest = `{"name": "lxd-gha-autoscaler-acme", "url": "https://github.com/acme",
	"hook_attributes": {"url": "%HOOK%", "active": true}, "redirect_url": "http://127.0.0.1:1/callback",
	"public": false, "default_events": ["workflow_job"],
	"default_permissions": {"organization_self_hosted_runners": "write", "actions": "read", "metadata": "read"}}`

// The App-manifest flow, as a browser and the setup command go through it:
// the manifest posted, confirmed, the code exchanged once for an App that
// GitHub then accepts, pings, and lists once installed.
func TestManifestFlow(t *testing.T) {
	sk := newSink(t)
	srv, err := New(Options{Org: "acme", InstallationID: 7, PathPrefix: "api/v3", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	manifest := strings.ReplaceAll(testManifest, "%HOOK%", sk.srv.URL)

	// Step 1: the manifest, with a state.
	resp, page := postForm(t, srv.WebURL()+"organizations/acme/settings/apps/new?state=st4te", url.Values{"manifest": {manifest}})
	if resp.StatusCode != 200 || !strings.Contains(page, "Create GitHub App for acme") {
		t.Fatalf("manifest post: %d\n%s", resp.StatusCode, page)
	}
	token := regexp.MustCompile(`name="token" value="([0-9a-f]+)"`).FindStringSubmatch(page)
	if token == nil {
		t.Fatalf("no token in the page:\n%s", page)
	}
	// Step 2: confirmed, the browser goes to redirect_url with the code and
	// the state.
	resp, _ = postForm(t, srv.WebURL()+"organizations/acme/settings/apps/new/confirm", url.Values{"token": {token[1]}})
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || loc.Host != "127.0.0.1:1" || loc.Path != "/callback" ||
		loc.Query().Get("state") != "st4te" || loc.Query().Get("code") == "" {
		t.Fatalf("confirm: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := postForm(t, srv.WebURL()+"organizations/acme/settings/apps/new/confirm", url.Values{"token": {token[1]}}); resp.StatusCode != 404 {
		t.Fatalf("confirm twice: %d", resp.StatusCode)
	}

	// Step 3: the conversion, under the API's base URL, without credentials.
	conv := srv.URL() + "app-manifests/" + loc.Query().Get("code") + "/conversions"
	code, body := do(t, "POST", conv, "", nil)
	if code != http.StatusCreated {
		t.Fatalf("conversion: %d %s", code, body)
	}
	var app struct {
		ID            int64  `json:"id"`
		Slug          string `json:"slug"`
		HTMLURL       string `json:"html_url"`
		PEM           string `json:"pem"`
		WebhookSecret string `json:"webhook_secret"`
		Owner         struct {
			Login string `json:"login"`
		} `json:"owner"`
	}
	if err := json.Unmarshal(body, &app); err != nil {
		t.Fatal(err)
	}
	if app.ID == 0 || app.Slug != "lxd-gha-autoscaler-acme" || app.Owner.Login != "acme" || !strings.Contains(app.PEM, "RSA PRIVATE KEY") ||
		len(app.WebhookSecret) < 20 || app.HTMLURL != srv.WebURL()+"apps/lxd-gha-autoscaler-acme" {
		t.Fatalf("conversion answered %s", body)
	}
	if code, _ := do(t, "POST", conv, "", nil); code != http.StatusNotFound {
		t.Fatalf("the code used twice: %d", code)
	}

	// The App's key is accepted from now on.
	atr, err := ghinstallation.NewAppsTransport(http.DefaultTransport, app.ID, []byte(app.PEM))
	if err != nil {
		t.Fatal(err)
	}
	atr.BaseURL = strings.TrimSuffix(srv.URL(), "/")
	gh := github.NewClient(&http.Client{Transport: atr})
	gh.BaseURL, _ = url.Parse(srv.URL())
	got, _, err := gh.Apps.Get(ctx(t), "")
	if err != nil || got.GetID() != app.ID || got.GetSlug() != app.Slug {
		t.Fatalf("GET /app: %+v, %v", got, err)
	}
	// GitHub pings the App's webhook URL, signed with its new secret.
	deadline := time.Now().Add(5 * time.Second)
	for {
		sk.mu.Lock()
		n := len(sk.got)
		sk.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	sk.mu.Lock()
	if len(sk.got) != 1 || sk.got[0].event != "ping" {
		t.Errorf("webhooks after the App was made: %+v", sk.got)
	} else if err := github.ValidateSignature(sk.got[0].header.Get(github.SHA256SignatureHeader), sk.got[0].body, []byte(app.WebhookSecret)); err != nil {
		t.Errorf("the ping is not signed with the App's webhook secret: %v", err)
	}
	sk.mu.Unlock()

	// Not installed yet: no installation, no token.
	if ins, _, err := gh.Apps.ListInstallations(ctx(t), nil); err != nil || len(ins) != 0 {
		t.Fatalf("installations before the install: %v, %v", ins, err)
	}
	resp, page = postForm(t, app.HTMLURL+"/installations/new", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, "is installed on acme") {
		t.Fatalf("install: %d\n%s", resp.StatusCode, page)
	}
	ins, _, err := gh.Apps.ListInstallations(ctx(t), nil)
	if err != nil || len(ins) != 1 || ins[0].GetID() != 7 || ins[0].GetAccount().GetLogin() != "acme" || ins[0].GetAppID() != app.ID {
		t.Fatalf("installations: %v, %v", ins, err)
	}
	if apps := srv.Apps(); len(apps) != 1 || !apps[0].Installed || !apps[0].Current {
		t.Fatalf("Apps() = %+v", apps)
	}
}

// GitHub refuses a manifest it cannot make an App of, and a flow for
// another organization.
func TestManifestRefused(t *testing.T) {
	srv, err := New(Options{Org: "acme", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	good := strings.ReplaceAll(testManifest, "%HOOK%", "https://runners.example.com/webhook")
	for name, tc := range map[string]struct {
		org, manifest string
		want          int
		says          string
	}{
		"other org":   {"other", good, 404, "No organization other"},
		"not JSON":    {"acme", "{", 422, "not JSON"},
		"long name":   {"acme", strings.Replace(good, `"lxd-gha-autoscaler-acme"`, `"`+strings.Repeat("x", 35)+`"`, 1), 422, "maximum is 34"},
		"no hook":     {"acme", strings.Replace(good, `"https://runners.example.com/webhook"`, `""`, 1), 422, "hook_attributes.url must be"},
		"no actions":  {"acme", strings.Replace(good, `"actions": "read", `, "", 1), 422, "needs the actions permission"},
		"bad perm":    {"acme", strings.Replace(good, `"metadata": "read"`, `"metadata": "admin"`, 1), 422, "metadata must be read or write"},
		"no redirect": {"acme", strings.Replace(good, `"http://127.0.0.1:1/callback"`, `"/callback"`, 1), 422, "redirect_url must be"},
	} {
		resp, page := postForm(t, srv.WebURL()+"organizations/"+tc.org+"/settings/apps/new", url.Values{"manifest": {tc.manifest}})
		if resp.StatusCode != tc.want || !strings.Contains(page, tc.says) {
			t.Errorf("%s: %d, want %d saying %q:\n%s", name, resp.StatusCode, tc.want, tc.says, page)
		}
	}
	if code, _ := do(t, "POST", srv.URL()+"app-manifests/nope/conversions", "", nil); code != http.StatusNotFound {
		t.Errorf("unknown code: %d", code)
	}
}
