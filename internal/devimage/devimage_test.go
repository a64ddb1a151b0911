package devimage_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

type entry struct {
	hdr  *tar.Header
	data []byte
}

func readTar(t *testing.T, r io.Reader) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if _, dup := out[name]; dup {
			t.Errorf("duplicate entry %s", name)
		}
		out[name] = entry{h, b}
	}
}

// staticBinary builds a small static Go program to put into images.
func staticBinary(t *testing.T) string {
	t.Helper()
	return lxdtest.BuildGo(t, lxdtest.ProbePackage)
}

func needBusybox(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(devimage.DefaultBusybox); err != nil {
		fleettest.Missing(t, "no %s (apt-get install busybox-static, or run .ci/setup-lxd.sh): %v", devimage.DefaultBusybox, err)
	}
}

func TestBuildContents(t *testing.T) {
	needBusybox(t)
	bin := staticBinary(t)
	when := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	opts := devimage.Options{
		Binary:     bin,
		BinaryPath: "/opt/it/bin/runner",
		Init:       []string{"/opt/it/bin/runner", "--url", "it's here", "$HOME"},
		Time:       when,
	}
	var buf bytes.Buffer
	if err := devimage.Build(&buf, opts); err != nil {
		t.Fatal(err)
	}
	files := readTar(t, bytes.NewReader(buf.Bytes()))

	arch, err := devimage.Architecture(runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	meta := string(files["metadata.yaml"].data)
	for _, want := range []string{
		fmt.Sprintf("architecture: %q\n", arch),
		fmt.Sprintf("creation_date: %d\n", when.Unix()),
		"  os: busybox\n",
		fmt.Sprintf("  description: %q\n", devimage.DefaultDescription),
	} {
		if !strings.Contains(meta, want) {
			t.Errorf("metadata.yaml lacks %q:\n%s", want, meta)
		}
	}

	busybox, err := os.ReadFile(devimage.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(files["rootfs/bin/busybox"].data, busybox) || files["rootfs/bin/busybox"].hdr.Mode != 0o755 {
		t.Error("rootfs/bin/busybox is not an executable copy of /bin/busybox")
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(files["rootfs/opt/it/bin/runner"].data, binary) || files["rootfs/opt/it/bin/runner"].hdr.Mode != 0o755 {
		t.Error("binary not at rootfs/opt/it/bin/runner")
	}
	for _, a := range []string{"sh", "ls", "ps", "wget", "ip", "cat"} {
		h := files["rootfs/bin/"+a].hdr
		if h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
			t.Errorf("rootfs/bin/%s is not a symlink to busybox: %+v", a, h)
		}
	}
	for _, d := range []string{"rootfs", "rootfs/dev", "rootfs/proc", "rootfs/sys", "rootfs/tmp", "rootfs/etc", "rootfs/root", "rootfs/var", "rootfs/opt", "rootfs/opt/it", "rootfs/opt/it/bin"} {
		if h := files[d].hdr; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("%s is not a directory", d)
		}
	}
	if m := files["rootfs/tmp"].hdr.Mode; m != 0o1777 {
		t.Errorf("rootfs/tmp mode %o, want 1777", m)
	}
	for name, e := range files {
		if e.hdr.Uid != 0 || e.hdr.Gid != 0 || !e.hdr.ModTime.Equal(when) {
			t.Errorf("%s: uid %d gid %d mtime %s, want root and %s", name, e.hdr.Uid, e.hdr.Gid, e.hdr.ModTime, when)
		}
	}
	init := string(files["rootfs/sbin/init"].data)
	for _, want := range []string{"#!/bin/busybox sh\n", "ip link set lo up\n", `exec '/opt/it/bin/runner' '--url' 'it'\''s here' '$HOME'` + "\n"} {
		if !strings.Contains(init, want) {
			t.Errorf("/sbin/init lacks %q:\n%s", want, init)
		}
	}
	if files["rootfs/sbin/init"].hdr.Mode != 0o755 {
		t.Error("/sbin/init is not executable")
	}

	// Same options, same bytes; gzip'd it holds the same files.
	var again, gz bytes.Buffer
	if err := devimage.Build(&again, opts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two builds with equal options differ")
	}
	opts.Gzip = true
	if err := devimage.Build(&gz, opts); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&gz)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(readTar(t, zr)); n != len(files) {
		t.Errorf("gzip'd tarball has %d entries, want %d", n, len(files))
	}
}

func TestBuildDefaults(t *testing.T) {
	needBusybox(t)
	var buf bytes.Buffer
	if err := devimage.Build(&buf, devimage.Options{}); err != nil {
		t.Fatal(err)
	}
	files := readTar(t, &buf)
	if _, ok := files["rootfs/usr/local/bin/runner"]; ok {
		t.Error("binary added without Options.Binary")
	}
	if init := string(files["rootfs/sbin/init"].data); !strings.Contains(init, "exec '/bin/busybox' 'sleep'") {
		t.Errorf("default init does not sleep:\n%s", init)
	}

	buf.Reset()
	if err := devimage.Build(&buf, devimage.Options{Binary: staticBinary(t)}); err != nil {
		t.Fatal(err)
	}
	files = readTar(t, &buf)
	if _, ok := files["rootfs/usr/local/bin/runner"]; !ok {
		t.Error("binary not at the default path")
	}
	if init := string(files["rootfs/sbin/init"].data); !strings.Contains(init, "exec '/usr/local/bin/runner'\n") {
		t.Errorf("default init with a binary does not run it:\n%s", init)
	}
}

func TestBuildErrors(t *testing.T) {
	needBusybox(t)
	notELF := t.TempDir() + "/script"
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts devimage.Options
		want string
	}{
		{"dynamic binary", devimage.Options{Binary: "/bin/ls"}, "dynamically linked"},
		{"missing busybox", devimage.Options{Busybox: "/nonexistent/busybox"}, "busybox"},
		{"not ELF", devimage.Options{Binary: notELF}, "not an ELF"},
		{"relative path", devimage.Options{BinaryPath: "bin/runner"}, "absolute"},
		{"empty init", devimage.Options{Init: []string{""}}, "empty command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := devimage.Build(io.Discard, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Build = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestArchitecture(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "x86_64", "arm64": "aarch64", "riscv64": "riscv64"} {
		if got, err := devimage.Architecture(goarch); got != want || err != nil {
			t.Errorf("Architecture(%s) = %q, %v; want %q", goarch, got, err, want)
		}
	}
	if _, err := devimage.Architecture("wasm"); err == nil {
		t.Error("Architecture(wasm) succeeded")
	}
}

// TestImportAndRun imports a gzip'd image whose init runs the binary from a
// non-default path with arguments that need quoting, and checks that the
// binary ran as the init command and that the container went away after it
// exited.
func TestImportAndRun(t *testing.T) {
	c := lxdtest.Connect(t)
	ctx := lxdtest.Ctx(t)

	got := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case got <- r.URL.RawQuery + " " + string(b):
		default:
		}
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	url := fmt.Sprintf("http://127.0.0.1:%s/x?q=it's%%20ok", port)

	alias := lxdtest.Name(t)
	fp, err := devimage.Import(ctx, c, devimage.Options{
		Binary:      staticBinary(t),
		BinaryPath:  "/opt/probe/probe",
		Init:        []string{"/opt/probe/probe", "-get", "user.probe", "-post", url},
		Description: "devimage test " + alias,
		Gzip:        true,
	}, alias)
	if fp != "" {
		t.Cleanup(func() { _ = c.DeleteImage(ctx, fp) })
	}
	if err != nil {
		t.Fatal(err)
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil {
		t.Fatal(err)
	}
	profile := lxdtest.Profile(t, c, map[string]map[string]string{"host": lxdtest.ProxyDevice(p)})

	name := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, name)
	err = c.Create(ctx, fleet.InstanceSpec{
		Name: name, Image: alias, Profiles: []string{"default", profile},
		Config: map[string]string{"user.probe": "hello"},
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-got:
		if v != "q=it's%20ok hello" {
			t.Errorf("server got %q, want %q", v, "q=it's%20ok hello")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the init command never called the server")
	}
	lxdtest.WaitGone(t, c, name, 30*time.Second)
}

// Padding makes the image as large as asked, with incompressible filler,
// the same bytes every time.
func TestBuildPadding(t *testing.T) {
	needBusybox(t)
	build := func() []byte {
		var buf bytes.Buffer
		at := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
		if err := devimage.Build(&buf, devimage.Options{Padding: 9 << 20, Time: at}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	a, b := build(), build()
	if !bytes.Equal(a, b) {
		t.Error("two builds with equal options differ")
	}
	files := readTar(t, bytes.NewReader(a))
	p0, p1 := files["rootfs/opt/padding/0000"].data, files["rootfs/opt/padding/0001"].data
	if len(p0) != 8<<20 || len(p1) != 1<<20 {
		t.Fatalf("padding files of %d and %d bytes, want 8 MiB and 1 MiB", len(p0), len(p1))
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	_, _ = zw.Write(p0)
	_ = zw.Close()
	if z.Len() < len(p0)*99/100 {
		t.Errorf("padding compresses to %d of %d bytes: want it incompressible", z.Len(), len(p0))
	}
}
