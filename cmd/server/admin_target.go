package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
)

// ConfigEnv names the service's config file for the CLI, as --config
// does, so that an operator on the host never repeats the admin address,
// the token file or the certificate.
const ConfigEnv = "LXD_GHA_AUTOSCALER_CONFIG"

// adminTarget is how the CLI reaches a service's admin API.
type adminTarget struct {
	addr      string // unix:/path, host:port or https://host:port
	tokenFile string
	caFile    string
}

// resolveAdminTarget settles where the CLI's admin API is. Flags given on
// the command line win one by one; what they leave unset comes from the
// service's config: --config, or else $LXD_GHA_AUTOSCALER_CONFIG unless
// --admin names another service (its token must not go elsewhere); and
// what that leaves unset are the defaults (the unix socket, no token).
func resolveAdminTarget(fs *flag.FlagSet, t adminTarget, configFile string, getenv func(string) string) (adminTarget, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	from := "--config " + configFile
	if !set["config"] {
		configFile = ""
		if !set["admin"] {
			configFile = getenv(ConfigEnv)
			from = "$" + ConfigEnv + "=" + configFile
		}
	}
	if configFile == "" {
		return t, nil
	}
	c, err := adminFromConfig(configFile)
	if err != nil {
		return t, fmt.Errorf("%s: %w", from, err)
	}
	if !set["admin"] {
		t.addr = c.addr
	}
	if !set["token-file"] {
		t.tokenFile = c.tokenFile
	}
	if !set["ca-file"] {
		t.caFile = c.caFile
	}
	return t, nil
}

// adminFromConfig reads how to reach the admin API from the service's
// config file: admin_listen, admin_token_file and admin_tls_cert_file,
// and nothing else (the CLI's user may not read the service's other
// secrets). A listener on every address is reached on loopback.
func adminFromConfig(path string) (adminTarget, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return adminTarget{}, err
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil {
		return adminTarget{}, fmt.Errorf("parse: %w", err)
	}
	t := adminTarget{addr: fc.AdminListen, tokenFile: fc.AdminTokenFile}
	switch {
	case t.addr == "":
		t.addr = admin.DefaultListen
	case t.addr == "off":
		return adminTarget{}, errors.New("admin_listen is off: the service serves no admin API (set admin_listen, or pass --admin)")
	case strings.HasPrefix(t.addr, admin.UnixPrefix):
	default:
		host, port, err := net.SplitHostPort(t.addr)
		if err != nil {
			return adminTarget{}, fmt.Errorf("admin_listen %q: want unix:/path, host:port or off", t.addr)
		}
		switch host {
		case "", "0.0.0.0":
			host = "127.0.0.1"
		case "::":
			host = "::1"
		}
		t.addr = net.JoinHostPort(host, port)
		if fc.AdminTLSCertFile != "" {
			t.addr, t.caFile = "https://"+t.addr, fc.AdminTLSCertFile
		}
	}
	return t, nil
}

// adminFlags are the flags every admin CLI command takes to find the
// service's admin API, and --json.
type adminFlags struct {
	fs                                  *flag.FlagSet
	addr, tokenFile, caFile, configFile *string
	asJSON                              *bool
}

func addAdminFlags(fs *flag.FlagSet) adminFlags {
	return adminFlags{
		fs:         fs,
		addr:       fs.String("admin", admin.DefaultListen, "admin API address: unix:/path, host:port or https://host:port"),
		tokenFile:  fs.String("token-file", "", "file holding the admin token (mode 0600)"),
		caFile:     fs.String("ca-file", "", "PEM certificates to trust for an https admin address (its own certificate will do); makes host:port https"),
		configFile: fs.String("config", "", "the service's config file: the admin listener, token and certificate are taken from it (default $"+ConfigEnv+")"),
		asJSON:     fs.Bool("json", false, "print the API's JSON as is"),
	}
}

// client resolves the admin API from the parsed flags (and the config
// they name) and returns its client.
func (a adminFlags) client() (*adminClient, error) {
	target, err := resolveAdminTarget(a.fs, adminTarget{*a.addr, *a.tokenFile, *a.caFile}, *a.configFile, os.Getenv)
	if err != nil {
		return nil, err
	}
	return newAdminClient(target.addr, target.tokenFile, target.caFile)
}
