package admin_test

import (
	"reflect"
	"strings"
	"testing"
	"unicode"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin/admintest"
)

func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"acme/app", "acme/app"},
		{"self-hosted, linux", "self-hosted, linux"},
		{`C:\runner "quoted"`, `C:\runner "quoted"`}, // kept: nothing acts on them
		{"日本語 é 🚀 \ufffd", "日本語 é 🚀 \ufffd"},         // printable, and a U+FFFD that was written
		{"\x1b[2Jx", `\x1b[2Jx`},
		{"\x1b]0;owned\x07", `\x1b]0;owned\x07`},
		{"a\nb\tc\rd", `a\nb\tc\rd`},
		{"\x00\x7f", `\x00\x7f`},
		{"\u0085\u009b31m", `\u0085\u009b31m`}, // C1: NEL, CSI
		{"abc\u202efdp.exe", `abc\u202efdp.exe`},
		{"\u2066x\u2069\u200e\u200f\u061c", `\u2066x\u2069\u200e\u200f\u061c`},
		{"zero\u200bwidth\ufeff\u00ad", `zero\u200bwidth\ufeff\u00ad`},
		{"no\u00a0break\u2028line", `no\u00a0break\u2028line`},
		{"\ue000\U000e0001", `\ue000\U000e0001`}, // private use, a tag character
		{"bad\xffbyte\xc3", `bad\xffbyte\xc3`},
	} {
		if got := admin.Printable(tc.in); got != tc.want {
			t.Errorf("Printable(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// onlyPrintable fails the test if s holds anything but printable runes
// and, where lines is true, newlines.
func onlyPrintable(t *testing.T, what, s string, lines bool) {
	t.Helper()
	for i, r := range s {
		if (r == '\n' && lines) || (unicode.IsPrint(r) && (r != '\ufffd' || strings.HasPrefix(s[i:], "\ufffd"))) {
			continue
		}
		t.Errorf("%s: %U at byte %d, in %q", what, r, i, s[max(0, i-20):min(len(s), i+20)])
		return
	}
}

// Every string of a Status, a Job and a JobDetail goes through Printable,
// including fields added after this test was written: it walks them all.
func TestPrintableCoversEveryString(t *testing.T) {
	b := admintest.Hostile()
	st := b.Data
	jobs, _ := b.Jobs(t.Context(), admin.JobFilter{})
	d := b.Details[7]
	for name, v := range map[string]any{
		"Status": st.Printable(), "Job": jobs[0].Printable(), "JobDetail": d.Printable(),
	} {
		n := 0
		walkStrings(reflect.ValueOf(v), func(s string) {
			n++
			onlyPrintable(t, name, s, false)
			if s != "store" && s != admin.CheckOK && !strings.Contains(s, `\x1b]0;owned\x07\x1b[2J\n\t\u009b31m\u202e\u2066\u200b\xff`) {
				t.Errorf("%s: %q does not carry the escaped text", name, s)
			}
		})
		if n < 5 {
			t.Errorf("%s: only %d strings walked", name, n)
		}
	}
	// The sample is left as it was.
	if !strings.Contains(st.Jobs[0].Labels[0], admintest.Evil) || !strings.Contains(d.Events[0].Detail, admintest.Evil) ||
		!strings.Contains(st.Leader.Leader, admintest.Evil) {
		t.Error("Printable changed its receiver's slices or pointers")
	}
	for k := range st.Checks {
		if k != "store" && !strings.Contains(k, admintest.Evil) {
			t.Error("Printable changed its receiver's map")
		}
	}
	if got := (admin.Status{}).Printable(); got.Pools != nil || got.Jobs != nil || got.Checks != nil || got.Leader != nil {
		t.Errorf("empty status: %+v", got)
	}
}

// walkStrings calls f with every string in v: fields, elements, map keys
// and values, through pointers.
func walkStrings(v reflect.Value, f func(string)) {
	switch v.Kind() {
	case reflect.String:
		f(v.String())
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			walkStrings(v.Elem(), f)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				walkStrings(v.Field(i), f)
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			walkStrings(v.Index(i), f)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			walkStrings(it.Key(), f)
			walkStrings(it.Value(), f)
		}
	}
}

// html/template stops markup; the page must also not let a name's bidi
// controls or other invisible characters reorder or hide what it shows.
func TestPageShowsControlsEscaped(t *testing.T) {
	r := do(t, newHandler(admintest.Hostile()), "GET", "/")
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	onlyPrintable(t, "page", r.body, true)
	for _, want := range []string{
		`<td class="pool">pool\x1b]0;owned\x07\x1b[2J\n\t\u009b31m\u202e\u2066\u200b\xff</td>`,
		`<td class="repo">acme/\x1b]0;owned`, `<td class="runner">runner\x1b]0;owned`,
		`<span class="reason">why\x1b]0;owned`, `<li>lxd\x1b]0;owned`, `<span class="event">ping\x1b]0;owned`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %s\n%s", want, r.body)
		}
	}
}
