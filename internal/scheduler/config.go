package scheduler

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Pool is a kind of runner: the labels it registers and how its instances
// are made.
type Pool struct {
	Name           string
	Labels         []string // exactly what the runner registers; JIT runners get no defaults
	Image          string
	SourceInstance string
	Type           string // "container" (default) or "virtual-machine"
	Architecture   string
	Target         string
	Profiles       []string
	Config         map[string]string
	MaxInstances   int // 0: only the global limit applies
	// MinIdle keeps this many registered, idle runners ready per
	// organization the pool serves that the App is installed on (a warm
	// pool).
	MinIdle int
	// Prepared keeps this many instances created and stopped, with no
	// secret and no registration, for the pool's next launches: a launch
	// that takes one only sets its JIT config and starts it. They cost
	// disk, not CPU or memory, and count against Config.MaxPrepared, not
	// the runner limits.
	Prepared int
	// MaxIdleAge recycles a runner idle this long, and a prepared
	// instance this old, so none lives for days.
	MaxIdleAge time.Duration
	// Organizations, when set, are the only organizations (by login,
	// case-insensitive) whose jobs the pool serves and for which it keeps
	// warm runners.
	Organizations []string

	AllowPublicRepositories bool
	Repositories            []string // optional allow-list: "owner/name" or "name"

	// RunnerGroup is the GitHub runner group the pool's runners join, by
	// name; default DefaultRunnerGroup. GitHub gives a queued job to any
	// idle runner of a group that admits the job's repository, whatever
	// the service decided: the group is what GitHub enforces.
	RunnerGroup string
	// RunnerGroupPolicy is what CheckRunnerGroups does when the group
	// admits repositories the pool refuses: PolicyRefuse (the default) or
	// PolicyWarn.
	RunnerGroupPolicy string
}

// Runner group policies: what a group that admits more than its pool means.
const (
	PolicyRefuse = "refuse" // the service does not start
	PolicyWarn   = "warn"   // it starts, with a warning
)

// Config is the scheduler's part of the service configuration.
type Config struct {
	Pools        []Pool
	MaxInstances int // across all pools
	// MaxPrepared caps the prepared instances of all pools together; 0:
	// only each pool's Prepared.
	MaxPrepared int
	// TargetLimits caps our runners on a cluster member (key: its name)
	// or on a cluster group's members together (key: "@group"), across
	// every pool: pools that share hardware (a member with two GPUs)
	// share its limit.
	TargetLimits        map[string]int
	RegistrationTimeout time.Duration // a runner must be online or busy by then
	MaxJobDuration      time.Duration
	NamePrefix          string        // instance and runner names start with it
	ReconcileInterval   time.Duration // how often LXD is compared with our state
	MaxLaunching        int           // launches in flight at once
	MaxBackoff          time.Duration // cap of the per-pool retry backoff
	MaxAttempts         int           // runners per job that may miss registration_timeout before it is given up
	Retention           time.Duration // finished jobs, timelines and deliveries are kept this long
	OnlineCheckInterval time.Duration // how often GitHub is asked whether started runners are online yet
	// ClusterInterval is how often LXD's members are read (with a Cluster
	// port): a member that stops answering is skipped from then on. Not in
	// the file; tests change it.
	ClusterInterval time.Duration
	// InstallationsInterval is how often the App's installations are
	// listed at GitHub, besides at start; installation webhooks tell the
	// changes in between.
	InstallationsInterval time.Duration
	// ImageInterval is how often the images of pools with prepared
	// instances are looked up, so that a prepared instance of an image
	// that changed is replaced. Not in the file; tests change it.
	ImageInterval time.Duration
	// RecheckQueuedAfter: before a launch for a job queued longer than
	// this, GitHub is asked whether it is still queued. Not in the file;
	// tests change it.
	RecheckQueuedAfter time.Duration
	Timeouts           Timeouts
}

// Timeouts are every bound on what the scheduler waits for, in one place.
// Launch and ShutdownGrace are the operator's (limits.launch_timeout and
// shutdown_grace: a slow storage pool or a long TimeoutStopSec wants them
// changed); the rest only tests change.
type Timeouts struct {
	Launch        time.Duration // one launch: JIT config, create and start
	Teardown      time.Duration // one teardown: GitHub's checks and the delete
	ShutdownGrace time.Duration // how long workers may run on after shutdown starts
	StateWrite    time.Duration // one state transaction outside a step
	Cleanup       time.Duration // removing the registration of a failed launch
	LXDRetryCap   time.Duration // longest wait between asks while LXD does not answer
	StepCoalesce  time.Duration // how long a wake-up waits for more deliveries
}

// Defaults.
const (
	DefaultRegistrationTimeout = 10 * time.Minute
	DefaultMaxJobDuration      = 6 * time.Hour
	DefaultNamePrefix          = "gha-"
	DefaultReconcileInterval   = time.Minute
	DefaultMaxLaunching        = 8
	DefaultMaxBackoff          = 2 * time.Minute
	DefaultMaxAttempts         = 3
	DefaultMaxIdleAge          = time.Hour
	DefaultRetention           = 7 * 24 * time.Hour
	DefaultOnlineCheckInterval = 5 * time.Second
	DefaultRunnerGroup         = "Default"
	DefaultRecheckQueuedAfter  = 10 * time.Minute
	DefaultClusterInterval     = 5 * time.Second
	DefaultInstallations       = 10 * time.Minute
	DefaultImageInterval       = 5 * time.Second
)

// DefaultTimeouts are the Timeouts that a zero field takes.
var DefaultTimeouts = Timeouts{
	Launch:        5 * time.Minute,
	Teardown:      2 * time.Minute,
	ShutdownGrace: 15 * time.Second,
	StateWrite:    30 * time.Second,
	Cleanup:       20 * time.Second,
	LXDRetryCap:   10 * time.Second,
	// Each step is a transaction (and an fsync) that the webhook's group
	// commit waits behind: a burst of deliveries is better one step.
	StepCoalesce: 10 * time.Millisecond,
}

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	orDefault(&c.RegistrationTimeout, DefaultRegistrationTimeout)
	orDefault(&c.MaxJobDuration, DefaultMaxJobDuration)
	orDefault(&c.NamePrefix, DefaultNamePrefix)
	orDefault(&c.ReconcileInterval, DefaultReconcileInterval)
	orDefault(&c.MaxLaunching, DefaultMaxLaunching)
	orDefault(&c.MaxBackoff, DefaultMaxBackoff)
	orDefault(&c.Retention, DefaultRetention)
	orDefault(&c.OnlineCheckInterval, DefaultOnlineCheckInterval)
	orDefault(&c.MaxAttempts, DefaultMaxAttempts)
	orDefault(&c.RecheckQueuedAfter, DefaultRecheckQueuedAfter)
	orDefault(&c.ClusterInterval, DefaultClusterInterval)
	orDefault(&c.InstallationsInterval, DefaultInstallations)
	orDefault(&c.ImageInterval, DefaultImageInterval)
	t, d := &c.Timeouts, DefaultTimeouts
	orDefault(&t.Launch, d.Launch)
	orDefault(&t.Teardown, d.Teardown)
	orDefault(&t.ShutdownGrace, d.ShutdownGrace)
	orDefault(&t.StateWrite, d.StateWrite)
	orDefault(&t.Cleanup, d.Cleanup)
	orDefault(&t.LXDRetryCap, d.LXDRetryCap)
	orDefault(&t.StepCoalesce, d.StepCoalesce)
	c.Pools = slices.Clone(c.Pools)
	for i := range c.Pools {
		orDefault(&c.Pools[i].Type, "container")
		orDefault(&c.Pools[i].MaxIdleAge, DefaultMaxIdleAge)
		orDefault(&c.Pools[i].RunnerGroup, DefaultRunnerGroup)
		orDefault(&c.Pools[i].RunnerGroupPolicy, PolicyRefuse)
	}
	return c
}

func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Pool names become part of instance names, which LXD limits to 63
// characters of letters, digits and hyphens.
var poolName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$`)
var namePrefix = regexp.MustCompile(`^[a-z][a-z0-9-]{0,15}$`)

// Validate lists every problem of the configuration.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.MaxInstances <= 0 {
		add("limits.max_instances must be at least 1")
	}
	for _, d := range []struct {
		key string
		d   time.Duration
	}{
		{"limits.registration_timeout", c.RegistrationTimeout}, {"limits.max_job_duration", c.MaxJobDuration},
		{"limits.launch_timeout", c.Timeouts.Launch}, {"reconcile_interval", c.ReconcileInterval},
		{"shutdown_grace", c.Timeouts.ShutdownGrace}, {"installations_interval", c.InstallationsInterval},
	} {
		if d.d < 0 {
			add("%s %s: must not be negative", d.key, d.d)
		}
	}
	if c.Retention != 0 && c.Retention < 72*time.Hour {
		add("retention %s: keep at least 72h, since GitHub may redeliver a webhook for three days", c.Retention)
	}
	if c.MaxPrepared < 0 {
		add("limits.max_prepared must not be negative")
	}
	if c.MaxAttempts < 0 {
		add("limits.max_attempts must not be negative")
	}
	if c.NamePrefix != "" && !namePrefix.MatchString(c.NamePrefix) {
		add("runner_prefix %q: must start with a letter and hold at most 16 lowercase letters, digits and hyphens", c.NamePrefix)
	}
	if len(c.Pools) == 0 {
		add("pools: at least one pool is required")
	}
	for _, k := range slices.Sorted(maps.Keys(c.TargetLimits)) {
		switch n := c.TargetLimits[k]; {
		case strings.TrimPrefix(k, "@") == "" || strings.ContainsAny(k, " /\t\n") || strings.LastIndex(k, "@") > 0:
			add("limits.targets %q: want a cluster member's name or @group", k)
		case n < 1:
			add("limits.targets %q: %d: a limit must be at least 1 (drain a member to stop launches there)", k, n)
		}
	}
	seen := map[string]bool{}
	for i, p := range c.Pools {
		where := fmt.Sprintf("pools[%d]", i)
		if p.Name != "" {
			where += " (" + p.Name + ")"
		}
		switch {
		case p.Name == "":
			add("%s: name is required", where)
		case !poolName.MatchString(p.Name):
			add("%s: name must be 1-30 lowercase letters, digits and inner hyphens", where)
		case seen[p.Name]:
			add("%s: duplicate pool name", where)
		}
		seen[p.Name] = true
		if len(p.Labels) == 0 {
			add("%s: labels are required (JIT runners get no default labels: list self-hosted, os and arch too)", where)
		}
		for _, l := range p.Labels {
			if strings.TrimSpace(l) == "" {
				add("%s: empty label", where)
			}
		}
		if (p.Image == "") == (p.SourceInstance == "") {
			add("%s: set exactly one of image or source_instance", where)
		}
		if p.Type != "" && p.Type != "container" && p.Type != "virtual-machine" {
			add("%s: type must be container or virtual-machine, not %q", where, p.Type)
		}
		if p.MaxInstances < 0 {
			add("%s: max_instances must not be negative", where)
		}
		if t := p.Target; t != "" && (strings.TrimPrefix(t, "@") == "" || strings.ContainsAny(t, " /\t\n") || strings.LastIndex(t, "@") > 0) {
			add("%s: target %q: want a cluster member's name or @group", where, t)
		}
		if p.MinIdle < 0 || p.MaxIdleAge < 0 {
			add("%s: min_idle and max_idle_age must not be negative", where)
		}
		switch p.RunnerGroupPolicy {
		case "", PolicyRefuse, PolicyWarn:
		default:
			add("%s: runner_group_policy must be %s or %s, not %q", where, PolicyRefuse, PolicyWarn, p.RunnerGroupPolicy)
		}
		if p.RunnerGroup != strings.TrimSpace(p.RunnerGroup) {
			add("%s: runner_group %q: leading or trailing spaces", where, p.RunnerGroup)
		}
		switch {
		case p.Prepared < 0:
			add("%s: prepared must not be negative", where)
		case p.Prepared > 0 && p.Image == "":
			add("%s: prepared needs image: a copy of source_instance would not notice that its source changed", where)
		}
		for _, o := range p.Organizations {
			if strings.TrimSpace(o) == "" || strings.ContainsAny(o, " /\t\n") {
				add("%s: organizations: %q is not an organization's login", where, o)
			}
		}
		if p.MaxInstances > 0 && p.MinIdle > p.MaxInstances {
			add("%s: min_idle (%d) exceeds the pool's max_instances (%d)", where, p.MinIdle, p.MaxInstances)
		}
		for k := range p.Config {
			if strings.HasPrefix(k, "user.runner.") {
				add("%s: config key %q is reserved for the service", where, k)
			}
			if k == "volatile" || strings.HasPrefix(k, "volatile.") {
				add("%s: config key %q is set by LXD, not by pools", where, k)
			}
		}
	}
	return errors.Join(errs...)
}

// route picks the pool for a queued job: the first pool, in config order,
// whose labels cover every label of the job (case-insensitive, as GitHub
// matches) and whose repository policy admits it. reason says why none did.
func (c Config) route(labels []string, org, repo string, public bool) (pool *Pool, reason string) {
	reason = ReasonNoPool
	for i := range c.Pools {
		p := &c.Pools[i]
		if !labelsCover(p.Labels, labels) {
			continue
		}
		if !p.serves(org) {
			if reason == ReasonNoPool {
				reason = ReasonOrgNotServed
			}
			continue
		}
		if public && !p.AllowPublicRepositories {
			if reason == ReasonNoPool {
				reason = ReasonPublicRepository
			}
			continue
		}
		if len(p.Repositories) > 0 && !repoAllowed(p.Repositories, repo) {
			if reason == ReasonNoPool {
				reason = ReasonRepositoryNotAllowed
			}
			continue
		}
		return p, ""
	}
	return nil, reason
}

// Reasons a queued job is ignored.
const (
	ReasonNoPool               = "no pool matches the job's labels"
	ReasonPublicRepository     = "public repository refused (allow_public_repositories is off)"
	ReasonRepositoryNotAllowed = "repository not in the pool's allow-list"
	ReasonOrgNotServed         = "organization not among the pool's organizations"
)

// serves reports whether the pool serves the organization's jobs.
func (p *Pool) serves(org string) bool {
	if len(p.Organizations) == 0 {
		return true
	}
	for _, o := range p.Organizations {
		if strings.EqualFold(strings.TrimSpace(o), org) {
			return true
		}
	}
	return false
}

// labelsCover reports whether a runner with the given labels can take a job
// with jobLabels: every job label must be one of the runner's. A job with no
// labels matches nothing.
func labelsCover(runner, jobLabels []string) bool {
	if len(jobLabels) == 0 {
		return false
	}
	for _, jl := range jobLabels {
		found := false
		for _, rl := range runner {
			if strings.EqualFold(strings.TrimSpace(jl), strings.TrimSpace(rl)) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func repoAllowed(allow []string, repo string) bool {
	name := repo
	if i := strings.LastIndexByte(repo, '/'); i >= 0 {
		name = repo[i+1:]
	}
	for _, a := range allow {
		if strings.EqualFold(a, repo) || (!strings.Contains(a, "/") && strings.EqualFold(a, name)) {
			return true
		}
	}
	return false
}

func (c Config) pool(name string) *Pool {
	for i := range c.Pools {
		if c.Pools[i].Name == name {
			return &c.Pools[i]
		}
	}
	return nil
}
