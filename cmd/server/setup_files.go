package main

// What setup writes: the App's key and webhook secret (0600) and a new config,
// never over an existing file.

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	texttemplate "text/template"
)

// write writes the key and the webhook secret, the owner's alone, and the
// config, never over a file: a file that appeared meanwhile fails it.
func (p *setupPlan) write(app setupApp) error {
	rescue := fmt.Sprintf(" (the App %s exists at GitHub: delete it at %s/advanced, or generate a new key there)", app.Slug, strings.TrimRight(app.HTMLURL, "/"))
	if err := p.create(p.paths.key, []byte(app.PEM), 0o600, true); err != nil {
		return fmt.Errorf("%w%s", err, rescue)
	}
	if err := p.create(p.paths.secret, []byte(app.WebhookSecret+"\n"), 0o600, true); err != nil {
		return fmt.Errorf("%w%s", err, rescue)
	}
	cfg, err := p.config(app)
	if err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if p.gid >= 0 {
		mode = 0o640
	}
	if err := p.create(p.paths.config, cfg, mode, false); err != nil {
		return fmt.Errorf("%w: github.app_id is %d", err, app.ID)
	}
	return nil
}

// create writes a new file; a secret is given to the owner, the config to
// the owner's group.
func (p *setupPlan) create(path string, b []byte, mode os.FileMode, secret bool) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := f.Chmod(mode); err != nil { // whatever the umask
		return err
	}
	if p.uid >= 0 {
		uid := p.uid
		if !secret {
			uid = -1 // the config stays its writer's, readable by the group
		}
		if err := f.Chown(uid, p.gid); err != nil {
			return err
		}
	}
	_, err = f.Write(b)
	return err
}

// setupConfig is YAML: the values that may hold anything are quoted as
// JSON strings, which YAML reads alike.
var setupConfig = texttemplate.Must(texttemplate.New("config").Funcs(texttemplate.FuncMap{
	"q": func(s string) string { b, _ := json.Marshal(s); return string(b) },
}).Parse(`# Written by lxd-gha-autoscaler setup for the GitHub App {{.Slug}} (id {{.ID}}).
# Every key, with comments: deployments/config.example.yaml. Check the
# whole setup with: lxd-gha-autoscaler doctor --config {{.Config}}

listen: 127.0.0.1:8080
admin_listen: unix:/run/lxd-gha-autoscaler/admin.sock
state_dir: /var/lib/lxd-gha-autoscaler
runner_prefix: gha-

github:
  api_url: {{q .API}}
  app_id: {{.ID}}
  private_key_file: {{q .Key}}
  webhook_secret_file: {{q .Secret}}
  runner_group: Default

lxd:
  socket: {{q .Socket}}
  project: default

limits:
  max_instances: 4

# A queued job goes to the first pool whose labels include all of its
# runs-on labels. Change the labels, the image and the limits to yours.
pools:
  - name: linux-x64
    labels: [self-hosted, linux, x64]
    image: gha-runner
    profiles: [hardened-container]
    max_instances: 4

# The runner image that "lxd-gha-autoscaler image build gha-runner" makes
# (see deployments/README.md): uncomment, with the runner's version and its
# tarball's sha256 from https://github.com/actions/runner/releases.
# images:
#   - name: gha-runner
#     source: debian12
#     runner:
#       version: RUNNER_VERSION
#       sha256: RUNNER_SHA256
#     steps: [steps/base.sh]
`))

// config is the new config: the App's id and files, the LXD socket found
// here, and one pool.
func (p *setupPlan) config(app setupApp) ([]byte, error) {
	socket := defaultSocket
	for _, s := range []string{defaultSocket, "/var/snap/lxd/common/lxd/unix.socket"} {
		if _, err := os.Stat(s); err == nil {
			socket = s
			break
		}
	}
	var b strings.Builder
	err := setupConfig.Execute(&b, map[string]any{"Slug": app.Slug, "ID": app.ID, "API": p.api, "Key": p.paths.key,
		"Secret": p.paths.secret, "Socket": socket, "Config": p.paths.config})
	return []byte(b.String()), err
}

func (p *setupPlan) summary(app setupApp, install string) string {
	owner := ""
	if p.owner != "" {
		owner = ", owner " + p.owner
	}
	return fmt.Sprintf(`
Created the GitHub App %s (id %d): %s
Wrote %s and %s (mode 0600%s) and %s (github.app_id: %d).

Next:
  1. Install the App on %s, for all repositories:
     %s
  2. Edit %s: the pools and the runner image.
  3. lxd-gha-autoscaler doctor --config %s --webhook-url %s
`, app.Slug, app.ID, app.HTMLURL, p.paths.key, p.paths.secret, owner, p.paths.config, app.ID,
		p.org, install, p.paths.config, p.paths.config, p.webhookURL)
}
