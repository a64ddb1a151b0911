package lxd

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Defaults applied by Connect to a zero field.
const (
	DefaultProject   = "default"
	DefaultOpTimeout = 2 * time.Minute
)

// Errors in Validate's answer when URLs are set without a client certificate
// or key (use errors.Is): a caller that reads them from files and has
// already said why a file gave nothing can leave these out.
var (
	ErrNoClientCert = errors.New("lxd.client_cert is required with lxd.url")
	ErrNoClientKey  = errors.New("lxd.client_key is required with lxd.url")
)

// Config says how to reach LXD. Certificates are PEM contents, not paths:
// reading files is the caller's business.
type Config struct {
	Socket string // local unix socket, e.g. /var/lib/lxd/unix.socket; or
	// URLs are https://host:8443 addresses of a remote LXD: one server,
	// or members of one cluster, any of which serves the whole cluster.
	// The client uses the first that answers and moves to the next when
	// the one in use stops answering.
	URLs       []string
	ClientCert []byte        // PEM; required with URLs
	ClientKey  []byte        // PEM; required with URLs
	ServerCert []byte        // PEM, pinned; optional with URLs (system CAs otherwise). Cluster members share one.
	Project    string        // default "default"
	OpTimeout  time.Duration // bounds each call with the operations it waits for; default 2m
	// Log gets a line when the client moves to another address; the zero
	// Logger says nothing.
	Log zerolog.Logger
}

// Validate reports every problem with c, joined, in the config file's words
// (lxd.socket, lxd.url, lxd.client_cert, ...). It never echoes a
// certificate or key.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Socket == "" && len(c.URLs) == 0:
		errs = append(errs, errors.New("lxd: set lxd.socket or lxd.url"))
	case c.Socket != "" && len(c.URLs) > 0:
		errs = append(errs, errors.New("lxd.socket and lxd.url are mutually exclusive"))
	}
	if len(c.URLs) > 0 {
		seen := map[string]bool{}
		for _, raw := range c.URLs {
			u, err := url.Parse(raw)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("lxd.url: %w", err))
			case u.Scheme != "https":
				errs = append(errs, fmt.Errorf("lxd.url %q: scheme must be https", raw))
			case u.Host == "":
				errs = append(errs, fmt.Errorf("lxd.url %q: missing host", raw))
			case u.Path != "" && u.Path != "/":
				errs = append(errs, fmt.Errorf("lxd.url %q: an address has no path", raw))
			case seen[u.Host]:
				errs = append(errs, fmt.Errorf("lxd.url %q: listed twice", raw))
			}
			if err == nil {
				seen[u.Host] = true
			}
		}
		if len(c.ClientCert) == 0 {
			errs = append(errs, ErrNoClientCert)
		}
		if len(c.ClientKey) == 0 {
			errs = append(errs, ErrNoClientKey)
		}
		if len(c.ClientCert) > 0 && len(c.ClientKey) > 0 {
			if _, err := tls.X509KeyPair(c.ClientCert, c.ClientKey); err != nil {
				errs = append(errs, fmt.Errorf("lxd.client_cert and lxd.client_key: %w", err))
			}
		}
		if len(c.ServerCert) > 0 {
			if err := checkCertPEM(c.ServerCert); err != nil {
				errs = append(errs, fmt.Errorf("lxd.server_cert: %w", err))
			}
		}
	} else if len(c.ClientCert)+len(c.ClientKey)+len(c.ServerCert) > 0 {
		errs = append(errs, errors.New("lxd.client_cert, lxd.client_key and lxd.server_cert are only used with lxd.url"))
	}
	if strings.ContainsAny(c.Project, "/ \t\n") {
		errs = append(errs, fmt.Errorf("lxd.project %q: must not contain '/' or spaces", c.Project))
	}
	if c.OpTimeout < 0 {
		errs = append(errs, fmt.Errorf("lxd: operation timeout %s must not be negative", c.OpTimeout))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Project == "" {
		c.Project = DefaultProject
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = DefaultOpTimeout
	}
	return c
}

func checkCertPEM(b []byte) error {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return errors.New("no PEM CERTIFICATE block")
	}
	_, err := x509.ParseCertificate(block.Bytes)
	return err
}
