package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin/admintest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
	"gopkg.in/yaml.v3"
)

// secrets writes a key and a webhook secret into dir.
func secrets(t *testing.T, dir string) (key, secret string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	key = filepath.Join(dir, "app.pem")
	secret = filepath.Join(dir, "webhook-secret")
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte("s3cr3t-webhook-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, secret
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExampleConfigIsValid(t *testing.T) {
	raw, err := os.ReadFile("../../deployments/config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	key, secret := secrets(t, t.TempDir())
	body := strings.NewReplacer(
		"/etc/lxd-gha-autoscaler/app.pem", key,
		"/etc/lxd-gha-autoscaler/webhook-secret", secret,
	).Replace(string(raw))
	c, err := loadConfig(writeConfig(t, body))
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if len(c.App.Scheduler.Pools) != 3 || c.App.Scheduler.MaxInstances != 20 || c.App.Scheduler.RegistrationTimeout != 10*time.Minute ||
		c.App.Scheduler.MaxJobDuration != 6*time.Hour || c.GitHub.AppID != 123456 || c.GitHub.RunnerGroup != "Default" ||
		string(c.App.WebhookSecret) != "s3cr3t-webhook-value" || c.App.Scheduler.Pools[2].Architecture != "aarch64" {
		t.Fatalf("loaded %+v", c.App.Scheduler)
	}
	if to := c.App.Scheduler.Timeouts; to.Launch != 5*time.Minute || to.ShutdownGrace != 15*time.Second {
		t.Fatalf("timeouts %+v, want launch_timeout 5m and shutdown_grace 15s", to)
	}
	// The gpu pool, whose labels cover linux-x64's, has a group of its own.
	if ps := c.App.Scheduler.Pools; ps[0].RunnerGroup != "Default" || ps[0].RunnerGroupPolicy != scheduler.PolicyRefuse ||
		ps[1].RunnerGroup != "gpu-runners" || len(c.Warnings) != 0 {
		t.Fatalf("runner groups: %+v; warnings %q", ps, c.Warnings)
	}
	// Its container pools use the hardened profile that deployments/lxd
	// ships, by the name that file gives it.
	var prof struct {
		Name string `yaml:"name"`
	}
	b, err := os.ReadFile("../../deployments/lxd/profile-hardened-container.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prof); err != nil || prof.Name == "" {
		t.Fatalf("hardened profile: %v %+v", err, prof)
	}
	for _, p := range c.App.Scheduler.Pools {
		if (p.Type == "" || p.Type == "container") && !slices.Contains(p.Profiles, prof.Name) {
			t.Errorf("pool %s: profiles %v, want %s", p.Name, p.Profiles, prof.Name)
		}
	}
}

// limits.launch_timeout and shutdown_grace reach the scheduler; left out,
// they take the scheduler's defaults.
func TestTimeoutSettings(t *testing.T) {
	key, secret := secrets(t, t.TempDir())
	base := `
github: {app_id: 1, private_key_file: ` + key + `, webhook_secret_file: ` + secret + `}
pools: [{name: linux, labels: [self-hosted, linux], image: img}]
`
	c, err := loadConfig(writeConfig(t, base+"limits: {max_instances: 2, launch_timeout: 7m}\nshutdown_grace: 40s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if to := c.App.Scheduler.Timeouts; to.Launch != 7*time.Minute || to.ShutdownGrace != 40*time.Second {
		t.Errorf("set: timeouts %+v, want launch 7m and shutdown grace 40s", to)
	}
	c, err = loadConfig(writeConfig(t, base+"limits: {max_instances: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := c.App.Scheduler.WithDefaults().Timeouts
	if d.Launch != scheduler.DefaultTimeouts.Launch || d.ShutdownGrace != scheduler.DefaultTimeouts.ShutdownGrace {
		t.Errorf("unset: timeouts %+v, want the scheduler's defaults", d)
	}
}

func TestConfigListsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	badKey := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(badKey, []byte("TOPSECRET-not-a-key"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := writeConfig(t, `
listen: "nonsense"
github:
  api_url: "ftp://x"
  private_key_file: `+badKey+`
lxd:
  socket: /run/x.sock
  url: https://lxd:8443
limits:
  max_instances: 0
pools:
  - name: Linux_X64
    image: img
    source_instance: base
  - name: gpu
    labels: [gpu]
    image: img
    config: {user.runner.pool: x}
`)
	_, err := loadConfig(p)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{
		"listen", "api_url", "app_id is required", "not a PEM encoded RSA private key", "webhook_secret_file is required",
		"max_instances", "lowercase", "labels are required", "exactly one of image or source_instance", "reserved",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if strings.Contains(msg, "TOPSECRET") {
		t.Fatal("the content of a secret file is in the error")
	}
	if t.Failed() {
		t.Log(msg)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	_, err := loadConfig(writeConfig(t, "limits:\n  max_instance: 3\n"))
	if err == nil || !strings.Contains(err.Error(), "max_instance") {
		t.Fatalf("err = %v, want the misspelt key named", err)
	}
}

func TestValidateCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"validate", "--config", writeConfig(t, "pools: []\n")}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "is not valid") {
		t.Fatalf("err = %v", err)
	}
	key, secret := secrets(t, t.TempDir())
	good := writeConfig(t, `
github: {app_id: 1, private_key_file: `+key+`, webhook_secret_file: `+secret+`}
limits: {max_instances: 2}
pools: [{name: linux, labels: [self-hosted, linux], image: img}]
`)
	out.Reset()
	if err := run(context.Background(), []string{"validate", "--config", good}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "ok") {
		t.Fatalf("output %q", out.String())
	}
	var u usageError
	if err := run(context.Background(), []string{"frobnicate"}, &out, &errOut); !errors.As(err, &u) {
		t.Fatalf("unknown command: %v", err)
	}
}

func TestAdminListenerOffLoopbackNeedsAToken(t *testing.T) {
	key, secret := secrets(t, t.TempDir())
	base := `
github: {app_id: 1, private_key_file: ` + key + `, webhook_secret_file: ` + secret + `}
limits: {max_instances: 2}
pools: [{name: linux, labels: [self-hosted, linux], image: img}]
`
	if _, err := loadConfig(writeConfig(t, base+"admin_listen: 0.0.0.0:9090\n")); err == nil || !strings.Contains(err.Error(), "admin_token_file") {
		t.Fatalf("err = %v, want a token required", err)
	}
	if _, err := loadConfig(writeConfig(t, base+"listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:8080\n")); err == nil || !strings.Contains(err.Error(), "must not be the webhook listener") {
		t.Fatalf("err = %v, want the shared port refused", err)
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte("t0k3n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := admintest.SelfSigned(t, "admin.example")
	certFile, keyFile := filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig(writeConfig(t, base+"admin_listen: 0.0.0.0:9090\nadmin_token_file: "+tokenFile+"\n")); err == nil ||
		err.Error() != "admin_listen 0.0.0.0:9090 is reachable from other hosts: set admin_tls_cert_file and admin_tls_key_file" {
		t.Fatalf("with a token, without TLS: %v", err)
	}
	c, err := loadConfig(writeConfig(t, base+"admin_listen: 0.0.0.0:9090\nadmin_token_file: "+tokenFile+
		"\nadmin_tls_cert_file: "+certFile+"\nadmin_tls_key_file: "+keyFile+"\n"))
	if err != nil || c.App.AdminToken != "t0k3n" || !bytes.Equal(c.App.AdminTLSCert, certPEM) || !bytes.Equal(c.App.AdminTLSKey, keyPEM) {
		t.Fatalf("with a token and TLS: %v", err)
	}
	// TLS on loopback too, if wanted.
	if c, err := loadConfig(writeConfig(t, base+"admin_listen: 127.0.0.1:9090\nadmin_tls_cert_file: "+certFile+"\nadmin_tls_key_file: "+keyFile+"\n")); err != nil || c.App.AdminTLSCert == nil {
		t.Fatalf("loopback with TLS: %v", err)
	}
	if c, err := loadConfig(writeConfig(t, base+"admin_listen: 127.0.0.1:9090\n")); err != nil || c.App.AdminListen != "127.0.0.1:9090" {
		t.Fatalf("loopback without a token: %v", err)
	}
}

// TestConfigProblemsOnceInTheFilesWords feeds bad config files to validate:
// each problem must be one line, in the file's keys, never a Go field name
// and never a secret.
func TestConfigProblemsOnceInTheFilesWords(t *testing.T) {
	dir := t.TempDir()
	key, secret := secrets(t, dir)
	fileMode := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
		return p
	}
	file := func(name, content string) string { return fileMode(name, content, 0o600) }
	keyPEM, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, tlsKeyPEM := admintest.SelfSigned(t, "lxd.example")
	_, otherKeyPEM := admintest.SelfSigned(t, "other.example")
	files := strings.NewReplacer(
		"{KEY}", key,
		"{SECRET}", secret,
		"{BADKEY}", file("bad.pem", "TOPSECRET-not-a-key"),
		"{EMPTY}", file("empty", " \n"),
		"{TOKEN}", file("admin-token", "t0k3n-TOPSECRET\n"),
		"{MISSING}", filepath.Join(dir, "missing"),
		// Secrets others may read, and certificates anyone may.
		"{GROUPKEY}", fileMode("group.pem", string(keyPEM), 0o640),
		"{OTHERSECRET}", fileMode("other-secret", "TOPSECRET\n", 0o604),
		"{OPENTOKEN}", fileMode("open-token", "t0k3n-TOPSECRET\n", 0o644),
		"{GROUPWRITABLEKEY}", fileMode("group-writable.key", "TOPSECRET", 0o620),
		"{OWNERONLYTOKEN}", fileMode("owner-only-token", "t0k3n-TOPSECRET\n", 0o400),
		"{CERT}", fileMode("public.crt", string(certPEM), 0o644),
		"{TLSKEY}", fileMode("tls.key", string(tlsKeyPEM), 0o600),
		"{OTHERTLSKEY}", fileMode("other-tls.key", string(otherKeyPEM), 0o600),
		"{OPENTLSKEY}", fileMode("open-tls.key", string(tlsKeyPEM), 0o640),
	)
	// Sections a case leaves out are valid.
	defaults := []struct{ key, body string }{
		{"github:", "github: {app_id: 1, private_key_file: {KEY}, webhook_secret_file: {SECRET}}\n"},
		{"limits:", "limits: {max_instances: 2}\n"},
		{"pools:", "pools: [{name: linux, labels: [self-hosted, linux], image: img}]\n"},
	}
	for _, tc := range []struct {
		name string
		yaml string
		want []string // each must be a line of its own, and there are no others
	}{
		{"remote lxd without certificates", "lxd: {url: https://lxd.example:8443}\n", []string{
			"lxd.client_cert is required with lxd.url",
			"lxd.client_key is required with lxd.url",
		}},
		{"lxd certificate files unreadable or empty", "lxd: {url: https://lxd.example:8443, client_cert: {MISSING}, client_key: {EMPTY}}\n", []string{
			"lxd.client_cert: open {MISSING}: no such file or directory",
			"lxd.client_key {EMPTY}: empty file",
		}},
		{"lxd socket and url, bad url and project", "lxd: {socket: /s, url: 'http://lxd', project: a/b}\n", []string{
			"lxd.socket and lxd.url are mutually exclusive",
			`lxd.url "http://lxd": scheme must be https`,
			"lxd.client_cert is required with lxd.url",
			"lxd.client_key is required with lxd.url",
			`lxd.project "a/b": must not contain '/' or spaces`,
		}},
		{"lxd certificates with the socket", "lxd: {client_cert: {KEY}}\n", []string{
			"lxd.client_cert, lxd.client_key and lxd.server_cert are only used with lxd.url",
		}},
		{"github", "github: {api_url: 'ftp://x', private_key_file: {BADKEY}, webhook_secret_file: {SECRET}, jit_per_minute: -1}\n", []string{
			`github.api_url "ftp://x": want an absolute http(s) URL without query`,
			"github.app_id is required",
			"github.private_key_file: not a PEM encoded RSA private key (PKCS#1 or PKCS#8)",
			"github.jit_per_minute must not be negative",
		}},
		{"github api_url with credentials", "github: {api_url: 'https://u:hunter2@ghe.example/', app_id: 1, private_key_file: {KEY}, webhook_secret_file: {SECRET}}\n", []string{
			"github.api_url must not contain credentials",
		}},
		{"github files missing", "github: {app_id: 1}\n", []string{
			"github.private_key_file is required",
			"github.webhook_secret_file is required",
		}},
		{"github files unreadable or empty", "github: {app_id: 1, private_key_file: {MISSING}, webhook_secret_file: {EMPTY}}\n", []string{
			"github.private_key_file: open {MISSING}: no such file or directory",
			"github.webhook_secret_file {EMPTY}: empty file",
		}},
		{"secret files open to others", "github: {app_id: 1, private_key_file: {GROUPKEY}, webhook_secret_file: {OTHERSECRET}}\n", []string{
			"github.private_key_file: {GROUPKEY} is mode 0640, open to its group: a secret must be its owner's alone; chmod 600 {GROUPKEY}",
			"github.webhook_secret_file: {OTHERSECRET} is mode 0604, open to others: a secret must be its owner's alone; chmod 600 {OTHERSECRET}",
		}},
		{"admin token open to all", "admin_listen: 0.0.0.0:9090\nadmin_token_file: {OPENTOKEN}\nadmin_tls_cert_file: {CERT}\nadmin_tls_key_file: {TLSKEY}\n", []string{
			"admin_token_file: {OPENTOKEN} is mode 0644, open to its group and others: a secret must be its owner's alone; chmod 600 {OPENTOKEN}",
		}},
		// The client key must be the owner's; the certificates need not.
		{"lxd client key writable by its group", "lxd: {url: https://lxd.example:8443, client_cert: {CERT}, client_key: {GROUPWRITABLEKEY}, server_cert: {CERT}}\n", []string{
			"lxd.client_key: {GROUPWRITABLEKEY} is mode 0620, open to its group: a secret must be its owner's alone; chmod 600 {GROUPWRITABLEKEY}",
		}},
		{"admin token readable by its owner only", "admin_listen: 0.0.0.0:9090\nadmin_token_file: {OWNERONLYTOKEN}\nadmin_tls_cert_file: {CERT}\nadmin_tls_key_file: {TLSKEY}\nlimits: {max_instances: 0}\n", []string{
			"limits.max_instances must be at least 1", // and nothing about the token
		}},
		{"admin listener off loopback without a token or TLS", "admin_listen: 0.0.0.0:9090\n", []string{
			"admin_listen 0.0.0.0:9090 is reachable from other hosts: set admin_token_file",
			"admin_listen 0.0.0.0:9090 is reachable from other hosts: set admin_tls_cert_file and admin_tls_key_file",
		}},
		{"admin listener off loopback without TLS", "admin_listen: 0.0.0.0:9090\nadmin_token_file: {TOKEN}\n", []string{
			"admin_listen 0.0.0.0:9090 is reachable from other hosts: set admin_tls_cert_file and admin_tls_key_file",
		}},
		{"admin token file empty", "admin_listen: 0.0.0.0:9090\nadmin_token_file: {EMPTY}\nadmin_tls_cert_file: {CERT}\nadmin_tls_key_file: {TLSKEY}\n", []string{
			"admin_token_file {EMPTY}: empty file",
		}},
		{"admin TLS on the unix socket", "admin_tls_cert_file: {CERT}\nadmin_tls_key_file: {TLSKEY}\n", []string{
			"admin_tls_cert_file and admin_tls_key_file are only used with a TCP admin_listen",
		}},
		{"admin TLS key without its certificate", "admin_listen: 127.0.0.1:9443\nadmin_tls_key_file: {TLSKEY}\n", []string{
			"admin_tls_cert_file is required with admin_tls_key_file",
		}},
		{"admin TLS files missing", "admin_listen: 0.0.0.0:9443\nadmin_token_file: {TOKEN}\nadmin_tls_cert_file: {MISSING}\nadmin_tls_key_file: {EMPTY}\n", []string{
			"admin_tls_cert_file: open {MISSING}: no such file or directory",
			"admin_tls_key_file {EMPTY}: empty file",
		}},
		{"admin TLS key of another certificate", "admin_listen: 127.0.0.1:9443\nadmin_tls_cert_file: {CERT}\nadmin_tls_key_file: {OTHERTLSKEY}\n", []string{
			"admin_tls_cert_file and admin_tls_key_file: tls: private key does not match public key",
		}},
		{"admin TLS key open to its group", "admin_listen: 0.0.0.0:9443\nadmin_token_file: {TOKEN}\nadmin_tls_cert_file: {CERT}\nadmin_tls_key_file: {OPENTLSKEY}\n", []string{
			"admin_tls_key_file: {OPENTLSKEY} is mode 0640, open to its group: a secret must be its owner's alone; chmod 600 {OPENTLSKEY}",
		}},
		{"admin listener not an address", "admin_listen: nonsense\nadmin_token_file: {TOKEN}\n", []string{
			`admin_listen "nonsense": want unix:/path, host:port or off`,
		}},
		{"admin listener on the webhook's", "listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:8080\n", []string{
			"admin_listen must not be the webhook listener: a proxy that exposes /webhook would expose the admin API",
		}},
		{"redeliver_interval out of range", "redeliver_interval: 48h\n", []string{
			"redeliver_interval 48h0m0s: must be between 1s and 24h0m0s",
		}},
		{"redeliver_interval beyond the lookback", "redeliver_interval: 12h\n", []string{
			"redeliver_interval 12h0m0s: must not be longer than the redelivery lookback (6h0m0s)",
		}},
		{"pool runner group policy", "pools: [{name: linux, labels: [self-hosted], image: img, runner_group_policy: ignore}]\n", []string{
			`pools[0] (linux): runner_group_policy must be refuse or warn, not "ignore"`,
		}},
		{"limits", "limits: {max_instances: 0, registration_timeout: -1s, launch_timeout: -2s}\nshutdown_grace: -3s\n", []string{
			"limits.max_instances must be at least 1",
			"limits.registration_timeout -1s: must not be negative",
			"limits.launch_timeout -2s: must not be negative",
			"shutdown_grace -3s: must not be negative",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.yaml
			for _, d := range defaults {
				if !strings.Contains(body, d.key) {
					body += d.body
				}
			}
			path := writeConfig(t, files.Replace(body))
			err := run(context.Background(), []string{"validate", "--config", path}, io.Discard, io.Discard)
			if err == nil {
				t.Fatal("validate: no error")
			}
			header, out, _ := strings.Cut(err.Error(), "\n")
			if header != path+" is not valid:" {
				t.Errorf("first line %q", header)
			}
			lines := strings.Split(out, "\n")
			for _, w := range tc.want {
				w = files.Replace(w)
				if n := strings.Count(out, w); n != 1 {
					t.Errorf("%q appears %d times, want once", w, n)
				}
			}
			if len(lines) != len(tc.want) {
				t.Errorf("%d problems, want %d", len(lines), len(tc.want))
			}
			for _, bad := range []string{
				// Go's names of the settings.
				"APIURL", "AppID", "PrivateKey", "JITPerMinute", "WebhookSecret", "Socket", "with URL",
				"ClientCert", "ClientKey", "ServerCert", "Project", "OpTimeout", "AdminListen", "AdminToken", "AdminTLS",
				"Interval", "Lookback", "MaxPerRound", "MaxInstances", "RegistrationTimeout", "Timeouts",
				// Secrets.
				"TOPSECRET", "hunter2", "s3cr3t", "PRIVATE KEY",
			} {
				if strings.Contains(out, bad) {
					t.Errorf("the output holds %q", bad)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// A pool's runner group is its own runner_group, else github.runner_group,
// else Default.
func TestPoolRunnerGroups(t *testing.T) {
	key, secret := secrets(t, t.TempDir())
	pools := `
limits: {max_instances: 2}
pools:
  - {name: linux, labels: [self-hosted, linux], image: img}
  - {name: gpu, labels: [self-hosted, gpu], image: img, runner_group: gpu-runners, runner_group_policy: warn}
`
	for _, tc := range []struct{ github, linux string }{
		{"github: {app_id: 1, private_key_file: " + key + ", webhook_secret_file: " + secret + "}", "Default"},
		{"github: {app_id: 1, private_key_file: " + key + ", webhook_secret_file: " + secret + ", runner_group: lxd}", "lxd"},
	} {
		c, err := loadConfig(writeConfig(t, tc.github+pools))
		if err != nil {
			t.Fatal(err)
		}
		ps := c.App.Scheduler.WithDefaults().Pools
		if ps[0].RunnerGroup != tc.linux || ps[0].RunnerGroupPolicy != scheduler.PolicyRefuse ||
			ps[1].RunnerGroup != "gpu-runners" || ps[1].RunnerGroupPolicy != scheduler.PolicyWarn {
			t.Errorf("%s: pools %+v", tc.github, ps)
		}
	}
}

func TestDatabaseSetting(t *testing.T) {
	dir := t.TempDir()
	key, secret := secrets(t, dir)
	pw := filepath.Join(dir, "db-password")
	if err := os.WriteFile(pw, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	openPW := filepath.Join(dir, "db-password-open")
	if err := os.WriteFile(openPW, []byte("hunter2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openPW, 0o644); err != nil {
		t.Fatal(err)
	}
	base := `
github: {app_id: 1, private_key_file: ` + key + `, webhook_secret_file: ` + secret + `}
limits: {max_instances: 2}
pools: [{name: linux, labels: [self-hosted, linux], image: img}]
`
	for _, tc := range []struct {
		name, yaml, want string // want "": valid
	}{
		{"one host", "database: postgres://gha@db.example:5432/gha?sslmode=require\n", ""},
		{"several hosts", "database: postgres://gha@10.0.0.1:5432,10.0.0.2:5432/gha?target_session_attrs=read-write\n", ""},
		{"with a password file", "database: postgresql://gha@db/gha\ndatabase_password_file: " + pw + "\n", ""},
		{"a password in the URL", "database: postgres://gha:s3cr3t@db/gha\n", "database: the URL holds a password: put it in database_password_file instead"},
		{"not PostgreSQL", "database: mysql://gha@db/gha\n", "database: want a postgres:// URL"},
		{"a password file without a database", "database_password_file: " + pw + "\n", "database_password_file is only used with database"},
		{"a missing password file", "database: postgres://gha@db/gha\ndatabase_password_file: /nonexistent/pw\n", "database_password_file: open /nonexistent/pw: no such file or directory"},
		{"a password file others may read", "database: postgres://gha@db/gha\ndatabase_password_file: " + openPW + "\n",
			"database_password_file: " + openPW + " is mode 0644, open to its group and others: a secret must be its owner's alone; chmod 600 " + openPW},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadConfig(writeConfig(t, base+tc.yaml))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.name == "with a password file" && c.DatabasePassword != "hunter2" {
					t.Errorf("password %q, want the file's", c.DatabasePassword)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "hunter2") {
				t.Fatal("a password reached the error")
			}
		})
	}
}

func TestWarmAndPreparedSettings(t *testing.T) {
	key, secret := secrets(t, t.TempDir())
	base := `
github: {app_id: 1, private_key_file: ` + key + `, webhook_secret_file: ` + secret + `}
`
	c, err := loadConfig(writeConfig(t, base+`installations_interval: 2m
limits: {max_instances: 4, max_prepared: 3}
pools: [{name: linux, labels: [self-hosted, linux], image: img, min_idle: 2, prepared: 2, organizations: [acme, beta]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	s := c.App.Scheduler
	if p := s.Pools[0]; s.MaxPrepared != 3 || s.InstallationsInterval != 2*time.Minute || p.Prepared != 2 || p.MinIdle != 2 ||
		!slices.Equal(p.Organizations, []string{"acme", "beta"}) {
		t.Fatalf("scheduler config = %+v", s)
	}
	_, err = loadConfig(writeConfig(t, base+`limits: {max_instances: 4, max_prepared: -1}
pools: [{name: linux, labels: [self-hosted, linux], source_instance: base, prepared: 1, organizations: ["a b"]}]
`))
	for _, want := range []string{"limits.max_prepared must not be negative", "pools[0] (linux): prepared needs image",
		`pools[0] (linux): organizations: "a b" is not an organization's login`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}
