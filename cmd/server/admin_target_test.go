package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The CLI finds the running service from its config, or from
// $LXD_GHA_AUTOSCALER_CONFIG: the admin listener on TCP, its token, and,
// with TLS, its certificate, with nothing repeated on the command line.
func TestCLIFindsTheServiceFromItsConfig(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		name := "tcp+token"
		if withTLS {
			name = "tls+token"
		}
		t.Run(name, func(t *testing.T) {
			e := newLiveEnv(t, withTLS)
			e.start()

			out, _, err := runAdmin(t, "status", "--config", e.path)
			if err != nil || !strings.HasPrefix(out, "ready\n") || !strings.Contains(out, "\nlinux ") {
				t.Fatalf("status --config: %v\n%s", err, out)
			}
			if out, _, err := runAdmin(t, "drain", "linux", "--config", e.path); err != nil || out != "pool linux: draining\n" {
				t.Fatalf("drain --config: %q, %v", out, err)
			}
			if out, _, err := runAdmin(t, "jobs", "--config", e.path); err != nil || out != "no jobs\n" {
				t.Fatalf("jobs --config: %q, %v", out, err)
			}

			// The same from the environment, for an operator's shell profile.
			t.Setenv(ConfigEnv, e.path)
			out, _, err = runAdmin(t, "status")
			if err != nil || !strings.Contains(out, "linux  0       0          0     0     0         global  yes") {
				t.Fatalf("status with $%s: %v\n%s", ConfigEnv, err, out)
			}
			if out, _, err := runAdmin(t, "undrain", "linux"); err != nil || out != "pool linux: not draining\n" {
				t.Fatalf("undrain with $%s: %q, %v", ConfigEnv, out, err)
			}
			// A flag wins over the config; --admin names another service,
			// whose token the config's is not.
			addr := e.cfg.admin
			if withTLS {
				addr = "https://" + addr
			}
			if _, _, err := runAdmin(t, "status", "--admin", addr); err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("--admin alone, the environment's token not sent: %v", err)
			}
			sock := "unix:" + filepath.Join(t.TempDir(), "none.sock")
			if _, _, err := runAdmin(t, "status", "--config", e.path, "--admin", sock); err == nil || !strings.Contains(err.Error(), sock) {
				t.Fatalf("--admin over --config: %v", err)
			}
		})
	}
}

func TestAdminFromConfig(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		yaml, addr, token, ca, err string
	}{
		"default socket": {yaml: "listen: 127.0.0.1:8080\n", addr: "unix:/run/lxd-gha-autoscaler/admin.sock"},
		"socket":         {yaml: "admin_listen: unix:/run/x.sock\n", addr: "unix:/run/x.sock"},
		"tcp token":      {yaml: "admin_listen: 127.0.0.1:9090\nadmin_token_file: /etc/t\n", addr: "127.0.0.1:9090", token: "/etc/t"},
		"every address":  {yaml: "admin_listen: 0.0.0.0:9443\nadmin_tls_cert_file: /etc/c\nadmin_tls_key_file: /etc/k\n", addr: "https://127.0.0.1:9443", ca: "/etc/c"},
		"ipv6 any":       {yaml: "admin_listen: '[::]:9090'\n", addr: "[::1]:9090"},
		"off":            {yaml: "admin_listen: \"off\"\n", err: "admin_listen is off"},
		"misspelt":       {yaml: "admin_lisen: x\n", err: "field admin_lisen not found"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(p, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := adminFromConfig(p)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want %q", name, err, tc.err)
			}
		case err != nil || got != (adminTarget{tc.addr, tc.token, tc.ca}):
			t.Errorf("%s: %+v, %v", name, got, err)
		}
	}
	// Named by the environment, it says so.
	t.Setenv(ConfigEnv, filepath.Join(dir, "missing.yaml"))
	if _, _, err := runAdmin(t, "status"); err == nil || !strings.Contains(err.Error(), "$"+ConfigEnv+"=") {
		t.Errorf("missing config named by the environment: %v", err)
	}
}
