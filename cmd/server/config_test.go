package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	if len(c.Scheduler.Pools) != 3 || c.Scheduler.MaxInstances != 20 || c.Scheduler.RegistrationTimeout != 10*time.Minute ||
		c.Scheduler.MaxJobDuration != 6*time.Hour || c.GitHub.AppID != 123456 || c.GitHub.RunnerGroup != "Default" ||
		string(c.WebhookSecret) != "s3cr3t-webhook-value" || c.Scheduler.Pools[2].Architecture != "aarch64" {
		t.Fatalf("loaded %+v", c.Scheduler)
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
		"listen", "api_url", "app_id is required", "not a PEM RSA private key", "webhook_secret_file is required",
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
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte("t0k3n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(writeConfig(t, base+"admin_listen: 0.0.0.0:9090\nadmin_token_file: "+tokenFile+"\n"))
	if err != nil || c.AdminToken != "t0k3n" {
		t.Fatalf("with a token: %v", err)
	}
	if c, err := loadConfig(writeConfig(t, base+"admin_listen: 127.0.0.1:9090\n")); err != nil || c.AdminListen != "127.0.0.1:9090" {
		t.Fatalf("loopback without a token: %v", err)
	}
}
