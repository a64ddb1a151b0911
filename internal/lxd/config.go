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
)

// Defaults applied by Connect to a zero field.
const (
	DefaultProject   = "default"
	DefaultOpTimeout = 2 * time.Minute
)

// Errors in Validate's answer when URL is set without a client certificate
// or key (use errors.Is): a caller that reads them from files and has
// already said why a file gave nothing can leave these out.
var (
	ErrNoClientCert = errors.New("lxd.client_cert is required with lxd.url")
	ErrNoClientKey  = errors.New("lxd.client_key is required with lxd.url")
)

// Config says how to reach LXD. Certificates are PEM contents, not paths:
// reading files is the caller's business.
type Config struct {
	Socket     string        // local unix socket, e.g. /var/lib/lxd/unix.socket; or
	URL        string        // https://host:8443 of a remote LXD
	ClientCert []byte        // PEM; required with URL
	ClientKey  []byte        // PEM; required with URL
	ServerCert []byte        // PEM; optional with URL (system CAs otherwise)
	Project    string        // default "default"
	OpTimeout  time.Duration // bounds each call with the operations it waits for; default 2m
}

// Validate reports every problem with c, joined, in the config file's words
// (lxd.socket, lxd.url, lxd.client_cert, ...). It never echoes a
// certificate or key.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Socket == "" && c.URL == "":
		errs = append(errs, errors.New("lxd: set lxd.socket or lxd.url"))
	case c.Socket != "" && c.URL != "":
		errs = append(errs, errors.New("lxd.socket and lxd.url are mutually exclusive"))
	}
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("lxd.url: %w", err))
		case u.Scheme != "https":
			errs = append(errs, fmt.Errorf("lxd.url %q: scheme must be https", c.URL))
		case u.Host == "":
			errs = append(errs, fmt.Errorf("lxd.url %q: missing host", c.URL))
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
