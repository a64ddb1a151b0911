// Package ghapp is the GitHub App client the service uses: installation
// tokens through ghinstallation, org self-hosted runners with JIT configs,
// and the App's webhook deliveries, with timeouts, bounded retries and
// rate-limit handling. It satisfies fleet.GitHub.
package ghapp

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/golang-jwt/jwt/v4"
	"github.com/google/go-github/v62/github"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

var _ fleet.GitHub = (*Client)(nil)

const (
	defaultRunnerGroup = "Default"
	defaultTimeout     = 30 * time.Second
	userAgent          = "lxd-gha-autoscaler"
)

// Errors callers may want to tell apart (use errors.Is).
var (
	// ErrRunnerExists: GenerateJITConfig was refused because a runner with
	// that name exists (409). Retry with a new name.
	ErrRunnerExists = errors.New("a runner with that name already exists")
	// ErrRunnerBusy: RemoveRunner was refused because the runner is running
	// a job (422).
	ErrRunnerBusy = fleet.ErrRunnerBusy
	// ErrUnknownRunnerGroup: the configured runner group does not exist in
	// the org.
	ErrUnknownRunnerGroup = errors.New("unknown runner group")
	// ErrNoPrivateKey is in Validate's answer when the config has no key. A
	// caller that reads it from a file and has already said why the file
	// gave nothing can leave it out.
	ErrNoPrivateKey = errors.New("github.private_key_file is required")
	// ErrOtherHost: a request was to go to another host (or scheme) than
	// the API's, most likely by a redirect, and was not sent. Every
	// request carries the App's JWT or an installation token, which only
	// the API's host may see.
	ErrOtherHost = errors.New("refused to send the App's credentials to another host")
)

// Config configures a Client.
type Config struct {
	// APIURL is the REST base URL, used exactly as given (a trailing slash is
	// added if missing): https://api.github.com/,
	// https://ghe.example.com/api/v3/, or a test server's URL.
	APIURL     string
	AppID      int64
	PrivateKey []byte // PEM; the caller reads the file
	// RunnerGroup is the group, by name, of a JIT request that names none;
	// default "Default". Each group is resolved to its id per org.
	RunnerGroup string
	// Timeout bounds each HTTP attempt (token refresh included). Default 30s.
	Timeout time.Duration
	// Transport is the base round tripper; default a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// JITPerMinute caps JIT config requests (writes), so that a burst of
	// queued jobs stays under GitHub's secondary limit of about 180 content
	// writes a minute. Default 150; JITBurst (default 10) may go at once.
	JITPerMinute int
	JITBurst     int
}

// Defaults of the JIT rate limiter.
const (
	DefaultJITPerMinute = 150
	DefaultJITBurst     = 10
)

// Validate reports every problem with the config, in the config file's
// words (github.api_url, github.app_id, ...). It never echoes the key, nor
// a URL it cannot read (it may hold anything).
func (c Config) Validate() error {
	var errs []error
	if c.APIURL == "" {
		errs = append(errs, errors.New("github.api_url is required"))
	} else if u, err := url.Parse(c.APIURL); err != nil {
		errs = append(errs, errors.New("github.api_url: not a valid URL"))
	} else if u.User != nil {
		errs = append(errs, errors.New("github.api_url must not contain credentials"))
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("github.api_url %q: want an absolute http(s) URL without query", c.APIURL))
	} else if u.Scheme == "http" && !loopback(u.Hostname()) {
		errs = append(errs, fmt.Errorf("github.api_url %q: must be https: the App's tokens would cross the network in clear (http is for a loopback address only)", c.APIURL))
	}
	if c.AppID == 0 {
		errs = append(errs, errors.New("github.app_id is required"))
	} else if c.AppID < 0 {
		errs = append(errs, fmt.Errorf("github.app_id %d: must be positive", c.AppID))
	}
	if len(c.PrivateKey) == 0 {
		errs = append(errs, ErrNoPrivateKey)
	} else if _, err := parseKey(c.PrivateKey); err != nil {
		errs = append(errs, err)
	}
	if c.JITPerMinute < 0 {
		errs = append(errs, errors.New("github.jit_per_minute must not be negative"))
	}
	if c.JITBurst < 0 {
		errs = append(errs, errors.New("github: JIT burst must not be negative"))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("github: request timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// loopback reports whether host is this machine: localhost, 127.0.0.0/8 or
// ::1. Only there may the API be reached over plain http (a test's stand-in).
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// String and GoString keep the private key out of logs and error messages.
func (c Config) String() string {
	return fmt.Sprintf("{APIURL:%s AppID:%d PrivateKey:[redacted] RunnerGroup:%q Timeout:%s}", c.APIURL, c.AppID, c.RunnerGroup, c.Timeout)
}

func (c Config) GoString() string { return "ghapp.Config" + c.String() }

// parseKey parses the App key. jwt's errors do not include key material, but
// say so in our own words anyway.
func parseKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	k, err := jwt.ParseRSAPrivateKeyFromPEM(pemBytes)
	if err != nil {
		return nil, errors.New("github.private_key_file: not a PEM encoded RSA private key (PKCS#1 or PKCS#8)")
	}
	return k, nil
}

// Client talks to GitHub as the App and as its installations.
type Client struct {
	log       zerolog.Logger
	apiURL    *url.URL // with trailing slash
	appID     int64
	key       *rsa.PrivateKey
	groupName string
	timeout   time.Duration
	base      http.RoundTripper
	app       *github.Client // authenticated with the App JWT
	retry     retryPolicy
	pageSize  int
	sleep     func(ctx context.Context, d time.Duration) error
	jitLimit  *rate.Limiter

	mu     sync.Mutex
	inst   map[int64]*github.Client // one per installation; holds its token
	groups map[groupKey]int64
	sf     singleflight.Group
}

type groupKey struct {
	installationID int64
	org            string // lower case
	name           string // as configured
}

// New builds a Client. It does no I/O.
func New(cfg Config, log zerolog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("github app config: %w", err)
	}
	key, err := parseKey(cfg.PrivateKey)
	if err != nil {
		return nil, err
	}
	raw := cfg.APIURL
	if !strings.HasSuffix(raw, "/") {
		raw += "/"
	}
	apiURL, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("api url: %w", err)
	}
	base := cfg.Transport
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	base = originGuard{base: base, scheme: apiURL.Scheme, host: apiURL.Host}
	base = permitted{base}
	c := &Client{
		log:       log.With().Str("component", "ghapp").Logger(),
		apiURL:    apiURL,
		appID:     cfg.AppID,
		key:       key,
		groupName: cfg.RunnerGroup,
		timeout:   cfg.Timeout,
		base:      base,
		retry:     defaultRetryPolicy,
		pageSize:  100,
		sleep:     func(ctx context.Context, d time.Duration) error { return fleet.Sleep(ctx, fleet.WallClock, d) },
		inst:      map[int64]*github.Client{},
		groups:    map[groupKey]int64{},
	}
	if c.groupName == "" {
		c.groupName = defaultRunnerGroup
	}
	perMin, burst := cfg.JITPerMinute, cfg.JITBurst
	if perMin <= 0 {
		perMin = DefaultJITPerMinute
	}
	if burst <= 0 {
		burst = DefaultJITBurst
	}
	c.jitLimit = rate.NewLimiter(rate.Limit(float64(perMin)/60), burst)
	if c.timeout == 0 {
		c.timeout = defaultTimeout
	}
	c.app = c.newGitHub(ghinstallation.NewAppsTransportFromPrivateKey(base, cfg.AppID, key))
	return c, nil
}

func (c *Client) newGitHub(rt http.RoundTripper) *github.Client {
	gh := github.NewClient(&http.Client{Transport: rt, CheckRedirect: c.checkRedirect})
	// Exactly as given: WithEnterpriseURLs would append api/v3.
	u := *c.apiURL
	gh.BaseURL = &u
	gh.UserAgent = userAgent
	return gh
}

// checkRedirect follows a redirect only to the API's own scheme and host.
// The credentials are added by the transport to every request, redirected
// ones included, so net/http's own rule (it drops an Authorization header
// it was given when the host changes) would not keep them from another
// host.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if !sameOrigin(req.URL, c.apiURL.Scheme, c.apiURL.Host) {
		return fmt.Errorf("redirect to %s://%s: %w", req.URL.Scheme, req.URL.Host, ErrOtherHost)
	}
	return nil
}

func sameOrigin(u *url.URL, scheme, host string) bool {
	return strings.EqualFold(u.Scheme, scheme) && strings.EqualFold(u.Host, host)
}

// originGuard sits under the transports that add the App's JWT and the
// installation tokens, and sends nothing to another scheme or host than
// the API's: whatever a redirect, a link in an answer or a future change
// asks for, those credentials reach the API's host only.
type originGuard struct {
	base         http.RoundTripper
	scheme, host string
}

func (g originGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if !sameOrigin(req.URL, g.scheme, g.host) {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, fmt.Errorf("%s %s://%s: %w", req.Method, req.URL.Scheme, req.URL.Host, ErrOtherHost)
	}
	return g.base.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach base.
func (g originGuard) CloseIdleConnections() {
	if c, ok := g.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// installation returns the cached client for an installation. ghinstallation
// caches its 1-hour token and refreshes it a minute before expiry.
func (c *Client) installation(id int64) *github.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gh, ok := c.inst[id]; ok {
		return gh
	}
	// A separate AppsTransport per installation: ghinstallation's token
	// refresh writes BaseURL/Client into the shared AppsTransport, which
	// would race between installations.
	atr := ghinstallation.NewAppsTransportFromPrivateKey(c.base, c.appID, c.key)
	itr := ghinstallation.NewFromAppsTransport(atr, id)
	itr.BaseURL = strings.TrimSuffix(c.apiURL.String(), "/")
	gh := c.newGitHub(itr)
	c.inst[id] = gh
	return gh
}

// forget drops an installation's client (and so its token), after GitHub
// rejected the token.
func (c *Client) forget(id int64) {
	c.mu.Lock()
	delete(c.inst, id)
	c.mu.Unlock()
}

func checkTarget(installationID int64, org string) error {
	if installationID <= 0 {
		return errors.New("installation id must be positive")
	}
	if org == "" {
		return errors.New("org is required")
	}
	return nil
}

// CheckToken gets (or reuses) an installation token: the readiness check
// that GitHub can be reached as the App. The token itself is not returned.
func (c *Client) CheckToken(ctx context.Context, installationID int64) error {
	itr, ok := c.installation(installationID).Client().Transport.(*ghinstallation.Transport)
	if !ok {
		return errors.New("installation transport: unexpected type")
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if _, err := itr.Token(ctx); err != nil {
		c.forget(installationID)
		return fmt.Errorf("installation %d: cannot get a token: %w", installationID, err)
	}
	return nil
}

// permitted sends a request only if its context's permit allows it
// (fleet.WithPermit): a leader whose lease may have lapsed sends nothing,
// token requests and retries included.
type permitted struct{ base http.RoundTripper }

func (p permitted) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := fleet.Permitted(req.Context()); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return p.base.RoundTrip(req)
}
