package main

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghapp"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/image"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/redeliver"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
)

// fileConfig is the YAML configuration file. Secrets are never in it: it
// names the files that hold them.
type fileConfig struct {
	Listen            string        `yaml:"listen"`
	StateDir          string        `yaml:"state_dir"`
	RunnerPrefix      string        `yaml:"runner_prefix"`
	ReconcileInterval time.Duration `yaml:"reconcile_interval"`
	RedeliverInterval time.Duration `yaml:"redeliver_interval"`
	Retention         time.Duration `yaml:"retention"`
	AdminListen       string        `yaml:"admin_listen"`
	AdminTokenFile    string        `yaml:"admin_token_file"`
	GitHub            struct {
		APIURL            string `yaml:"api_url"`
		AppID             int64  `yaml:"app_id"`
		PrivateKeyFile    string `yaml:"private_key_file"`
		WebhookSecretFile string `yaml:"webhook_secret_file"`
		RunnerGroup       string `yaml:"runner_group"`
		JITPerMinute      int    `yaml:"jit_per_minute"`
	} `yaml:"github"`
	LXD    lxdFileConfig `yaml:"lxd"`
	Limits struct {
		MaxInstances        int           `yaml:"max_instances"`
		RegistrationTimeout time.Duration `yaml:"registration_timeout"`
		MaxJobDuration      time.Duration `yaml:"max_job_duration"`
		MaxAttempts         int           `yaml:"max_attempts"`
	} `yaml:"limits"`
	Pools []poolConfig `yaml:"pools"`
	// Runner images that `image build` makes; see image_cmd.go.
	Images []imageConfig `yaml:"images"`
}

// lxdFileConfig is the lxd: section; image commands read it too.
type lxdFileConfig struct {
	Socket     string `yaml:"socket"`
	URL        string `yaml:"url"`
	ClientCert string `yaml:"client_cert"`
	ClientKey  string `yaml:"client_key"`
	ServerCert string `yaml:"server_cert"`
	Project    string `yaml:"project"`
}

type poolConfig struct {
	Name                    string            `yaml:"name"`
	Labels                  []string          `yaml:"labels"`
	Image                   string            `yaml:"image"`
	SourceInstance          string            `yaml:"source_instance"`
	Type                    string            `yaml:"type"`
	Architecture            string            `yaml:"architecture"`
	Target                  string            `yaml:"target"`
	Profiles                []string          `yaml:"profiles"`
	Config                  map[string]string `yaml:"config"`
	MaxInstances            int               `yaml:"max_instances"`
	MinIdle                 int               `yaml:"min_idle"`
	MaxIdleAge              time.Duration     `yaml:"max_idle_age"`
	AllowPublicRepositories bool              `yaml:"allow_public_repositories"`
	Repositories            []string          `yaml:"repositories"`
}

// config is the loaded configuration: each package's own Config, plus the
// secrets read from their files.
type config struct {
	Listen        string
	AdminListen   string
	AdminToken    string
	StateDir      string
	WebhookSecret []byte
	GitHub        ghapp.Config
	LXD           lxd.Config
	Scheduler     scheduler.Config
	Redeliver     redeliver.Config
	Images        []image.Spec
	Rebuilds      []image.Rebuild // images with rebuild_every
}

const (
	defaultListen   = "127.0.0.1:8080"
	defaultStateDir = "/var/lib/lxd-gha-autoscaler"
	defaultAPIURL   = "https://api.github.com/"
	defaultSocket   = "/var/lib/lxd/unix.socket"
)

// loadConfig reads and checks the file at path. The error lists every
// problem found, one per line, and never holds a secret.
func loadConfig(path string) (*config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true) // a misspelt key is an error, not a silent default
	if err := dec.Decode(&fc); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}

	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	c := &config{Listen: fc.Listen, StateDir: fc.StateDir}
	if c.Listen == "" {
		c.Listen = defaultListen
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		add("listen %q: want host:port", c.Listen)
	}
	if c.StateDir == "" {
		c.StateDir = defaultStateDir
	}
	c.AdminListen = fc.AdminListen
	if c.AdminListen == "" {
		c.AdminListen = admin.DefaultListen
	}
	if c.AdminListen != "off" && !strings.HasPrefix(c.AdminListen, "unix:") {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			add("admin_listen %q: want unix:/path, host:port or off", c.AdminListen)
		} else if c.AdminListen == c.Listen {
			add("admin_listen must not be the webhook listener: a proxy that exposes /webhook would expose the admin API")
		}
	}
	if c.AdminListen == "off" {
		c.AdminListen = ""
	}
	if fc.AdminTokenFile != "" {
		c.AdminToken = strings.TrimSpace(string(readSecret(&errs, "admin_token_file", fc.AdminTokenFile)))
	}
	if c.AdminListen != "" && admin.RequiresToken(c.AdminListen) && c.AdminToken == "" {
		add("admin_listen %s is reachable from other hosts: set admin_token_file", c.AdminListen)
	}

	gh := fc.GitHub
	if gh.APIURL == "" {
		gh.APIURL = defaultAPIURL
	}
	if u, err := url.Parse(gh.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		add("github.api_url %q: want an http(s) URL", gh.APIURL)
	}
	if gh.AppID <= 0 {
		add("github.app_id is required")
	}
	key := readSecret(&errs, "github.private_key_file", gh.PrivateKeyFile)
	if key != nil && !validRSAKey(key) {
		add("github.private_key_file %s: not a PEM RSA private key", gh.PrivateKeyFile)
	}
	c.WebhookSecret = bytes.TrimSpace(readSecret(&errs, "github.webhook_secret_file", gh.WebhookSecretFile))
	if gh.WebhookSecretFile != "" && len(c.WebhookSecret) == 0 && len(errs) == 0 {
		add("github.webhook_secret_file %s: empty", gh.WebhookSecretFile)
	}
	if gh.JITPerMinute < 0 {
		add("github.jit_per_minute must not be negative")
	}
	c.GitHub = ghapp.Config{APIURL: gh.APIURL, AppID: gh.AppID, PrivateKey: key, RunnerGroup: gh.RunnerGroup,
		JITPerMinute: gh.JITPerMinute}

	l := fc.LXD
	c.LXD = lxd.Config{Socket: l.Socket, URL: l.URL, Project: l.Project}
	if l.Socket == "" && l.URL == "" {
		c.LXD.Socket = defaultSocket
	}
	if l.URL != "" {
		c.LXD.ClientCert = readSecret(&errs, "lxd.client_cert", l.ClientCert)
		c.LXD.ClientKey = readSecret(&errs, "lxd.client_key", l.ClientKey)
		if l.ServerCert != "" {
			c.LXD.ServerCert = readSecret(&errs, "lxd.server_cert", l.ServerCert)
		}
	}
	if err := c.LXD.Validate(); err != nil {
		errs = append(errs, err)
	}

	c.Scheduler = scheduler.Config{
		MaxInstances:        fc.Limits.MaxInstances,
		RegistrationTimeout: fc.Limits.RegistrationTimeout,
		MaxJobDuration:      fc.Limits.MaxJobDuration,
		MaxAttempts:         fc.Limits.MaxAttempts,
		NamePrefix:          fc.RunnerPrefix,
		ReconcileInterval:   fc.ReconcileInterval,
		Retention:           fc.Retention,
	}
	for _, p := range fc.Pools {
		c.Scheduler.Pools = append(c.Scheduler.Pools, scheduler.Pool{
			Name: p.Name, Labels: p.Labels, Image: p.Image, SourceInstance: p.SourceInstance, Type: p.Type,
			Architecture: p.Architecture, Target: p.Target, Profiles: p.Profiles, Config: p.Config,
			MaxInstances: p.MaxInstances, MinIdle: p.MinIdle, MaxIdleAge: p.MaxIdleAge,
			AllowPublicRepositories: p.AllowPublicRepositories,
			Repositories:            p.Repositories,
		})
	}
	if err := c.Scheduler.Validate(); err != nil {
		errs = append(errs, err)
	}
	c.Redeliver = redeliver.Config{Interval: fc.RedeliverInterval}.WithDefaults()
	if err := c.Redeliver.Validate(); err != nil {
		errs = append(errs, err)
	}
	configDir, _ := filepath.Abs(filepath.Dir(path))
	if specs, err := imageSpecs(fc.Images, configDir); err != nil {
		errs = append(errs, err)
	} else {
		c.Images = specs
		for i, ic := range fc.Images {
			if ic.RebuildEvery > 0 {
				c.Rebuilds = append(c.Rebuilds, image.Rebuild{Spec: specs[i], Every: ic.RebuildEvery,
					Options: image.Options{Profiles: ic.Profiles}})
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// readSecret reads a secret file, adding a problem (naming the file, never
// its content) when it cannot.
func readSecret(errs *[]error, key, path string) []byte {
	if path == "" {
		*errs = append(*errs, fmt.Errorf("%s is required", key))
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s: %w", key, err))
		return nil
	}
	return b
}

func validRSAKey(b []byte) bool {
	block, _ := pem.Decode(b)
	if block == nil {
		return false
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return true
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return false
	}
	_, ok := k.(*rsa.PrivateKey)
	return ok
}
