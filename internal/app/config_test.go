package app

import (
	"errors"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		want  string // the whole message; "" means valid
		token bool   // the error is ErrNoAdminToken
	}{
		{"off", Config{}, "", false},
		{"unix socket", Config{AdminListen: "unix:/run/x/admin.sock"}, "", false},
		{"loopback", Config{AdminListen: "127.0.0.1:9090"}, "", false},
		{"localhost", Config{AdminListen: "localhost:9090"}, "", false},
		{"off loopback with a token", Config{AdminListen: "0.0.0.0:9090", AdminToken: "t"}, "", false},
		{"off loopback without a token", Config{AdminListen: "0.0.0.0:9090"},
			"admin_listen 0.0.0.0:9090 is reachable from other hosts: set admin_token_file", true},
		{"all interfaces without a token", Config{AdminListen: ":9090"},
			"admin_listen :9090 is reachable from other hosts: set admin_token_file", true},
		{"not an address", Config{AdminListen: "nonsense"}, `admin_listen "nonsense": want unix:/path, host:port or off`, false},
		{"empty socket path", Config{AdminListen: "unix:"}, `admin_listen "unix:": empty socket path`, false},
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
			if errors.Is(err, ErrNoAdminToken) != tc.token {
				t.Errorf("errors.Is(err, ErrNoAdminToken) = %v, want %v", !tc.token, tc.token)
			}
		})
	}
}
