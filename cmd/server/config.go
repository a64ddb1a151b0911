package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/app"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghapp"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/image"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/redeliver"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

// fileConfig is the YAML configuration file. Secrets are never in it: it
// names the files that hold them.
type fileConfig struct {
	Listen            string        `yaml:"listen"`
	StateDir          string        `yaml:"state_dir"`
	Database          string        `yaml:"database"`
	DatabasePassword  string        `yaml:"database_password_file"`
	RunnerPrefix      string        `yaml:"runner_prefix"`
	ReconcileInterval time.Duration `yaml:"reconcile_interval"`
	// InstallationsInterval is how often the App's installations are
	// listed, for the warm pools' organizations.
	InstallationsInterval time.Duration `yaml:"installations_interval"`
	RedeliverInterval     time.Duration `yaml:"redeliver_interval"`
	Retention             time.Duration `yaml:"retention"`
	ShutdownGrace         time.Duration `yaml:"shutdown_grace"`
	AdminListen           string        `yaml:"admin_listen"`
	AdminTokenFile        string        `yaml:"admin_token_file"`
	AdminTLSCertFile      string        `yaml:"admin_tls_cert_file"`
	AdminTLSKeyFile       string        `yaml:"admin_tls_key_file"`
	GitHub                struct {
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
		LaunchTimeout       time.Duration `yaml:"launch_timeout"`
		// MaxPrepared caps the prepared instances of all pools together.
		MaxPrepared int `yaml:"max_prepared"`
		// Targets caps our runners on a cluster member or @group, across
		// pools.
		Targets map[string]int `yaml:"targets"`
	} `yaml:"limits"`
	Pools []poolConfig `yaml:"pools"`
	// Runner images that `image build` makes; see image_cmd.go.
	Images []imageConfig `yaml:"images"`
}

// lxdFileConfig is the lxd: section; image commands read it too.
type lxdFileConfig struct {
	Socket     string     `yaml:"socket"`
	URL        stringList `yaml:"url"` // one address, or a list of cluster members'
	ClientCert string     `yaml:"client_cert"`
	ClientKey  string     `yaml:"client_key"`
	ServerCert string     `yaml:"server_cert"`
	Project    string     `yaml:"project"`
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
	Prepared                int               `yaml:"prepared"`
	Organizations           []string          `yaml:"organizations"`
	MaxIdleAge              time.Duration     `yaml:"max_idle_age"`
	AllowPublicRepositories bool              `yaml:"allow_public_repositories"`
	Repositories            []string          `yaml:"repositories"`
	RunnerGroup             string            `yaml:"runner_group"`
	RunnerGroupPolicy       string            `yaml:"runner_group_policy"`
}

// config is the loaded configuration: each package's own Config, plus the
// secrets read from their files.
type config struct {
	Listen   string
	StateDir string
	// Database, when set, is the PostgreSQL state several replicas share;
	// else the state is SQLite in StateDir.
	Database         string
	DatabasePassword string
	// App holds the webhook secret, the admin listener and token, and the
	// scheduler's and the redeliverer's Configs.
	App      app.Config
	GitHub   ghapp.Config
	LXD      lxd.Config
	Images   []image.Spec
	Rebuilds []image.Rebuild // images with rebuild_every
	// Warnings are what is valid but likely not meant, one line each.
	Warnings []string
	// SecretFiles are the keys of the secret files read, in the file's
	// words (github.private_key_file, ...).
	SecretFiles []string
}

const (
	defaultListen   = "127.0.0.1:8080"
	defaultStateDir = "/var/lib/lxd-gha-autoscaler"
	defaultAPIURL   = "https://api.github.com/"
	defaultSocket   = "/var/lib/lxd/unix.socket"
)

// loadConfig reads and checks the file at path. The error lists every
// problem found, once, one per line, in the file's words, and never holds
// a secret. Each package's Validate checks its own part; this checks only
// what no package owns (the listeners, the webhook secret, the images).
func loadConfig(path string) (*config, error) {
	return loadConfigLoose(path, nil)
}

// loadConfigLoose is loadConfig, except that a secret file its group or
// others may read is not a problem of the config: it is added to loose,
// and its content read all the same. doctor tells it apart so, and goes
// on with the other checks.
func loadConfigLoose(path string, loose *[]error) (*config, error) {
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

	p := problems{loose: loose}
	c := &config{Listen: fc.Listen, StateDir: fc.StateDir}
	if c.Listen == "" {
		c.Listen = defaultListen
	}
	_, _, listenErr := net.SplitHostPort(c.Listen)
	if listenErr != nil {
		p.add("listen %q: want host:port", c.Listen)
	}
	if c.StateDir == "" {
		c.StateDir = defaultStateDir
	}
	c.Database = fc.Database
	switch {
	case fc.Database != "":
		p.check(store.ValidatePostgresURL(fc.Database))
		c.DatabasePassword = strings.TrimSpace(string(p.readSecret("database_password_file", fc.DatabasePassword)))
	case fc.DatabasePassword != "":
		p.add("database_password_file is only used with database")
	}

	gh := fc.GitHub
	if gh.APIURL == "" {
		gh.APIURL = defaultAPIURL
	}
	c.GitHub = ghapp.Config{APIURL: gh.APIURL, AppID: gh.AppID, RunnerGroup: gh.RunnerGroup, JITPerMinute: gh.JITPerMinute,
		PrivateKey: p.readSecret("github.private_key_file", gh.PrivateKeyFile, ghapp.ErrNoPrivateKey)}
	p.check(c.GitHub.Validate())
	// No package checks the webhook secret before the service starts.
	if gh.WebhookSecretFile == "" {
		p.add("github.webhook_secret_file is required")
	}
	c.App.WebhookSecret = bytes.TrimSpace(p.readSecret("github.webhook_secret_file", gh.WebhookSecretFile))

	c.LXD = fc.LXD.lxdConfig(&p)

	c.App.AdminListen = fc.AdminListen
	switch c.App.AdminListen {
	case "":
		c.App.AdminListen = admin.DefaultListen
	case "off":
		c.App.AdminListen = ""
	}
	c.App.AdminToken = strings.TrimSpace(string(p.readSecret("admin_token_file", fc.AdminTokenFile, app.ErrNoAdminToken)))
	c.App.AdminTLSCert = p.readFile("admin_tls_cert_file", fc.AdminTLSCertFile, app.ErrNoAdminTLSCert, app.ErrNoAdminTLS)
	c.App.AdminTLSKey = p.readSecret("admin_tls_key_file", fc.AdminTLSKeyFile, app.ErrNoAdminTLSKey, app.ErrNoAdminTLS)
	p.check(c.App.Validate())
	if listenErr == nil && c.App.AdminListen == c.Listen {
		p.add("admin_listen must not be the webhook listener: a proxy that exposes /webhook would expose the admin API")
	}

	c.App.Scheduler = scheduler.Config{
		MaxInstances:          fc.Limits.MaxInstances,
		MaxPrepared:           fc.Limits.MaxPrepared,
		InstallationsInterval: fc.InstallationsInterval,
		TargetLimits:          fc.Limits.Targets,
		RegistrationTimeout:   fc.Limits.RegistrationTimeout,
		MaxJobDuration:        fc.Limits.MaxJobDuration,
		MaxAttempts:           fc.Limits.MaxAttempts,
		NamePrefix:            fc.RunnerPrefix,
		ReconcileInterval:     fc.ReconcileInterval,
		Retention:             fc.Retention,
		Timeouts:              scheduler.Timeouts{Launch: fc.Limits.LaunchTimeout, ShutdownGrace: fc.ShutdownGrace},
	}
	for _, pc := range fc.Pools {
		if pc.RunnerGroup == "" {
			pc.RunnerGroup = gh.RunnerGroup // and the scheduler's default when that is empty too
		}
		c.App.Scheduler.Pools = append(c.App.Scheduler.Pools, scheduler.Pool{
			Name: pc.Name, Labels: pc.Labels, Image: pc.Image, SourceInstance: pc.SourceInstance, Type: pc.Type,
			Architecture: pc.Architecture, Target: pc.Target, Profiles: pc.Profiles, Config: pc.Config,
			MaxInstances: pc.MaxInstances, MinIdle: pc.MinIdle, MaxIdleAge: pc.MaxIdleAge,
			Prepared: pc.Prepared, Organizations: pc.Organizations,
			AllowPublicRepositories: pc.AllowPublicRepositories,
			Repositories:            pc.Repositories,
			RunnerGroup:             pc.RunnerGroup,
			RunnerGroupPolicy:       pc.RunnerGroupPolicy,
		})
	}
	p.check(c.App.Scheduler.Validate())
	c.App.Redeliver = redeliver.Config{Interval: fc.RedeliverInterval}.WithDefaults()
	p.check(c.App.Redeliver.Validate())

	configDir, _ := filepath.Abs(filepath.Dir(path))
	if specs, err := imageSpecs(fc.Images, configDir); err != nil {
		p.list = append(p.list, err)
	} else {
		c.Images = specs
		for i, ic := range fc.Images {
			if ic.RebuildEvery > 0 {
				c.Rebuilds = append(c.Rebuilds, image.Rebuild{Spec: specs[i], Every: ic.RebuildEvery,
					Options: image.Options{Profiles: ic.Profiles}})
			}
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	c.Warnings = c.App.Scheduler.Warnings()
	c.SecretFiles = p.secrets
	return c, nil
}

// lxdConfig maps the lxd: section onto lxd.Config, reading the certificate
// files it names, and adds its problems to p. serve, validate and the image
// commands all map the section here.
func (l lxdFileConfig) lxdConfig(p *problems) lxd.Config {
	c := lxd.Config{Socket: l.Socket, URLs: l.URL, Project: l.Project,
		ClientCert: p.readFile("lxd.client_cert", l.ClientCert, lxd.ErrNoClientCert),
		ClientKey:  p.readSecret("lxd.client_key", l.ClientKey, lxd.ErrNoClientKey),
		ServerCert: p.readFile("lxd.server_cert", l.ServerCert),
	}
	if c.Socket == "" && len(c.URLs) == 0 {
		c.Socket = defaultSocket
	}
	p.check(c.Validate())
	return c
}

// stringList is a YAML value that may be one string or a list of them.
type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var s string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*l = stringList{s}
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	*l = list
	return nil
}

// problems collects what is wrong with a config file, each problem once.
type problems struct {
	list []error
	// explained are package errors (sentinels) for keys whose file was
	// already reported as unreadable or empty: "is required" would say it
	// again, and wrongly.
	explained []error
	// secrets are the keys of the secret files read.
	secrets []string
	// loose, when set, takes the secret files that others may read (see
	// loadConfigLoose) instead of list.
	loose *[]error
}

func (p *problems) add(format string, args ...any) {
	p.list = append(p.list, fmt.Errorf(format, args...))
}

// check adds the problems in err, a package's Validate answer, less those
// a file read has already explained.
func (p *problems) check(err error) {
	if err == nil {
		return
	}
	all := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok { // errors.Join
		all = j.Unwrap()
	}
	for _, e := range all {
		if !slices.ContainsFunc(p.explained, func(s error) bool { return errors.Is(e, s) }) {
			p.list = append(p.list, e)
		}
	}
}

// readFile returns the content of a file that holds a certificate, or
// nil. A file that cannot be read, or is empty, is a problem that names
// the key and the path, never the content. An empty path is not one here:
// the package's Validate says whether the key is required. required are
// the packages' errors that say the key is unset (none when no package
// checks it): once the file's problem is told, they would say it again,
// and wrongly.
func (p *problems) readFile(key, path string, required ...error) []byte {
	return p.read(key, path, required, os.ReadFile)
}

// readSecret is readFile for a file that holds a secret: one that its
// group or others may read or write is a problem too (see readSecret).
func (p *problems) readSecret(key, path string, required ...error) []byte {
	if path != "" {
		p.secrets = append(p.secrets, key)
	}
	return p.read(key, path, required, func(path string) ([]byte, error) {
		b, err := readSecret(path)
		if _, ok := errors.AsType[*looseModeError](err); ok && p.loose != nil {
			*p.loose = append(*p.loose, fmt.Errorf("%s: %w", key, err))
			return os.ReadFile(path)
		}
		return b, err
	})
}

func (p *problems) read(key, path string, required []error, read func(string) ([]byte, error)) []byte {
	if path == "" {
		return nil
	}
	b, err := read(path)
	switch {
	case err != nil:
		p.list = append(p.list, fmt.Errorf("%s: %w", key, err))
	case len(bytes.TrimSpace(b)) == 0:
		p.add("%s %s: empty file", key, path)
	default:
		return b
	}
	p.explained = append(p.explained, required...)
	return nil
}

// err is every problem, one per line, or nil.
func (p *problems) err() error { return errors.Join(p.list...) }
