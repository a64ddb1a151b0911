package fleettest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// ErrAway is what Instances answers while SetAway is on: LXD did not answer.
var ErrAway = fmt.Errorf("dial unix /var/lib/lxd/unix.socket: %w", fleet.ErrUnreachable)

// Instances is an in-memory LXD: fleet.Instances with knobs for failures
// and counters of what was asked.
type Instances struct {
	mu        sync.Mutex
	instances map[string]fleet.Instance
	specs     map[string]fleet.InstanceSpec
	creates   int
	peak      int
	failNext  int
	block     chan struct{}
	away      bool
	halfMade  fleet.InstanceState
	down      map[string]bool // cluster members that do not answer
	deletes   map[string]int  // delete attempts by instance
	images    map[string]string
	prepares  int
	failStart int
}

var _ fleet.Instances = (*Instances)(nil)

// NewInstances returns an empty LXD.
func NewInstances() *Instances {
	return &Instances{instances: map[string]fleet.Instance{}, specs: map[string]fleet.InstanceSpec{}, down: map[string]bool{},
		deletes: map[string]int{}, images: map[string]string{}}
}

// Create makes the instance Running, with the spec's labels.
func (m *Instances) Create(ctx context.Context, spec fleet.InstanceSpec) error {
	return m.create(ctx, spec, fleet.InstanceRunning)
}

// Prepare makes the instance Stopped, with the spec's labels; a spec with
// a JIT config is refused.
func (m *Instances) Prepare(ctx context.Context, spec fleet.InstanceSpec) error {
	if spec.JITConfig != "" {
		return fmt.Errorf("prepare instance %s: holds a JIT config", spec.Name)
	}
	return m.create(ctx, spec, fleet.InstanceStopped)
}

// StartPrepared gives a stopped instance its labels and JIT config and
// makes it Running.
func (m *Instances) StartPrepared(_ context.Context, name string, labels fleet.InstanceLabels, jit fleet.Secret) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.away {
		return ErrAway
	}
	in, ok := m.instances[name]
	switch {
	case !ok:
		return fmt.Errorf("start prepared instance %s: %w", name, fleet.ErrNotFound)
	case in.State != fleet.InstanceStopped || in.Labels.Owner != labels.Owner:
		return fmt.Errorf("start prepared instance %s: not a stopped prepared instance", name)
	case m.failStart > 0:
		m.failStart--
		delete(m.instances, name)
		return errors.New("lxd: injected start failure")
	}
	in.Labels, in.State = labels, fleet.InstanceRunning
	m.instances[name] = in
	spec := m.specs[name]
	spec.Labels, spec.JITConfig = labels, jit
	m.specs[name] = spec
	return nil
}

// ImageFingerprint answers what SetImage said of the image, else
// "fp-" + image.
func (m *Instances) ImageFingerprint(_ context.Context, image string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.away {
		return "", ErrAway
	}
	return m.fingerprint(image), nil
}

func (m *Instances) fingerprint(image string) string {
	if fp, ok := m.images[image]; ok {
		return fp
	}
	return "fp-" + image
}

// SetImage makes image stand for fingerprint fp from now on, as moving an
// alias to a new build does.
func (m *Instances) SetImage(image, fp string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.images[image] = fp
}

// Prepares is the number of successful prepares.
func (m *Instances) Prepares() int { m.mu.Lock(); defer m.mu.Unlock(); return m.prepares }

// FailNextStart makes the next n starts of prepared instances fail (and
// the instance go, as LXD's client cleans up).
func (m *Instances) FailNextStart(n int) { m.mu.Lock(); defer m.mu.Unlock(); m.failStart = n }

func (m *Instances) create(ctx context.Context, spec fleet.InstanceSpec, state fleet.InstanceState) error {
	m.mu.Lock()
	block := m.block
	m.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.away {
		if m.halfMade != "" {
			m.instances[spec.Name] = fleet.Instance{Name: spec.Name, Managed: true, Labels: spec.Labels, State: m.halfMade}
			m.specs[spec.Name] = spec
			m.halfMade = ""
		}
		return ErrAway
	}
	if m.failNext > 0 {
		m.failNext--
		return errors.New("lxd: injected failure")
	}
	if _, ok := m.instances[spec.Name]; ok {
		return fmt.Errorf("instance %s exists", spec.Name)
	}
	// A target that names a member puts it there; a group or none leaves
	// no location, as if LXD were not clustered.
	loc := spec.Target
	if strings.HasPrefix(loc, "@") {
		loc = ""
	}
	if m.down[loc] {
		return fmt.Errorf("create instance %s: Unable to connect to %s: %w", spec.Name, loc, fleet.ErrMemberUnreachable)
	}
	if state == fleet.InstanceStopped {
		m.prepares++
	} else {
		m.creates++
	}
	var image string
	if spec.Image != "" {
		image = m.fingerprint(spec.Image)
	}
	m.instances[spec.Name] = fleet.Instance{Name: spec.Name, Managed: true, Labels: spec.Labels, State: state, Location: loc, Image: image}
	m.specs[spec.Name] = spec
	m.peak = max(m.peak, len(m.instances))
	return nil
}

func (m *Instances) Delete(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.away {
		return ErrAway
	}
	m.deletes[name]++
	if in, ok := m.instances[name]; ok && m.down[in.Location] {
		return fmt.Errorf("delete instance %s: Missing event connection with target cluster member: %w", name, fleet.ErrMemberUnreachable)
	}
	delete(m.instances, name)
	return nil
}

// SetMemberDown makes a cluster member stop answering (or answer again):
// a create that targets it and a delete of an instance on it fail, and
// its instances are listed in state error, as LXD lists them.
func (m *Instances) SetMemberDown(member string, down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down[member] = down
}

// Deletes is how many times a delete of the named instance was asked.
func (m *Instances) Deletes(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.deletes[name]
}

// view is an instance as LXD lists it now.
func (m *Instances) view(in fleet.Instance) fleet.Instance {
	if m.down[in.Location] {
		in.State = fleet.InstanceError
	}
	return in
}

// List returns the managed instances, sorted by name.
func (m *Instances) List(context.Context) ([]fleet.Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.away {
		return nil, ErrAway
	}
	var out []fleet.Instance
	for _, in := range m.instances {
		if in.Managed {
			out = append(out, m.view(in))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *Instances) Get(_ context.Context, name string) (fleet.Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.away {
		return fleet.Instance{}, ErrAway
	}
	in, ok := m.instances[name]
	if !ok {
		return fleet.Instance{}, fmt.Errorf("instance %s: %w", name, fleet.ErrNotFound)
	}
	return m.view(in), nil
}

// Put adds or replaces an instance as if someone made it by other means.
func (m *Instances) Put(in fleet.Instance) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.instances[in.Name] = in
}

// Has reports whether the named instance exists.
func (m *Instances) Has(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.instances[name]
	return ok
}

// Names returns the names of every instance, sorted.
func (m *Instances) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range m.instances {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Spec returns the spec the named instance was created with.
func (m *Instances) Spec(name string) (fleet.InstanceSpec, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.specs[name]
	return s, ok
}

// Specs returns every spec created, by instance name.
func (m *Instances) Specs() map[string]fleet.InstanceSpec {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]fleet.InstanceSpec, len(m.specs))
	for k, v := range m.specs {
		out[k] = v
	}
	return out
}

// Count is the number of instances that exist now.
func (m *Instances) Count() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.instances) }

// Creates is the number of successful creates (prepares not counted).
func (m *Instances) Creates() int { m.mu.Lock(); defer m.mu.Unlock(); return m.creates }

// Peak is the most instances that existed at once.
func (m *Instances) Peak() int { m.mu.Lock(); defer m.mu.Unlock(); return m.peak }

// FailNext makes the next n creates fail, as LXD refusing them would.
func (m *Instances) FailNext(n int) { m.mu.Lock(); defer m.mu.Unlock(); m.failNext = n }

// Block makes creates wait until release is called or their ctx ends, as
// an LXD that never answers would.
func (m *Instances) Block() (release func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := make(chan struct{})
	m.block = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			close(ch)
			m.mu.Lock()
			m.block = nil
			m.mu.Unlock()
		})
	}
}

// SetAway makes every call fail with ErrAway, as while the daemon is down.
// The first create that meets it leaves behind an instance in state
// halfMade (none when empty), as a daemon killed in a create may.
func (m *Instances) SetAway(away bool, halfMade fleet.InstanceState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.away, m.halfMade = away, halfMade
}
