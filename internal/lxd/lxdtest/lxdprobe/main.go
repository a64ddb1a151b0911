// Command lxdprobe runs inside a test container: it reads one user.* config
// key of its instance through /dev/lxd/sock and POSTs the value to a URL
// (reached through a proxy device), then exits, which stops the container.
//
// Build it static (CGO_ENABLED=0): the test image has no libc.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	key := flag.String("get", "user.runner.jitconfig", "instance config key to read")
	post := flag.String("post", "", "URL to POST the value to")
	sock := flag.String("sock", "/dev/lxd/sock", "devlxd socket")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()
	if err := run(*key, *post, *sock, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "lxdprobe:", err)
		os.Exit(1)
	}
}

func run(key, post, sock string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	devlxd := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://lxd/1.0/config/"+key, nil)
	if err != nil {
		return err
	}
	resp, err := devlxd.Do(req)
	if err != nil {
		return fmt.Errorf("devlxd: %w", err)
	}
	value, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("devlxd: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("devlxd: GET %s: %s", key, resp.Status)
	}
	if post == "" {
		_, err := os.Stdout.Write(value)
		return err
	}

	// The proxy device may start listening a little after init runs: retry.
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, post, strings.NewReader(string(value)))
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = fmt.Errorf("POST %s: %s", post, resp.Status)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}
