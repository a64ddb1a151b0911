package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

var _ LXD = (*fakeLXD)(nil)

// fakeLXD is an in-memory LXD for the tests that need no daemon: images
// with aliases, instances with a status, and guests that answer like a
// healthy runner image. The function fields change single answers.
type fakeLXD struct {
	// exec answers a command in a running instance with its output and
	// exit code; nil: healthyExec. A non-nil error is a failure to run.
	exec func(ctx context.Context, inst *fakeInstance, argv []string) (string, int, error)
	// deleteImage, when set, may fail a DeleteImage before it happens.
	deleteImage func(fp string) error

	mu        sync.Mutex
	images    map[string]lxd.ImageInfo // by fingerprint
	aliases   map[string]string        // alias -> fingerprint
	instances map[string]*fakeInstance
	calls     []string // "launch NAME", "publish NAME", "delete NAME", ...
	n         int      // images made
}

type fakeInstance struct {
	Name, Image, Status string
	Ephemeral           bool
	Files               map[string]fakeFile // pushed, by path
	Scripts             []string            // what sh -euc ran, in order
}

type fakeFile struct {
	Data []byte
	Mode int
}

// fakeRunnerVersion is what the fake Runner.Listener --version answers.
const fakeRunnerVersion = "2.999.0"

// healthyExec answers as an image whose systemd has booted, whose
// bootstrap is enabled and whose runner answers its version.
func healthyExec(_ context.Context, _ *fakeInstance, argv []string) (string, int, error) {
	cmd := strings.Join(argv, " ")
	switch {
	case strings.Contains(cmd, "systemctl is-system-running"):
		return "running", 0, nil
	case cmd == "systemctl is-enabled "+BootstrapUnit:
		return "enabled", 0, nil
	case cmd == RunnerDir+"/bin/Runner.Listener --version":
		return fakeRunnerVersion, 0, nil
	case cmd == "uname -m":
		return "x86_64", 0, nil
	}
	return "", 0, nil
}

func newFakeLXD() *fakeLXD {
	return &fakeLXD{images: map[string]lxd.ImageInfo{}, aliases: map[string]string{}, instances: map[string]*fakeInstance{}}
}

// addImage adds an image with these properties and aliases, made at
// created, and returns its fingerprint.
func (f *fakeLXD) addImage(props map[string]string, created time.Time, aliases ...string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addImageLocked(lxd.ImageInfo{Architecture: "x86_64", Type: "container", Properties: props, CreatedAt: created}, aliases)
}

func (f *fakeLXD) addImageLocked(img lxd.ImageInfo, aliases []string) string {
	f.n++
	img.Fingerprint = fmt.Sprintf("%02x%062x", f.n, f.n)
	img.Aliases = aliases
	f.images[img.Fingerprint] = img
	for _, a := range aliases {
		f.aliases[a] = img.Fingerprint
	}
	return img.Fingerprint
}

// addInstance adds an instance of the source image with this status.
func (f *fakeLXD) addInstance(name, status string) *fakeInstance {
	f.mu.Lock()
	defer f.mu.Unlock()
	inst := &fakeInstance{Name: name, Status: status, Files: map[string]fakeFile{}}
	f.instances[name] = inst
	return inst
}

func (f *fakeLXD) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// called returns the calls made so far whose text starts with prefix.
func (f *fakeLXD) called(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// instanceNames returns the names of the instances that exist.
func (f *fakeLXD) instanceNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.instances {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// imagesNamed returns the fingerprints of the images built for name,
// sorted.
func (f *fakeLXD) imagesNamed(name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for fp, img := range f.images {
		if img.Properties[PropName] == name {
			out = append(out, fp)
		}
	}
	slices.Sort(out)
	return out
}

func (f *fakeLXD) alias(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.aliases[name]
}

// running returns the instance, if it exists and runs.
func (f *fakeLXD) running(name string) (*fakeInstance, error) {
	inst, ok := f.instances[name]
	if !ok {
		return nil, fmt.Errorf("instance %s: %w", name, fleet.ErrNotFound)
	}
	if inst.Status != "Running" {
		return nil, fmt.Errorf("instance %s is %s", name, inst.Status)
	}
	return inst, nil
}

func (f *fakeLXD) Exec(ctx context.Context, name string, e lxd.ExecSpec) (int, error) {
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	f.mu.Lock()
	inst, err := f.running(name)
	if err == nil && len(e.Command) == 3 && e.Command[0] == "sh" && e.Command[1] == "-euc" {
		inst.Scripts = append(inst.Scripts, e.Command[2])
	}
	exec := f.exec
	f.mu.Unlock()
	if err != nil {
		return -1, err
	}
	if exec == nil {
		exec = healthyExec
	}
	out, code, err := exec(ctx, inst, e.Command)
	if out != "" && e.Stdout != nil {
		io.WriteString(e.Stdout, out+"\n")
	}
	return code, err
}

func (f *fakeLXD) PushFile(ctx context.Context, name, path string, content io.ReadSeeker, _, _ int, mode int) error {
	b, err := io.ReadAll(content)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	inst, err := f.running(name)
	if err != nil {
		return err
	}
	inst.Files[path] = fakeFile{Data: b, Mode: mode}
	return nil
}

func (f *fakeLXD) Launch(ctx context.Context, spec lxd.LaunchSpec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("launch %s", spec.Name)
	fp, ok := f.aliases[spec.Image]
	if !ok {
		fp = spec.Image
	}
	if _, ok := f.images[fp]; !ok {
		return fmt.Errorf("launch %s: image %s: %w", spec.Name, spec.Image, fleet.ErrNotFound)
	}
	if _, ok := f.instances[spec.Name]; ok {
		return fmt.Errorf("launch %s: name taken", spec.Name)
	}
	f.instances[spec.Name] = &fakeInstance{Name: spec.Name, Image: fp, Status: "Running", Ephemeral: spec.Ephemeral, Files: map[string]fakeFile{}}
	return nil
}

func (f *fakeLXD) Start(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("start %s", name)
	inst, ok := f.instances[name]
	if !ok {
		return fmt.Errorf("start %s: %w", name, fleet.ErrNotFound)
	}
	inst.Status = "Running"
	return nil
}

func (f *fakeLXD) Stop(ctx context.Context, name string, _ time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("stop %s", name)
	inst, ok := f.instances[name]
	if !ok {
		return fmt.Errorf("stop %s: %w", name, fleet.ErrNotFound)
	}
	if inst.Ephemeral {
		delete(f.instances, name)
		return nil
	}
	inst.Status = "Stopped"
	return nil
}

func (f *fakeLXD) Status(ctx context.Context, name string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	inst, ok := f.instances[name]
	if !ok {
		return "", fmt.Errorf("get instance %s: %w", name, fleet.ErrNotFound)
	}
	return inst.Status, nil
}

func (f *fakeLXD) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("delete %s", name)
	delete(f.instances, name)
	return nil
}

// Publish makes an image of a stopped instance, with the architecture of
// the image it came from; aliases must be new, as in LXD.
func (f *fakeLXD) Publish(ctx context.Context, name string, props map[string]string, aliases []string, _ string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("publish %s", name)
	inst, ok := f.instances[name]
	if !ok {
		return "", fmt.Errorf("publish %s: %w", name, fleet.ErrNotFound)
	}
	if inst.Status != "Stopped" {
		return "", fmt.Errorf("publish %s: instance is %s", name, inst.Status)
	}
	for _, a := range aliases {
		if _, ok := f.aliases[a]; ok {
			return "", fmt.Errorf("publish %s: alias %s exists", name, a)
		}
	}
	src := f.images[inst.Image]
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(f.n) * time.Minute)
	return f.addImageLocked(lxd.ImageInfo{Architecture: src.Architecture, Type: src.Type, Properties: props, CreatedAt: created}, aliases), nil
}

func (f *fakeLXD) Image(ctx context.Context, name string) (lxd.ImageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fp, ok := f.aliases[name]
	if !ok {
		fp = name
	}
	img, ok := f.images[fp]
	if !ok {
		return lxd.ImageInfo{}, fmt.Errorf("image %s: %w", name, fleet.ErrNotFound)
	}
	return img, nil
}

// Images lists the images oldest first, as LXD's client does.
func (f *fakeLXD) Images(ctx context.Context) ([]lxd.ImageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []lxd.ImageInfo
	for _, img := range f.images {
		out = append(out, img)
	}
	slices.SortFunc(out, func(a, b lxd.ImageInfo) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

func (f *fakeLXD) AliasTarget(ctx context.Context, alias string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.aliases[alias], nil
}

func (f *fakeLXD) SetAlias(ctx context.Context, alias, fp string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("set-alias %s %s", alias, fp)
	if _, ok := f.images[fp]; !ok {
		return fmt.Errorf("image alias %s -> %s: %w", alias, fp, fleet.ErrNotFound)
	}
	f.aliases[alias] = fp
	return nil
}

func (f *fakeLXD) DeleteImage(ctx context.Context, fp string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.deleteImage != nil {
		if err := f.deleteImage(fp); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("delete-image %s", fp)
	delete(f.images, fp)
	for a, t := range f.aliases {
		if t == fp {
			delete(f.aliases, a)
		}
	}
	return nil
}

// fakeSpec is a Spec for the fake: its source is a Debian image on
// x86_64, and its runner a small local tarball whose URL only resolves
// with arch x64.
func fakeSpec(t *testing.T, f *fakeLXD) Spec {
	t.Helper()
	f.addImage(map[string]string{"os": "debian", "release": "bookworm"}, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), "debian")
	dir := t.TempDir()
	body := []byte("a runner tarball")
	if err := os.WriteFile(filepath.Join(dir, "runner-x64.tar.gz"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	return Spec{
		Name:   "linux",
		Source: "debian",
		Runner: RunnerSpec{Version: fakeRunnerVersion, URL: filepath.Join(dir, "runner-{arch}.tar.gz"), SHA256: sha(body)},
		Keep:   2,
	}
}

// errRefused is a failure the tests inject.
var errRefused = errors.New("refused")
