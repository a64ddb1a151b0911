// Package devimage builds a tiny LXD container image, busybox plus one
// static binary, for tests and for running the service without real runner
// images ("dev mode").
package devimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"runtime"
	"strings"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

// Defaults for a zero Options field.
const (
	DefaultBusybox     = "/bin/busybox" // busybox-static on Debian
	DefaultBinaryPath  = "/usr/local/bin/runner"
	DefaultDescription = "lxd-gha-autoscaler dev runner (busybox)"
)

// Applets linked to busybox: enough for an operator to poke around with
// `lxc exec NAME -- sh`.
var applets = []string{
	"sh", "ash", "cat", "cp", "df", "echo", "env", "free", "grep", "hostname",
	"id", "ip", "kill", "less", "ln", "ls", "mkdir", "mount", "mv", "nc",
	"netstat", "ping", "ps", "rm", "sed", "seq", "sleep", "tail", "top",
	"true", "false", "uname", "vi", "wget",
}

// Options describes the image. Only paths on the host are read.
type Options struct {
	Busybox     string   // host path of a static busybox; default /bin/busybox
	Binary      string   // host path of a static binary to add; optional
	BinaryPath  string   // where Binary goes in the image; default /usr/local/bin/runner
	Init        []string // command line exec'd by /sbin/init; default BinaryPath if Binary is set, else sleep forever
	Description string   // image description; default DefaultDescription
	Gzip        bool     // gzip the tarball (LXD takes either)
	// Padding adds this many bytes of incompressible filler under
	// /opt/padding, in files of 8 MiB: an image the size of a real one
	// with its toolset, for measuring what its size costs.
	Padding int64
	// Time is the creation date and every mtime; default now. Equal options
	// and Time give equal bytes, hence the same image fingerprint.
	Time time.Time
}

func (o Options) withDefaults() Options {
	if o.Busybox == "" {
		o.Busybox = DefaultBusybox
	}
	if o.BinaryPath == "" {
		o.BinaryPath = DefaultBinaryPath
	}
	if len(o.Init) == 0 {
		if o.Binary != "" {
			o.Init = []string{o.BinaryPath}
		} else {
			// No `infinity`: busybox sleep may be built without it.
			o.Init = []string{"/bin/busybox", "sleep", "2147483647"}
		}
	}
	if o.Description == "" {
		o.Description = DefaultDescription
	}
	if o.Time.IsZero() {
		o.Time = time.Now()
	}
	o.Time = o.Time.Truncate(time.Second)
	return o
}

// Architecture maps a GOARCH to LXD's name for it.
func Architecture(goarch string) (string, error) {
	names := map[string]string{
		"amd64":   "x86_64",
		"386":     "i686",
		"arm64":   "aarch64",
		"arm":     "armv7l",
		"ppc64le": "ppc64le",
		"ppc64":   "ppc64",
		"s390x":   "s390x",
		"riscv64": "riscv64",
		"loong64": "loongarch64",
		"mips64":  "mips64",
	}
	if a, ok := names[goarch]; ok {
		return a, nil
	}
	return "", fmt.Errorf("no LXD architecture for GOARCH %q", goarch)
}

// Build writes a unified image tarball (metadata.yaml and rootfs/) to w.
//
// /sbin/init is a busybox script that brings lo up (a bare container's
// loopback starts down) and then execs opts.Init, which so becomes PID 1:
// when it exits the container stops, and an ephemeral one is deleted.
func Build(w io.Writer, opts Options) error {
	opts = opts.withDefaults()
	if err := checkOptions(opts); err != nil {
		return fmt.Errorf("devimage: %w", err)
	}
	arch, err := Architecture(runtime.GOARCH)
	if err != nil {
		return fmt.Errorf("devimage: %w", err)
	}
	busybox, err := readStatic(opts.Busybox, "busybox")
	if err != nil {
		return fmt.Errorf("devimage: %w", err)
	}
	var binary []byte
	if opts.Binary != "" {
		if binary, err = readStatic(opts.Binary, "binary"); err != nil {
			return fmt.Errorf("devimage: %w", err)
		}
	}

	out := w
	var gz *gzip.Writer
	if opts.Gzip {
		// Speed over size: the image goes over a local socket.
		gz, _ = gzip.NewWriterLevel(w, gzip.BestSpeed) // a valid level never errs
		out = gz
	}
	tw := &tarWriter{tw: tar.NewWriter(out), mtime: opts.Time, dirs: map[string]bool{}}

	tw.file("metadata.yaml", 0o644, metadata(arch, opts))
	for _, d := range []struct {
		name string
		mode int64
	}{
		{"rootfs", 0o755}, {"rootfs/bin", 0o755}, {"rootfs/sbin", 0o755},
		{"rootfs/dev", 0o755}, {"rootfs/proc", 0o555}, {"rootfs/sys", 0o555},
		{"rootfs/tmp", 0o1777}, {"rootfs/etc", 0o755}, {"rootfs/root", 0o700},
		{"rootfs/var", 0o755}, {"rootfs/usr", 0o755},
	} {
		tw.dir(d.name, d.mode)
	}
	tw.file("rootfs/bin/busybox", 0o755, busybox)
	for _, a := range applets {
		tw.symlink("rootfs/bin/"+a, "busybox")
	}
	tw.file("rootfs/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	tw.file("rootfs/etc/group", 0o644, []byte("root:x:0:\n"))
	tw.file("rootfs/sbin/init", 0o755, initScript(opts.Init))
	if binary != nil {
		// Parents of BinaryPath, outermost first.
		dir := path.Dir(path.Clean(opts.BinaryPath))
		var parents []string
		for ; dir != "/" && dir != "."; dir = path.Dir(dir) {
			parents = append(parents, dir)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			tw.dir("rootfs"+parents[i], 0o755)
		}
		tw.file("rootfs"+path.Clean(opts.BinaryPath), 0o755, binary)
	}
	if opts.Padding > 0 {
		tw.dir("rootfs/opt", 0o755)
		tw.dir("rootfs/opt/padding", 0o755)
		var seed [32]byte
		rng := rand.NewChaCha8(seed) // the same bytes every time: equal options, equal image
		for i, left := 0, opts.Padding; left > 0; i++ {
			chunk := make([]byte, min(left, 8<<20))
			_, _ = rng.Read(chunk) // never fails
			tw.file(fmt.Sprintf("rootfs/opt/padding/%04d", i), 0o644, chunk)
			left -= int64(len(chunk))
		}
	}

	err = tw.close()
	if gz != nil {
		err = errors.Join(err, gz.Close())
	}
	if err != nil {
		return fmt.Errorf("devimage: write tarball: %w", err)
	}
	return nil
}

// Import builds the image and imports it into LXD under alias.
func Import(ctx context.Context, c *lxd.Client, opts Options, alias string) (fingerprint string, err error) {
	var buf bytes.Buffer
	if err := Build(&buf, opts); err != nil {
		return "", err
	}
	return c.ImportImage(ctx, &buf, alias)
}

func checkOptions(o Options) error {
	var errs []error
	if !path.IsAbs(o.BinaryPath) || path.Clean(o.BinaryPath) == "/" {
		errs = append(errs, fmt.Errorf("BinaryPath %q: must be an absolute file path", o.BinaryPath))
	}
	if o.Init[0] == "" {
		errs = append(errs, errors.New("Init: empty command"))
	}
	for _, a := range o.Init {
		if strings.ContainsRune(a, 0) {
			errs = append(errs, fmt.Errorf("Init: argument %q contains NUL", a))
		}
	}
	return errors.Join(errs...)
}

// readStatic reads an executable that must run in an image with no libc.
func readStatic(p, what string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s %s: not an ELF executable: %w", what, p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s %s: dynamically linked; a static build is needed (busybox-static, CGO_ENABLED=0)", what, p)
		}
	}
	return b, nil
}

func metadata(arch string, o Options) []byte {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) } // JSON strings are YAML
	return []byte(fmt.Sprintf("architecture: %s\ncreation_date: %d\nproperties:\n  architecture: %s\n  description: %s\n  os: busybox\n  release: dev\n",
		q(arch), o.Time.Unix(), q(arch), q(o.Description)))
}

func initScript(argv []string) []byte {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return []byte(`#!/bin/busybox sh
# PID 1. Bring loopback up (it starts down), then become the init command:
# when that exits, the container stops.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
/bin/busybox ip link set lo up
exec ` + strings.Join(quoted, " ") + "\n")
}

// tarWriter keeps the first error so Build reads straight through.
type tarWriter struct {
	tw    *tar.Writer
	mtime time.Time
	dirs  map[string]bool
	err   error
}

func (t *tarWriter) header(h *tar.Header) bool {
	if t.err != nil {
		return false
	}
	h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname = t.mtime, 0, 0, "root", "root"
	t.err = t.tw.WriteHeader(h)
	return t.err == nil
}

func (t *tarWriter) dir(name string, mode int64) {
	if t.dirs[name] {
		return
	}
	t.dirs[name] = true
	t.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode})
}

func (t *tarWriter) symlink(name, target string) {
	t.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
}

func (t *tarWriter) file(name string, mode int64, data []byte) {
	if t.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}) {
		_, t.err = t.tw.Write(data)
	}
}

func (t *tarWriter) close() error {
	if t.err != nil {
		return t.err
	}
	return t.tw.Close()
}
