package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin/admintest"
)

// adminServer serves the fake backend's admin API on TCP and returns the
// --admin value for it.
func adminServer(t *testing.T, b admin.Backend, token string) string {
	t.Helper()
	srv := httptest.NewServer(admin.NewHandler(b, admin.Options{Token: token, Log: zerolog.Nop()}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// adminSocket serves it on a unix socket in a temp dir.
func adminSocket(t *testing.T, b admin.Backend) string {
	t.Helper()
	addr := "unix:" + filepath.Join(t.TempDir(), "admin.sock")
	ln, err := admin.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- admin.Serve(ctx, ln, admin.NewHandler(b, admin.Options{Log: zerolog.Nop()})) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return addr
}

func runAdmin(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	handled, err := adminCommand(context.Background(), args[0], args[1:], &out, &errOut)
	if !handled {
		t.Fatalf("%s not handled", args[0])
	}
	return out.String(), errOut.String(), err
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestAdminCommandNotOurs(t *testing.T) {
	for _, cmd := range []string{"serve", "validate", "dev", "version", "help", "nope"} {
		handled, err := adminCommand(context.Background(), cmd, nil, &bytes.Buffer{}, &bytes.Buffer{})
		if handled || err != nil {
			t.Errorf("%s: handled %v, err %v", cmd, handled, err)
		}
	}
}

func TestAdminStatus(t *testing.T) {
	for name, addr := range map[string]string{
		"tcp":  adminServer(t, admintest.New(), ""),
		"unix": adminSocket(t, admintest.New()),
	} {
		t.Run(name, func(t *testing.T) {
			out, _, err := runAdmin(t, "status", "--admin", addr)
			if err != nil {
				t.Fatal(err)
			}
			want := `ready
last webhook received at 2025-03-14 09:29:54Z (workflow_job)

POOL   QUEUED  LAUNCHING  IDLE  BUSY  PREPARED  MAX     DRAINING
linux  0       1          2     1     0         10
gpu    1       0          0     0     0         global  yes

last jobs:
JOB   POOL   STATE                WAIT   BOOT   RUN    REPO      RUNNER              REASON
1004  -      ignored              -      -      -      acme/web  -                   no pool matches the job's labels
1003  gpu    queued               3m12s  -      -      acme/ml   -                   pool gpu is draining
1002  linux  in_progress          4.0s   5.0s   -      acme/api  gha-linux-2b7c91d0
1001  linux  completed (success)  10.0s  10.0s  1m00s  acme/api  gha-linux-4aeb8f23
`
			if out != want {
				t.Errorf("status output:\n%s\nwant:\n%s", out, want)
			}
		})
	}
}

func TestAdminStatusNotReady(t *testing.T) {
	b := &admintest.Backend{StatusFunc: func(context.Context) (admin.Status, error) {
		return admin.Status{Checks: map[string]string{"store": "ok", "lxd": "connection refused", "github": "401 Bad credentials"}}, nil
	}}
	out, _, err := runAdmin(t, "status", "--admin", adminServer(t, b, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "not ready:\n  github: 401 Bad credentials\n  lxd: connection refused\n"+
		"no webhook received yet: check the App's webhook URL, the proxy and the webhook secret (lxd-gha-autoscaler doctor --webhook-url URL)\n\n") {
		t.Errorf("output:\n%s", out)
	}
	wantLines(t, out, "(no pools)", "no jobs yet")
}

func TestAdminJSON(t *testing.T) {
	b := admintest.New()
	addr := adminServer(t, b, "")
	for _, args := range [][]string{
		{"status"}, {"jobs"}, {"job", "1001"}, {"drain", "linux"}, {"undrain", "gpu"}, {"instance", "delete", "gha-linux-2b7c91d0"},
	} {
		out, _, err := runAdmin(t, append(args, "--admin", addr, "--json")...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		// As is: the API's indented JSON, byte for byte.
		var v map[string]any
		if err := json.Unmarshal([]byte(out), &v); err != nil || !strings.HasPrefix(out, "{\n  \"") {
			t.Errorf("%v --json: %v\n%s", args, err, out)
		}
	}
	out, _, _ := runAdmin(t, "job", "--json", "--admin", addr, "1001")
	var d admin.JobDetail
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.ID != 1001 || len(d.Events) != 8 || d.Wait != 10*time.Second {
		t.Errorf("job --json: %v %+v", err, d)
	}
}

func TestAdminJobs(t *testing.T) {
	b := admintest.New()
	addr := adminServer(t, b, "")
	out, _, err := runAdmin(t, "jobs", "--admin", addr, "--pool", "linux", "--limit", "5")
	if err != nil {
		t.Fatal(err)
	}
	want := `JOB   QUEUED                POOL   STATE                WAIT   BOOT   RUN    REPO      LABELS             RUNNER              REASON
1002  2025-03-14 09:27:53Z  linux  in_progress          4.0s   5.0s   -      acme/api  self-hosted,linux  gha-linux-2b7c91d0
1001  2025-03-14 09:26:53Z  linux  completed (success)  10.0s  10.0s  1m00s  acme/api  self-hosted,linux  gha-linux-4aeb8f23
`
	if out != want {
		t.Errorf("jobs output:\n%s\nwant:\n%s", out, want)
	}
	if calls := b.CallLog(); calls[len(calls)-1] != "Jobs pool=linux state= limit=5" {
		t.Errorf("query: %v", calls)
	}
	out, _, err = runAdmin(t, "jobs", "--admin", addr, "--state", "abandoned")
	if err != nil || out != "no jobs\n" {
		t.Errorf("no match: %q %v", out, err)
	}
	_, _, err = runAdmin(t, "jobs", "--admin", addr, "--pool", "nope")
	if err == nil || err.Error() != `unknown pool "nope": bad request (HTTP 400)` {
		t.Errorf("unknown pool: %v", err)
	}
	_, _, err = runAdmin(t, "jobs", "--admin", addr, "--limit", "-1")
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("bad limit: %v", err)
	}
}

func TestAdminJob(t *testing.T) {
	addr := adminSocket(t, admintest.New())
	out, _, err := runAdmin(t, "job", "1001", "--admin", addr)
	if err != nil {
		t.Fatal(err)
	}
	want := `job 1001  acme/api  completed (success)
  pool:   linux
  labels: self-hosted, linux
  runner: gha-linux-4aeb8f23
  time:   wait 10.0s, boot 10.0s, run 1m00s
  queued: 2025-03-14 09:26:53Z

timeline (offsets from queued):
  +0.000s  queued       labels self-hosted, linux
  +0.005s  accepted     pool linux
   +8.00s  launched     gha-linux-4aeb8f23
  +10.00s  started      gha-linux-4aeb8f23
  +14.00s  online       gha-linux-4aeb8f23
  +20.00s  in_progress  on gha-linux-4aeb8f23
   +1m20s  completed    success
   +1m22s  deleted      instance gha-linux-4aeb8f23
`
	if out != want {
		t.Errorf("job output:\n%s\nwant:\n%s", out, want)
	}

	out, _, err = runAdmin(t, "job", "1003", "--admin", addr)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, "job 1003  acme/ml  queued\n", "  reason: pool gpu is draining\n", "wait 3m12s so far, boot -, run -", "no timeline recorded")

	_, _, err = runAdmin(t, "job", "42", "--admin", addr)
	if err == nil || err.Error() != "job 42: not found (HTTP 404)" {
		t.Errorf("missing job: %v", err)
	}
}

func TestAdminDrainAndDelete(t *testing.T) {
	b := admintest.New()
	addr := adminServer(t, b, "")
	for _, c := range []struct {
		args []string
		out  string
	}{
		{[]string{"drain", "linux"}, "pool linux: draining\n"},
		{[]string{"undrain", "gpu"}, "pool gpu: not draining\n"},
		{[]string{"instance", "delete", "gha-linux-2b7c91d0"}, "instance gha-linux-2b7c91d0: deleted\n"},
	} {
		out, _, err := runAdmin(t, append(c.args, "--admin", addr)...)
		if err != nil || out != c.out {
			t.Errorf("%v: %q %v, want %q", c.args, out, err, c.out)
		}
	}
	if _, _, err := runAdmin(t, "drain", "nope", "--admin", addr); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("unknown pool: %v", err)
	}
	if _, _, err := runAdmin(t, "instance", "delete", "not-ours", "--admin", addr); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("unknown instance: %v", err)
	}
	// Names are path-escaped, never a path of their own.
	if _, _, err := runAdmin(t, "drain", "../instances/x", "--admin", addr); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("odd pool name: %v", err)
	}
	want := "SetDrain linux true|SetDrain gpu false|DeleteInstance gha-linux-2b7c91d0|SetDrain nope true|DeleteInstance not-ours|SetDrain ../instances/x true"
	if got := strings.Join(b.CallLog(), "|"); got != want {
		t.Errorf("calls %s\nwant  %s", got, want)
	}
}

func TestAdminToken(t *testing.T) {
	addr := adminServer(t, admintest.New(), "s3cret")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, _, err := runAdmin(t, "status", "--admin", addr); err == nil || !strings.Contains(err.Error(), "HTTP 401") || !strings.Contains(err.Error(), "--token-file") {
		t.Errorf("no token: %v", err)
	}
	if _, _, err := runAdmin(t, "status", "--admin", addr, "--token-file", write("wrong", "nope\n")); err == nil || !strings.Contains(err.Error(), "HTTP 401") {
		t.Errorf("wrong token: %v", err)
	}
	if _, _, err := runAdmin(t, "status", "--admin", addr, "--token-file", write("right", "s3cret\n")); err != nil {
		t.Errorf("right token (with a newline): %v", err)
	}
	open := write("open", "s3cret\n")
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runAdmin(t, "status", "--admin", addr, "--token-file", open); err == nil ||
		err.Error() != "admin token: "+open+" is mode 0644, open to its group and others: a secret must be its owner's alone; chmod 600 "+open {
		t.Errorf("token file others may read: %v", err)
	}
	if _, _, err := runAdmin(t, "status", "--admin", addr, "--token-file", write("empty", " \n")); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty token file: %v", err)
	}
	if _, _, err := runAdmin(t, "status", "--admin", addr, "--token-file", filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing token file: %v", err)
	}
}

func TestAdminUsage(t *testing.T) {
	for _, args := range [][]string{
		{"job"}, {"job", "1", "2"}, {"job", "x"}, {"job", "0"}, {"drain"}, {"undrain", "a", "b"},
		{"instance"}, {"instance", "delete"}, {"instance", "stop", "x"}, {"instance", "delete", ""},
		{"status", "extra"}, {"status", "--nope"}, {"jobs", "--limit", "x"},
	} {
		_, stderr, err := runAdmin(t, args...)
		var u usageError
		if !errors.As(err, &u) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
		if stderr == "" {
			t.Errorf("%q: nothing on stderr", args)
		}
	}
	_, stderr, err := runAdmin(t, "jobs", "-h")
	if err != nil || !strings.Contains(stderr, "usage: lxd-gha-autoscaler jobs [--pool P]") || !strings.Contains(stderr, "-token-file") {
		t.Errorf("-h: %v\n%s", err, stderr)
	}
	// "--" ends the flags.
	b := admintest.New()
	addr := adminServer(t, b, "")
	if _, _, err := runAdmin(t, "drain", "--admin", addr, "--", "--json"); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("drain -- --json: %v", err)
	}
	if calls := b.CallLog(); len(calls) != 1 || calls[0] != "SetDrain --json true" {
		t.Errorf("calls %v", calls)
	}
}

func TestAdminUnreachable(t *testing.T) {
	sock := "unix:" + filepath.Join(t.TempDir(), "none.sock")
	_, _, err := runAdmin(t, "status", "--admin", sock)
	if err == nil || !strings.Contains(err.Error(), "is the service running?") || !strings.Contains(err.Error(), sock) {
		t.Errorf("no service: %v", err)
	}
	for _, bad := range []string{"unix:", "nohostport", "::::"} {
		if _, _, err := runAdmin(t, "status", "--admin", bad); err == nil || !strings.Contains(err.Error(), "--admin") {
			t.Errorf("--admin %q: %v", bad, err)
		}
	}
}

// A server that is not the admin API (a proxy's error page) gives an
// error carrying what it said, not a JSON decoding failure.
func TestAdminNonJSONError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "bad gateway", http.StatusBadGateway)
	}))
	defer srv.Close()
	_, _, err := runAdmin(t, "status", "--admin", srv.URL)
	if err == nil || err.Error() != "bad gateway (HTTP 502)" {
		t.Errorf("got %v", err)
	}
}

// Labels, repositories, runner names and reasons come from workflows: the
// CLI shows their control characters, escape sequences and bidi controls
// written out, one field per cell, one row per line.
func TestAdminHostileText(t *testing.T) {
	b := admintest.Hostile()
	addr := adminServer(t, b, "")
	// The invalid byte arrives as U+FFFD: JSON has no other way to carry it.
	const esc = `\x1b]0;owned\x07\x1b[2J\n\t\u009b31m\u202e\u2066\u200b` + "\ufffd"
	for _, tc := range []struct {
		args  []string
		lines int      // lines of output
		want  []string // among them
	}{
		{[]string{"status"}, 11, []string{
			"not ready:", "  lxd" + esc + ": down" + esc, "last webhook received at 2025-03-14 09:26:53Z (ping" + esc + ")",
			"replica replica" + esc + " follows; leader" + esc + " leads, since 2025-03-14 09:26:53Z",
			"pool" + esc + "  1", "7    pool" + esc + "  in_progress" + esc + " (success" + esc + ")  1.0s",
		}},
		{[]string{"jobs"}, 2, []string{
			"acme/" + esc + "  self-hosted" + esc + ",linux" + esc + "  runner" + esc + "  why" + esc,
		}},
		{[]string{"job", "7"}, 11, []string{
			"job 7  acme/" + esc + "  in_progress" + esc + " (success" + esc + ")",
			"  labels: self-hosted" + esc + ", linux" + esc,
			"  runner: runner" + esc, "  reason: why" + esc,
			"  +0.000s  queued" + esc + "      labels" + esc + "\n",
			"   +1.00s  launched" + esc + "    runner" + esc + "\n",
		}},
		{[]string{"drain", "pool" + admintest.Evil}, 1, []string{"pool pool" + esc + ": draining"}},
		{[]string{"instance", "delete", "runner" + admintest.Evil}, 1, []string{"instance runner" + esc + ": deleted"}},
	} {
		t.Run(tc.args[0], func(t *testing.T) {
			out, _, err := runAdmin(t, append(tc.args, "--admin", addr)...)
			if err != nil {
				t.Fatal(err)
			}
			onlyPrintable(t, out)
			if n := strings.Count(out, "\n"); n != tc.lines {
				t.Errorf("%d lines, want %d:\n%s", n, tc.lines, out)
			}
			wantLines(t, out, tc.want...)
		})
	}

	// The API's errors are shown escaped too: they may echo a name, or be
	// a proxy's page.
	b.SetDrainFunc = func(context.Context, string, bool) error {
		return fmt.Errorf("no pool %s: %w", "x"+admintest.Evil, admin.ErrBadRequest)
	}
	_, _, err := runAdmin(t, "drain", "x", "--admin", addr)
	if err == nil || err.Error() != "no pool x"+esc+": bad request (HTTP 400)" {
		t.Errorf("error: %v", err)
	}
}

// onlyPrintable fails the test if s holds anything but printable runes and
// newlines.
func onlyPrintable(t *testing.T, s string) {
	t.Helper()
	for i, r := range s {
		if r != '\n' && (!unicode.IsPrint(r) || (r == utf8.RuneError && !strings.HasPrefix(s[i:], "\ufffd"))) {
			t.Errorf("%U at byte %d, in %q", r, i, s[max(0, i-20):min(len(s), i+20)])
			return
		}
	}
}

// adminTLSServer serves the fake backend's admin API over TLS with a
// self-signed certificate for 127.0.0.1, and returns its host:port and the
// certificate's file.
func adminTLSServer(t *testing.T, token string) (addr, certFile string) {
	t.Helper()
	certPEM, keyPEM := admintest.SelfSigned(t, "127.0.0.1")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(admin.NewHandler(admintest.New(), admin.Options{Token: token, Log: zerolog.Nop()}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	certFile = filepath.Join(t.TempDir(), "admin.crt")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.Listener.Addr().String(), certFile
}

func TestAdminTLS(t *testing.T) {
	addr, certFile := adminTLSServer(t, "s3cret")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Trusting the listener's own certificate, as https:// or as a bare
	// host:port that --ca-file makes https.
	for _, a := range []string{"https://" + addr, addr} {
		out, _, err := runAdmin(t, "status", "--admin", a, "--ca-file", certFile, "--token-file", tokenFile)
		if err != nil || !strings.HasPrefix(out, "ready\n") {
			t.Errorf("--admin %s --ca-file: %v\n%s", a, err, out)
		}
	}
	// The system's roots do not know it; nor does another certificate.
	if _, _, err := runAdmin(t, "status", "--admin", "https://"+addr, "--token-file", tokenFile); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without --ca-file: %v", err)
	}
	otherPEM, _ := admintest.SelfSigned(t, "127.0.0.1")
	other := filepath.Join(dir, "other.crt")
	if err := os.WriteFile(other, otherPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runAdmin(t, "status", "--admin", addr, "--ca-file", other, "--token-file", tokenFile); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("another certificate: %v", err)
	}
	// Plain HTTP to the TLS listener gets nothing of the API.
	if _, _, err := runAdmin(t, "status", "--admin", "http://"+addr); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("plain HTTP: %v", err)
	}
	for _, tc := range []struct{ args []string }{
		{[]string{"--admin", addr, "--ca-file", filepath.Join(dir, "missing")}},
		{[]string{"--admin", addr, "--ca-file", tokenFile}}, // not PEM
		{[]string{"--admin", "http://" + addr, "--ca-file", certFile}},
		{[]string{"--admin", "unix:/run/x.sock", "--ca-file", certFile}},
	} {
		if _, _, err := runAdmin(t, append([]string{"status"}, tc.args...)...); err == nil || !strings.Contains(err.Error(), "--ca-file") {
			t.Errorf("%v: %v", tc.args, err)
		}
	}
}

// The CLI never sends the token in clear to a host other than loopback.
// (Checked before any connection: these addresses are never dialled.)
func TestAdminTokenNeverInClearOffLoopback(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"admin.invalid:9090", "http://admin.invalid:9090", "http://admin.invalid", "0.0.0.0:9090"} {
		_, err := newAdminClient(addr, tokenFile, "")
		if err == nil || !strings.Contains(err.Error(), "would cross the network in clear") {
			t.Errorf("%s: %v", addr, err)
		}
		if _, err := newAdminClient(addr, "", ""); err != nil {
			t.Errorf("%s without a token: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:9090", "localhost:9090", "http://[::1]:9090", "http://localhost", "https://admin.invalid:9443"} {
		if _, err := newAdminClient(addr, tokenFile, ""); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
}
