package app

import (
	"errors"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin/admintest"
)

func TestConfigValidate(t *testing.T) {
	cert, key := admintest.SelfSigned(t, "admin.example")
	_, otherKey := admintest.SelfSigned(t, "admin.example")
	for _, tc := range []struct {
		name  string
		cfg   Config
		want  string  // the whole message; "" means valid
		is    []error // sentinels the error matches
		isNot []error // and those it does not
	}{
		{"off", Config{}, "", nil, nil},
		{"unix socket", Config{AdminListen: "unix:/run/x/admin.sock"}, "", nil, nil},
		{"loopback", Config{AdminListen: "127.0.0.1:9090"}, "", nil, nil},
		{"localhost", Config{AdminListen: "localhost:9090"}, "", nil, nil},
		{"loopback with TLS", Config{AdminListen: "127.0.0.1:9090", AdminTLSCert: cert, AdminTLSKey: key}, "", nil, nil},
		{"off loopback with a token and TLS", Config{AdminListen: "0.0.0.0:9090", AdminToken: "t", AdminTLSCert: cert, AdminTLSKey: key}, "", nil, nil},
		{"off loopback with a token, without TLS", Config{AdminListen: "0.0.0.0:9090", AdminToken: "t"},
			"admin_listen 0.0.0.0:9090 is reachable from other hosts: set admin_tls_cert_file and admin_tls_key_file",
			[]error{ErrNoAdminTLS}, []error{ErrNoAdminToken}},
		{"off loopback with TLS, without a token", Config{AdminListen: "0.0.0.0:9090", AdminTLSCert: cert, AdminTLSKey: key},
			"admin_listen 0.0.0.0:9090 is reachable from other hosts: set admin_token_file",
			[]error{ErrNoAdminToken}, []error{ErrNoAdminTLS}},
		{"all interfaces with neither", Config{AdminListen: ":9090"},
			"admin_listen :9090 is reachable from other hosts: set admin_token_file\n" +
				"admin_listen :9090 is reachable from other hosts: set admin_tls_cert_file and admin_tls_key_file",
			[]error{ErrNoAdminToken, ErrNoAdminTLS}, nil},
		{"TLS key without the certificate", Config{AdminListen: "127.0.0.1:9090", AdminTLSKey: key},
			"admin_tls_cert_file is required with admin_tls_key_file", []error{ErrNoAdminTLSCert}, nil},
		{"TLS certificate without the key", Config{AdminListen: "0.0.0.0:9090", AdminToken: "t", AdminTLSCert: cert},
			"admin_tls_key_file is required with admin_tls_cert_file", []error{ErrNoAdminTLSKey}, []error{ErrNoAdminTLS}},
		{"TLS key of another certificate", Config{AdminListen: "127.0.0.1:9090", AdminTLSCert: cert, AdminTLSKey: otherKey},
			"admin_tls_cert_file and admin_tls_key_file: tls: private key does not match public key", nil, nil},
		{"TLS on the unix socket", Config{AdminListen: "unix:/run/x/admin.sock", AdminTLSCert: cert, AdminTLSKey: key},
			"admin_tls_cert_file and admin_tls_key_file are only used with a TCP admin_listen", nil, nil},
		{"TLS with the admin listener off", Config{AdminTLSCert: cert, AdminTLSKey: key},
			"admin_tls_cert_file and admin_tls_key_file are only used with a TCP admin_listen", nil, nil},
		{"not an address", Config{AdminListen: "nonsense"}, `admin_listen "nonsense": want unix:/path, host:port or off`, nil, nil},
		{"empty socket path", Config{AdminListen: "unix:"}, `admin_listen "unix:": empty socket path`, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
			for _, s := range tc.is {
				if !errors.Is(err, s) {
					t.Errorf("the error is not %v", s)
				}
			}
			for _, s := range tc.isNot {
				if errors.Is(err, s) {
					t.Errorf("the error is %v", s)
				}
			}
		})
	}
}
