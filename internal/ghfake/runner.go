package ghfake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// RunnerOptions configure RunRunner.
type RunnerOptions struct {
	DevLXDSocket string    // default /dev/lxd/sock
	Log          io.Writer // progress lines; never secrets. Default: discard
	// BringUpLoopback sets lo up first: in a bare container it starts down,
	// and the stand-in is reached through a proxy device on loopback.
	BringUpLoopback bool
	// JITConfig, when set, is used instead of reading the config through
	// devlxd: a real runner image's bootstrap hands it over in the
	// environment (ACTIONS_RUNNER_INPUT_JITCONFIG), as to GitHub's runner.
	JITConfig fleet.Secret
}

// Errors RunRunner returns when the stand-in will not let it run.
var (
	// ErrRunnerRefused: the JIT config was already used, or is not valid.
	ErrRunnerRefused = errors.New("runner refused")
	// ErrRunnerRemoved: the runner record was deleted (before or after
	// connecting).
	ErrRunnerRemoved = errors.New("runner removed")
)

// RunRunner plays the Actions runner inside an instance: it reads its JIT
// config from devlxd, comes online at the stand-in, runs one job and
// returns nil once the job completed or was cancelled. A runner told to hang
// blocks until ctx ends.
func RunRunner(ctx context.Context, opts RunnerOptions) error {
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(logw, "fake-runner: "+format+"\n", args...)
	}
	if opts.BringUpLoopback {
		if err := bringUpLoopback(); err != nil {
			return fmt.Errorf("bring up loopback: %w", err)
		}
	}
	sock := opts.DevLXDSocket
	if sock == "" {
		sock = "/dev/lxd/sock"
	}
	encoded := opts.JITConfig.Reveal()
	if encoded == "" {
		var err error
		if encoded, err = readDevLXDConfig(ctx, sock, fleet.KeyJITConfig); err != nil {
			return err
		}
	}
	cfg, err := DecodeJITConfig(encoded)
	if err != nil {
		return err
	}
	c := &runnerClient{
		base: strings.TrimRight(cfg.URL, "/") + runnerPath,
		http: &http.Client{Transport: &http.Transport{Proxy: nil}},
	}
	defer c.http.CloseIdleConnections()
	logf("connecting as %s (runner id %d)", cfg.RunnerName, cfg.RunnerID)

	var conn connectResponse
	if err := c.call(ctx, "/connect", "", connectRequest{RunnerID: cfg.RunnerID, Secret: cfg.Secret.Reveal()}, &conn, 10*time.Second); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if conn.Hang {
		logf("told to hang; sleeping until killed")
		<-ctx.Done()
		return ctx.Err()
	}
	if conn.Stall {
		logf("online, then told to go silent; sleeping until killed")
		<-ctx.Done()
		return ctx.Err()
	}
	logf("online; waiting for a job")

	var since int64
	var running *pollJob
	var deadline time.Time
	for {
		wait := 20 * time.Second
		if running != nil {
			wait = min(wait, max(time.Until(deadline), 0))
		}
		var st pollResponse
		err := c.call(ctx, "/poll", conn.Session, pollRequest{Since: since, WaitMS: wait.Milliseconds()}, &st, wait+10*time.Second)
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		since = st.Version
		switch st.State {
		case "cancelled":
			logf("job cancelled; exiting")
			return nil
		case "removed":
			return ErrRunnerRemoved
		case "done":
			return nil
		case "assigned":
			if running == nil && st.Job != nil {
				running = st.Job
				deadline = time.Now().Add(time.Duration(st.Job.DurationMS) * time.Millisecond)
				logf("running job %d (%s) from %s", st.Job.ID, st.Job.Name, st.Job.Repo)
			}
		}
		if running != nil && !time.Now().Before(deadline) {
			if err := c.call(ctx, "/complete", conn.Session, completeRequest{JobID: running.ID}, nil, 10*time.Second); err != nil {
				if errors.Is(err, errConflict) {
					continue // cancelled meanwhile: the next poll says so
				}
				return fmt.Errorf("complete job %d: %w", running.ID, err)
			}
			logf("job %d completed", running.ID)
			return nil
		}
	}
}

var errConflict = errors.New("conflict")

type runnerClient struct {
	base string
	http *http.Client
}

// call POSTs in to path and decodes the answer into out, retrying transport
// errors and 5xx for a while: the stand-in may be briefly unreachable while
// the instance's network comes up.
func (c *runnerClient) call(ctx context.Context, path, session string, in, out any, timeout time.Duration) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	backoff := 100 * time.Millisecond
	giveUp := time.Now().Add(2 * time.Minute)
	for {
		status, err := c.once(ctx, path, session, body, out, timeout)
		switch {
		case err == nil && status/100 == 2:
			return nil
		case err == nil && status == http.StatusConflict && path == "/complete":
			return errConflict
		case err == nil && status == http.StatusConflict:
			return fmt.Errorf("%w: jit config already used", ErrRunnerRefused)
		case err == nil && status == http.StatusNotFound:
			return ErrRunnerRemoved
		case err == nil && status < 500:
			return fmt.Errorf("%w: status %d", ErrRunnerRefused, status)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(giveUp) {
			if err == nil {
				err = fmt.Errorf("status %d", status)
			}
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (c *runnerClient) once(ctx context.Context, path, session string, body []byte, out any, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if session != "" {
		req.Header.Set("Authorization", "Session "+session)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is harmless, but keep messages short
		}
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 || out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return 0, fmt.Errorf("decode answer: %w", err)
	}
	return resp.StatusCode, nil
}

// readDevLXDConfig reads one instance config key through the devlxd socket.
// devlxd answers with the raw value.
func readDevLXDConfig(ctx context.Context, sock, key string) (string, error) {
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
	}
	defer client.CloseIdleConnections()
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://lxd/1.0/config/"+url.PathEscape(key), nil)
		if err != nil {
			return "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			lastErr = err // socket not there yet?
			continue
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			lastErr = err
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("devlxd: %s: status %d", key, resp.StatusCode)
		}
		v := strings.TrimSpace(string(b))
		// Tolerate a JSON-quoted answer from other devlxd versions.
		if strings.HasPrefix(v, `"`) {
			var s string
			if json.Unmarshal([]byte(v), &s) == nil {
				v = s
			}
		}
		if v == "" {
			return "", fmt.Errorf("devlxd: %s is empty", key)
		}
		return v, nil
	}
	return "", fmt.Errorf("devlxd: %w", lastErr)
}
