package image

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

// waitReady waits until exec works and systemd has finished booting
// (running or degraded).
func waitReady(ctx context.Context, c Guest, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		var out bytes.Buffer
		w := &lockedWriter{w: &out}
		// --wait blocks until boot is over; bounded so a hung boot is retried.
		code, err := c.Exec(ctx, name, lxd.ExecSpec{
			Command: []string{"timeout", "60", "systemctl", "is-system-running", "--wait"},
			Stdout:  w, Stderr: w,
		})
		state := strings.TrimSpace(out.String())
		switch {
		case err == nil && (state == "running" || state == "degraded"):
			return nil
		case err != nil:
			last = err.Error()
		default:
			last = fmt.Sprintf("systemctl is-system-running: %q (exit status %d)", state, code)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %s", name, timeout, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// run runs a shell command inside as root and fails on a non-zero exit,
// with the tail of its output.
func run(ctx context.Context, c Guest, name, what, script string, log io.Writer) error {
	tail := &tailBuffer{max: 4096}
	w := &lockedWriter{w: io.MultiWriter(tail, log)} // stdout and stderr are copied concurrently
	code, err := c.Exec(ctx, name, lxd.ExecSpec{
		Command: []string{"sh", "-euc", script},
		Env:     stepEnv,
		Stdout:  w, Stderr: w,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if code != 0 {
		return fmt.Errorf("%s: exit status %d; output tail:\n%s", what, code, tail.String())
	}
	return nil
}

var stepEnv = map[string]string{
	"PATH":            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME":            "/root",
	"LANG":            "C.UTF-8",
	"DEBIAN_FRONTEND": "noninteractive",
}

func push(ctx context.Context, c Guest, name, dst string, data io.ReadSeeker, mode int) error {
	return c.PushFile(ctx, name, dst, data, 0, 0, mode)
}

// execOutput runs argv and returns its trimmed output. LXD 5.0 sometimes
// loses the output of a short command, so an empty output is retried.
func execOutput(ctx context.Context, c Guest, name string, argv ...string) (string, int, error) {
	for attempt := 1; ; attempt++ {
		var out bytes.Buffer
		w := &lockedWriter{w: &out}
		code, err := c.Exec(ctx, name, lxd.ExecSpec{Command: argv, Env: stepEnv, Stdout: w, Stderr: w})
		s := strings.TrimSpace(out.String())
		if err != nil || s != "" || attempt == 5 {
			return s, code, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }
