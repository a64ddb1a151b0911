package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

// lxd.url is one address or a list of cluster members'; limits.targets
// caps runners per member or group. Both reach their packages, and their
// problems are named in the file's words.
func TestClusterConfig(t *testing.T) {
	dir := t.TempDir()
	key, secret := secrets(t, dir)
	cert, ckey, err := lxd.NewClientCertificate("t")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	for p, b := range map[string][]byte{certFile: cert, keyFile: ckey} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := "github: {app_id: 1, private_key_file: " + key + ", webhook_secret_file: " + secret + "}\n" +
		"pools: [{name: gpu, labels: [self-hosted, gpu], image: img, target: '@gpu'}]\n"
	certs := ", client_cert: " + certFile + ", client_key: " + keyFile + "}\n"

	c, err := loadConfig(writeConfig(t, base+"lxd: {url: [https://10.0.0.1:8443, https://10.0.0.2:8443]"+certs+
		"limits: {max_instances: 8, targets: {'@gpu': 2, node3: 4}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.LXD.URLs, []string{"https://10.0.0.1:8443", "https://10.0.0.2:8443"}) {
		t.Errorf("lxd.url list = %q", c.LXD.URLs)
	}
	if tl := c.App.Scheduler.TargetLimits; tl["@gpu"] != 2 || tl["node3"] != 4 || len(tl) != 2 {
		t.Errorf("limits.targets = %v", tl)
	}
	c, err = loadConfig(writeConfig(t, base+"lxd: {url: https://10.0.0.1:8443"+certs+"limits: {max_instances: 8}\n"))
	if err != nil || !slices.Equal(c.LXD.URLs, []string{"https://10.0.0.1:8443"}) {
		t.Fatalf("one lxd.url: %v %q", err, c.LXD.URLs)
	}

	_, err = loadConfig(writeConfig(t, base+"lxd: {url: [https://10.0.0.1:8443, 'http://10.0.0.2:8443', https://10.0.0.1:8443]"+certs+
		"limits: {max_instances: 8, targets: {'@': 2, node3: 0}}\n"))
	if err == nil {
		t.Fatal("bad lxd.url list and limits.targets accepted")
	}
	for _, want := range []string{
		`lxd.url "http://10.0.0.2:8443": scheme must be https`,
		`lxd.url "https://10.0.0.1:8443": listed twice`,
		`limits.targets "@": want a cluster member's name or @group`,
		`limits.targets "node3": 0: a limit must be at least 1`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems lack %q:\n%v", want, err)
		}
	}
}
