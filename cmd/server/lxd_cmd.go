package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

// lxdCommand runs `lxd trust`: it gets the service's client certificate
// trusted by LXD, from the service's host, with a token an operator made
// on any member:
//
//	lxc config trust add --name lxd-gha-autoscaler --restricted --projects PROJECT
//
// It makes the certificate and key at lxd.client_cert and lxd.client_key
// when neither exists, checks the server against the token's fingerprint,
// writes its certificate to lxd.server_cert when that file does not exist
// (and refuses a different one that does), and then connects as the
// service will.
func lxdCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "trust" {
		return usageError{"lxd: want lxd trust"}
	}
	flags := flag.NewFlagSet("lxd trust", flag.ContinueOnError)
	flags.SetOutput(stderr)
	path := flags.String("config", "", "config file")
	token := flags.String("token", "", "trust token from `lxc config trust add --name NAME --restricted --projects PROJECT`, or @FILE")
	if err := flags.Parse(args[1:]); err != nil {
		return usageError{err.Error()}
	}
	if *path == "" || *token == "" || flags.NArg() > 0 {
		return errors.New("lxd trust: --config FILE and --token TOKEN are required")
	}
	tok := *token
	if f, ok := strings.CutPrefix(tok, "@"); ok {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("lxd trust: token: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	// Only the lxd: section: the rest of the file may not be ready yet,
	// and the certificate files may not exist.
	raw, err := os.ReadFile(*path)
	if err != nil {
		return fmt.Errorf("lxd trust: %w", err)
	}
	var fc struct {
		LXD lxdFileConfig `yaml:"lxd"`
	}
	if err := yaml.NewDecoder(bytes.NewReader(raw)).Decode(&fc); err != nil {
		return fmt.Errorf("lxd trust: parse %s: %w", *path, err)
	}
	l := fc.LXD
	switch {
	case len(l.URL) == 0:
		return errors.New("lxd trust: set lxd.url: the addresses the service reaches LXD at")
	case l.ClientCert == "" || l.ClientKey == "":
		return errors.New("lxd trust: set lxd.client_cert and lxd.client_key: where the service's certificate and key go")
	}

	cert, key, made, err := clientCertificate(l.ClientCert, l.ClientKey)
	if err != nil {
		return fmt.Errorf("lxd trust: %w", err)
	}
	if made {
		fmt.Fprintf(stdout, "made a client certificate: %s, key %s\n", l.ClientCert, l.ClientKey)
	}
	t, err := lxd.TrustWithToken(ctx, l.URL, cert, key, tok)
	if err != nil {
		return fmt.Errorf("lxd trust: %w", err)
	}
	restricted := "not restricted to a project"
	if t.Restricted {
		restricted = "restricted to project(s) " + strings.Join(t.Projects, ", ")
	}
	fmt.Fprintf(stdout, "trusted by LXD at %s (member %s), %s\n", t.URL, t.ServerName, restricted)
	if l.ServerCert != "" {
		old, err := os.ReadFile(l.ServerCert)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.WriteFile(l.ServerCert, t.ServerCert, 0o644); err != nil {
				return fmt.Errorf("lxd trust: %w", err)
			}
			fmt.Fprintf(stdout, "pinned the server's certificate in %s\n", l.ServerCert)
		case err != nil:
			return fmt.Errorf("lxd trust: %w", err)
		case !bytes.Equal(bytes.TrimSpace(old), bytes.TrimSpace(t.ServerCert)):
			return fmt.Errorf("lxd trust: %s holds another certificate than the server's (the one the token names): remove it to pin the server's", l.ServerCert)
		}
	} else {
		fmt.Fprintln(stdout, "lxd.server_cert is not set: the service checks the server against the system's CAs")
	}

	var p problems
	c, err := lxd.Connect(ctx, l.lxdConfig(&p))
	if err == nil {
		err = p.err()
	}
	if err != nil {
		return fmt.Errorf("lxd trust: connect as the service will: %w", err)
	}
	fmt.Fprintf(stdout, "ok: the service reaches LXD at %s\n", c.Address())
	return nil
}

// clientCertificate reads the certificate and key, or makes both when
// neither exists.
func clientCertificate(certPath, keyPath string) (cert, key []byte, made bool, err error) {
	cert, cerr := os.ReadFile(certPath)
	key, kerr := os.ReadFile(keyPath)
	switch {
	case cerr == nil && kerr == nil:
		return cert, key, false, nil
	case errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist):
	case cerr != nil && !errors.Is(cerr, fs.ErrNotExist):
		return nil, nil, false, cerr
	case kerr != nil && !errors.Is(kerr, fs.ErrNotExist):
		return nil, nil, false, kerr
	default:
		return nil, nil, false, fmt.Errorf("only one of %s and %s exists: remove it, or give both", certPath, keyPath)
	}
	if cert, key, err = lxd.NewClientCertificate("lxd-gha-autoscaler"); err != nil {
		return nil, nil, false, err
	}
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		return nil, nil, false, err
	}
	if err := os.WriteFile(certPath, cert, 0o644); err != nil {
		return nil, nil, false, err
	}
	return cert, key, true, nil
}
