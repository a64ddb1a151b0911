package fleettest

import (
	"os"
	"testing"
)

// RequireEnv is the environment variable that turns a test skipped for a
// missing prerequisite (LXD, PostgreSQL, Chromium, busybox) into a failed
// one. CI sets it: there everything is installed, so a skip would only
// hide a broken setup.
const RequireEnv = "REQUIRE_TEST_DEPS"

// Missing skips t because a prerequisite is missing, or fails it when
// RequireEnv is set.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("prerequisite missing ("+RequireEnv+" is set): "+format, args...)
	}
	t.Skipf(format, args...)
}
