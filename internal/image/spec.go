// Package image builds runner images: it launches a builder instance from a
// source image, installs the GitHub Actions runner, the bootstrap that
// starts it with the instance's JIT config, and the operator's files and
// steps, publishes the result under a versioned alias, smoke-tests it, and
// only then moves the image's main alias to it.
//
// Every image gets the bootstrap (Bootstrap, BootstrapService): a systemd
// unit that, in an instance carrying user.runner.managed=true, reads
// user.runner.jitconfig through /dev/lxd/sock (waiting up to
// user.runner.jitconfig-wait seconds, default 30), runs RunnerDir/run.sh as
// RunnerUser with the config in ACTIONS_RUNNER_INPUT_JITCONFIG (never on a
// command line), and powers the instance off when run.sh exits or when no
// config came. In any other instance (a builder, a source_instance
// template, a smoke test) it does nothing.
//
// The source image must run systemd and have sh, tar, gzip, useradd,
// runuser and curl (curl only for the bootstrap). The runner's own
// dependencies (bin/installdependencies.sh) are for the operator's steps.
package image

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"regexp"
	"strings"
)

// Defaults for a zero Spec field.
const (
	DefaultKeep      = 3
	DefaultType      = "container"
	DefaultRunnerURL = "https://github.com/actions/runner/releases/download/v{version}/actions-runner-linux-{arch}-{version}.tar.gz"
	// RunnerDir is where the runner is unpacked in the image.
	RunnerDir = "/opt/actions-runner"
	// RunnerUser owns RunnerDir and runs run.sh.
	RunnerUser = "runner"
	// BootstrapPath and BootstrapUnitPath are where the bootstrap goes.
	BootstrapPath     = "/usr/local/bin/gha-runner-bootstrap"
	BootstrapUnitPath = "/etc/systemd/system/gha-runner-bootstrap.service"
	BootstrapUnit     = "gha-runner-bootstrap.service"
)

// Image properties set on every published image.
const (
	PropName              = "runner.image" // the Spec's Name, to find the images of one name
	PropRunnerVersion     = "runner.version"
	PropSourceFingerprint = "source.fingerprint"
	PropBuildTime         = "build.time" // RFC 3339, UTC
	PropConfigDigest      = "config.digest"
)

// Bootstrap is the POSIX sh script installed at BootstrapPath.
//
//go:embed bootstrap/gha-runner-bootstrap
var Bootstrap []byte

// BootstrapService is the systemd unit installed at BootstrapUnitPath.
//
//go:embed bootstrap/gha-runner-bootstrap.service
var BootstrapService []byte

// Spec describes one runner image.
type Spec struct {
	Name   string     // main alias; versions are NAME-YYYYMMDDhhmmss
	Source string     // local image alias or fingerprint to build from
	Type   string     // container (default) or virtual-machine
	Runner RunnerSpec // the GitHub Actions runner to install
	Steps  []string   // host paths of shell scripts run inside, in order, with sh -eu
	Files  []FileSpec // host files copied in before the steps
	Keep   int        // images of this name to keep, default 3
}

// RunnerSpec says which runner tarball to install.
type RunnerSpec struct {
	Version string
	// URL is a template with {version} and {arch}, or a local file path;
	// default DefaultRunnerURL.
	URL    string
	SHA256 string // hex; required
	Arch   string // x64 or arm64; default from the source image's architecture
}

// FileSpec copies host file Src to Dst in the image.
type FileSpec struct {
	Src  string
	Dst  string
	Mode fs.FileMode // 0: the host file's permission bits
}

var (
	nameRE    = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]{0,40}$`)
	versionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*([.-][0-9A-Za-z.-]+)?$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Validate reports every problem with s, joined.
func (s Spec) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !nameRE.MatchString(s.Name) {
		add("name %q: want a letter, then up to 40 letters, digits or '-'", s.Name)
	} else if strings.HasSuffix(s.Name, "-") {
		add("name %q: must not end with '-'", s.Name)
	}
	if s.Source == "" {
		add("source: required (a local image alias or fingerprint)")
	}
	switch s.Type {
	case "", "container", "virtual-machine":
	default:
		add("type %q: want container or virtual-machine", s.Type)
	}
	r := s.Runner
	if r.Version == "" {
		add("runner.version: required")
	} else if !versionRE.MatchString(r.Version) {
		add("runner.version %q: not a version such as 2.321.0", r.Version)
	}
	if r.SHA256 == "" {
		add("runner.sha256: required (the tarball's published checksum)")
	} else if !sha256RE.MatchString(strings.ToLower(r.SHA256)) {
		add("runner.sha256 %q: want 64 hex digits", r.SHA256)
	}
	switch r.Arch {
	case "", "x64", "arm64":
	default:
		add("runner.arch %q: want x64 or arm64", r.Arch)
	}
	if r.URL != "" && !path.IsAbs(r.URL) {
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("runner.url %q: want an http(s) URL or an absolute file path", r.URL)
		}
	}
	for i, p := range s.Steps {
		if p == "" {
			add("steps[%d]: empty path", i)
		}
	}
	for i, f := range s.Files {
		if f.Src == "" {
			add("files[%d].src: required", i)
		}
		if !path.IsAbs(f.Dst) || path.Clean(f.Dst) == "/" {
			add("files[%d].dst %q: want an absolute file path", i, f.Dst)
		}
		if f.Mode&^fs.ModePerm != 0 {
			add("files[%d].mode %o: only permission bits", i, f.Mode)
		}
	}
	if s.Keep < 0 {
		add("keep %d: must not be negative", s.Keep)
	}
	return errors.Join(errs...)
}

func (s Spec) withDefaults() Spec {
	if s.Type == "" {
		s.Type = DefaultType
	}
	if s.Keep == 0 {
		s.Keep = DefaultKeep
	}
	if s.Runner.URL == "" {
		s.Runner.URL = DefaultRunnerURL
	}
	s.Runner.SHA256 = strings.ToLower(s.Runner.SHA256)
	return s
}

// Digest is the sha256 of the Spec's JSON, as set in PropConfigDigest.
func (s Spec) Digest() string {
	b, _ := json.Marshal(s) // plain data: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// runnerURL expands the URL template.
func (r RunnerSpec) runnerURL() string {
	return strings.NewReplacer("{version}", r.Version, "{arch}", r.Arch).Replace(r.URL)
}

// runnerArch maps LXD's architecture name to the runner's.
func runnerArch(lxdArch string) (string, error) {
	switch lxdArch {
	case "x86_64", "amd64":
		return "x64", nil
	case "aarch64", "arm64":
		return "arm64", nil
	}
	return "", fmt.Errorf("no GitHub Actions runner for architecture %q", lxdArch)
}
