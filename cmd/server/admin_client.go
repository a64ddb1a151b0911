package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
)

// adminClient calls the admin API of a running service, over its unix
// socket or TCP, with the admin token when one is given.
type adminClient struct {
	addr  string // as the user gave it, for messages
	base  string
	token string
	http  *http.Client
	// unanswered is said when the API does not answer at all.
	unanswered string
}

// newAdminClient makes a client for the admin API at addr: "unix:/path",
// "host:port", "http://host:port" or "https://host:port". caFile, when
// set, holds the PEM certificates to trust for an https address instead
// of the system's (the admin listener's own self-signed certificate will
// do), and makes a bare host:port https. A token is never sent in clear
// to a host other than loopback.
func newAdminClient(addr, tokenFile, caFile string) (*adminClient, error) {
	c := &adminClient{addr: addr, http: &http.Client{Timeout: 30 * time.Second},
		unanswered: "is the service running? see --admin"}
	if tokenFile != "" {
		b, err := readSecret(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		c.token = strings.TrimSpace(string(b))
		if c.token == "" {
			return nil, fmt.Errorf("admin token: %s is empty", tokenFile)
		}
	}
	switch path, isUnix := strings.CutPrefix(addr, admin.UnixPrefix); {
	case isUnix:
		if path == "" {
			return nil, fmt.Errorf("--admin %q: empty socket path", addr)
		}
		if caFile != "" {
			return nil, fmt.Errorf("--ca-file is for an https:// admin address, not the unix socket %s", addr)
		}
		c.base = "http://admin" // the host is not used: every request dials the socket
		c.http.Transport = &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		}
		return c, nil
	case strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://"):
		c.base = strings.TrimRight(addr, "/")
	default:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--admin %q: want unix:/path or host:port", addr)
		}
		c.base = "http://" + addr
		if caFile != "" {
			c.base = "https://" + addr
		}
	}
	u, err := url.Parse(c.base)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--admin %q: want unix:/path, host:port or https://host:port", addr)
	}
	if u.Scheme == "http" {
		if caFile != "" {
			return nil, fmt.Errorf("--ca-file is for an https:// admin address, not %s", addr)
		}
		if c.token != "" && admin.RequiresToken(net.JoinHostPort(u.Hostname(), "0")) {
			return nil, fmt.Errorf("--admin %s: the admin token would cross the network in clear; use https://%s (with --ca-file when its certificate is self-signed)", addr, u.Host)
		}
		return c, nil
	}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", caFile)
		}
		c.http.Transport = &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		}
	}
	return c, nil
}

// call sends one request and returns the body of a 2xx answer; any other
// answer becomes an error carrying the API's message.
func (c *adminClient) call(ctx context.Context, method, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The URL is ours, not the user's: keep only the cause.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		if c.unanswered != "" {
			return nil, fmt.Errorf("admin API at %s (%s): %w", c.addr, c.unanswered, err)
		}
		return nil, fmt.Errorf("admin API at %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: read answer: %w", c.addr, err)
	}
	if resp.StatusCode/100 == 2 {
		return body, nil
	}
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if len(msg) > 500 {
		msg = strings.ToValidUTF8(msg[:500], "") + "…"
	}
	// It may echo a pool or an instance name, or be a proxy's page: it
	// goes to a terminal.
	msg = admin.Printable(msg)
	if resp.StatusCode == http.StatusUnauthorized {
		msg += "; pass --token-file"
	}
	return nil, fmt.Errorf("%s (HTTP %d)", msg, resp.StatusCode)
}
