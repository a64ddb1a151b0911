package lxd

import (
	"strconv"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// The instance config keys that carry fleet.InstanceLabels. LXD alone can
// then tell which instances this service created, and what for, even with
// no state at all. This file is the only place that knows them.
const (
	keyOwner     = "user.runner.owner"      // the deployment's name prefix
	keyPool      = "user.runner.pool"       // pool name
	keyJobID     = "user.runner.job-id"     // the job whose queued event caused the launch
	keyCreatedAt = "user.runner.created-at" // RFC 3339, UTC
	keyRunnerID  = "user.runner.runner-id"  // GitHub runner id of the JIT runner
	keyOrg       = "user.runner.org"        // organization the runner is registered in
	keyInstall   = "user.runner.installation-id"
)

// labelKeys are every label key but KeyManaged: a copy from a source
// instance is given an explicit "" for each it does not set, so that a
// template's labels never pass for the copy's.
var labelKeys = []string{keyOwner, keyPool, keyJobID, keyCreatedAt, keyRunnerID, keyOrg, keyInstall}

// instanceConfig is the config a runner instance is created with: the
// pool's own config, the labels, and the JIT config for the runner to read
// through /dev/lxd/sock.
func instanceConfig(spec fleet.InstanceSpec) map[string]string {
	cfg := make(map[string]string, len(spec.Config)+len(labelKeys)+2)
	for k, v := range spec.Config {
		cfg[k] = v
	}
	setLabels(cfg, spec.Labels, spec.JITConfig)
	return cfg
}

// setLabels sets the labels, fleet.KeyManaged and the JIT config in cfg;
// a label that is zero is set to "", which LXD drops, so that a
// template's or a prepared instance's labels never pass for the runner's.
func setLabels(cfg map[string]string, l fleet.InstanceLabels, jit fleet.Secret) {
	for _, k := range labelKeys {
		cfg[k] = "" // LXD drops a key set to ""
	}
	cfg[fleet.KeyManaged] = "true"
	setNonZero(cfg, keyOwner, l.Owner)
	setNonZero(cfg, keyPool, l.Pool)
	setNonZero(cfg, keyOrg, l.Org)
	for k, v := range map[string]int64{keyJobID: l.JobID, keyRunnerID: l.RunnerID, keyInstall: l.InstallationID} {
		if v != 0 {
			cfg[k] = strconv.FormatInt(v, 10)
		}
	}
	if !l.CreatedAt.IsZero() {
		cfg[keyCreatedAt] = l.CreatedAt.UTC().Format(time.RFC3339)
	}
	cfg[fleet.KeyJITConfig] = jit.Reveal()
}

func setNonZero(cfg map[string]string, k, v string) {
	if v != "" {
		cfg[k] = v
	}
}

// toInstance reads an instance's labels back. A bad value is left zero:
// the keys are editable by anyone with access to LXD.
func toInstance(inst api.Instance) fleet.Instance {
	cfg := inst.Config
	out := fleet.Instance{
		Name:     inst.Name,
		Managed:  cfg[fleet.KeyManaged] == "true",
		State:    instanceState(inst.StatusCode),
		Location: location(inst.Location),
		Image:    cfg["volatile.base_image"],
		Labels: fleet.InstanceLabels{
			Owner:          cfg[keyOwner],
			Pool:           cfg[keyPool],
			JobID:          parseID(cfg[keyJobID]),
			RunnerID:       parseID(cfg[keyRunnerID]),
			Org:            cfg[keyOrg],
			InstallationID: parseID(cfg[keyInstall]),
		},
	}
	if v, err := time.Parse(time.RFC3339, cfg[keyCreatedAt]); err == nil {
		out.Labels.CreatedAt = v.UTC()
	}
	return out
}

func instanceState(code api.StatusCode) fleet.InstanceState {
	switch code {
	case api.Running:
		return fleet.InstanceRunning
	case api.Stopped:
		return fleet.InstanceStopped
	case api.Error:
		return fleet.InstanceError
	}
	return fleet.InstanceOther
}

// location is the member an instance is on; a standalone LXD says "none".
func location(loc string) string {
	if loc == "none" {
		return ""
	}
	return loc
}

// parseID returns a positive id, or 0 for anything else.
func parseID(s string) int64 {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}
