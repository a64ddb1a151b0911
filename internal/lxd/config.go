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

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Socket == "" && c.URL == "":
		errs = append(errs, errors.New("one of Socket or URL is required"))
	case c.Socket != "" && c.URL != "":
		errs = append(errs, errors.New("Socket and URL are mutually exclusive"))
	}
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("URL: %w", err))
		case u.Scheme != "https":
			errs = append(errs, fmt.Errorf("URL %q: scheme must be https", c.URL))
		case u.Host == "":
			errs = append(errs, fmt.Errorf("URL %q: missing host", c.URL))
		}
		if len(c.ClientCert) == 0 {
			errs = append(errs, errors.New("ClientCert is required with URL"))
		}
		if len(c.ClientKey) == 0 {
			errs = append(errs, errors.New("ClientKey is required with URL"))
		}
		if len(c.ClientCert) > 0 && len(c.ClientKey) > 0 {
			if _, err := tls.X509KeyPair(c.ClientCert, c.ClientKey); err != nil {
				errs = append(errs, fmt.Errorf("ClientCert/ClientKey: %w", err))
			}
		}
		if len(c.ServerCert) > 0 {
			if err := checkCertPEM(c.ServerCert); err != nil {
				errs = append(errs, fmt.Errorf("ServerCert: %w", err))
			}
		}
	} else if len(c.ClientCert)+len(c.ClientKey)+len(c.ServerCert) > 0 {
		errs = append(errs, errors.New("ClientCert, ClientKey and ServerCert are only used with URL"))
	}
	if strings.ContainsAny(c.Project, "/ \t\n") {
		errs = append(errs, fmt.Errorf("Project %q: must not contain '/' or spaces", c.Project))
	}
	if c.OpTimeout < 0 {
		errs = append(errs, fmt.Errorf("OpTimeout %s: must not be negative", c.OpTimeout))
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
