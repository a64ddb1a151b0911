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
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/image"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

const imageUsage = `
image commands:
  image build NAME --config FILE [--compression ALGO]
                    build the runner image NAME of the config's images:
                    section, smoke-test it, then move alias NAME to it
  image prepare INSTANCE --config FILE --image NAME
                    install the runner, bootstrap, files and steps of image
                    NAME into an existing instance (for source_instance),
                    without publishing
`

// imageConfig is one entry of the config's images: section.
type imageConfig struct {
	Name   string `yaml:"name"`
	Source string `yaml:"source"`
	Type   string `yaml:"type"`
	Runner struct {
		Version string `yaml:"version"`
		URL     string `yaml:"url"`
		SHA256  string `yaml:"sha256"`
		Arch    string `yaml:"arch"`
	} `yaml:"runner"`
	Steps []string `yaml:"steps"`
	Files []struct {
		Src  string `yaml:"src"`
		Dst  string `yaml:"dst"`
		Mode string `yaml:"mode"` // octal, e.g. "0644"; default the source file's
	} `yaml:"files"`
	Profiles     []string      `yaml:"profiles"` // of the builder and smoke-test instances
	Keep         int           `yaml:"keep"`
	RebuildEvery time.Duration `yaml:"rebuild_every"`
}

// imageFileConfig is the part of the config file that image commands read.
// The rest of the file is not checked here (`validate` does that), so that
// building an image needs neither the App's key nor the webhook secret.
type imageFileConfig struct {
	LXD    lxdFileConfig `yaml:"lxd"`
	Images []imageConfig `yaml:"images"`
	// The other sections, unchecked here; a misspelt key inside lxd: or an
	// images: entry is still an error.
	Rest map[string]any `yaml:",inline"`
}

// imageSpec turns an images: entry into an image.Spec. Relative step and
// file paths are relative to baseDir, the config file's directory. The
// error lists every problem, each prefixed with images[i].
func (ic imageConfig) imageSpec(i int, baseDir string) (image.Spec, error) {
	var errs []error
	spec := image.Spec{
		Name: ic.Name, Source: ic.Source, Type: ic.Type, Keep: ic.Keep,
		Runner: image.RunnerSpec{Version: ic.Runner.Version, URL: ic.Runner.URL, SHA256: ic.Runner.SHA256, Arch: ic.Runner.Arch},
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(baseDir, p)
	}
	if u := ic.Runner.URL; u != "" && !strings.Contains(u, "://") {
		spec.Runner.URL = abs(u)
	}
	for _, s := range ic.Steps {
		spec.Steps = append(spec.Steps, abs(s))
	}
	for j, f := range ic.Files {
		var mode fs.FileMode
		if f.Mode != "" {
			m, err := strconv.ParseUint(f.Mode, 8, 32)
			if err != nil {
				errs = append(errs, fmt.Errorf("files[%d].mode %q: want octal such as \"0644\"", j, f.Mode))
			}
			mode = fs.FileMode(m)
		}
		spec.Files = append(spec.Files, image.FileSpec{Src: abs(f.Src), Dst: f.Dst, Mode: mode})
	}
	if ic.RebuildEvery < 0 {
		errs = append(errs, fmt.Errorf("rebuild_every %s: must not be negative", ic.RebuildEvery))
	}
	if err := spec.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		// One problem per line, each naming its entry.
		lines := strings.Split(err.Error(), "\n")
		for k, l := range lines {
			lines[k] = fmt.Sprintf("images[%d] (%s): %s", i, ic.Name, l)
		}
		return spec, errors.New(strings.Join(lines, "\n"))
	}
	return spec, nil
}

// imageSpecs checks every images: entry, and that names are unique.
func imageSpecs(images []imageConfig, baseDir string) ([]image.Spec, error) {
	var errs []error
	seen := map[string]bool{}
	var specs []image.Spec
	for i, ic := range images {
		spec, err := ic.imageSpec(i, baseDir)
		if err != nil {
			errs = append(errs, err)
		}
		if seen[ic.Name] {
			errs = append(errs, fmt.Errorf("images[%d]: name %q used twice", i, ic.Name))
		}
		seen[ic.Name] = true
		specs = append(specs, spec)
	}
	return specs, errors.Join(errs...)
}

// loadImageConfig reads the lxd: and images: sections of the config file.
func loadImageConfig(path string) (imageFileConfig, []image.Spec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return imageFileConfig{}, nil, fmt.Errorf("read config: %w", err)
	}
	var fc imageFileConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return imageFileConfig{}, nil, fmt.Errorf("parse %s: %w", path, err)
	}
	dir, _ := filepath.Abs(filepath.Dir(path))
	specs, err := imageSpecs(fc.Images, dir)
	if err != nil {
		return fc, nil, fmt.Errorf("%s: invalid images:\n%w", path, err)
	}
	return fc, specs, nil
}

// imageCommand runs `image build` and `image prepare`.
func imageCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"image: want build or prepare"}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("image "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file")
	var imageName, compression *string
	switch sub {
	case "build":
		compression = fs.String("compression", "", "LXD compression of the published image (e.g. none, gzip, zstd); default the server's")
	case "prepare":
		imageName = fs.String("image", "", "the images: entry whose runner, files and steps to install")
	default:
		return usageError{"image: unknown subcommand " + sub}
	}
	// NAME may come before or after the flags.
	var pos string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	rest := fs.Args()
	if pos == "" && len(rest) > 0 {
		pos, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("image %s: unexpected argument %q", sub, rest[0])}
	}
	if pos == "" {
		return usageError{"image " + sub + ": missing " + map[string]string{"build": "NAME", "prepare": "INSTANCE"}[sub]}
	}
	if *path == "" {
		return fmt.Errorf("image %s: --config FILE is required", sub)
	}
	want := pos
	if sub == "prepare" {
		if *imageName == "" {
			return fmt.Errorf("image prepare: --image NAME is required")
		}
		want = *imageName
	}
	fc, specs, err := loadImageConfig(*path)
	if err != nil {
		return err
	}
	var spec *image.Spec
	var profiles []string
	var names []string
	for i := range specs {
		names = append(names, specs[i].Name)
		if specs[i].Name == want {
			spec = &specs[i]
			profiles = fc.Images[i].Profiles
		}
	}
	if spec == nil {
		return fmt.Errorf("image %s: no image %q in the images: section of %s (have: %s)", sub, want, *path, strings.Join(names, ", "))
	}
	var p problems
	lcfg := fc.LXD.lxdConfig(&p)
	if err := p.err(); err != nil {
		return fmt.Errorf("image %s: %w", sub, err)
	}
	// Long steps run under the caller's context; OpTimeout bounds the
	// short calls only.
	c, err := lxd.Connect(ctx, lcfg)
	if err != nil {
		return err
	}
	opts := image.Options{Log: stderr, Profiles: profiles}
	start := time.Now()
	if sub == "prepare" {
		if err := image.Prepare(ctx, c, pos, *spec, opts); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "prepared %s with runner %s in %s\n", pos, spec.Runner.Version, time.Since(start).Round(time.Second))
		return nil
	}
	opts.Compression = *compression
	res, err := image.Build(ctx, c, *spec, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "built %s: %s (alias %s, runner %s) in %s\n", spec.Name, res.Fingerprint, res.VersionedAlias,
		res.RunnerVersion, time.Since(start).Round(time.Second))
	for _, fp := range res.Pruned {
		fmt.Fprintf(stdout, "pruned %s\n", fp)
	}
	return nil
}
