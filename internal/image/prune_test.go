package image

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestPruneFake(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type img struct {
		label   string
		built   int // hours after t0 in PropBuildTime; 0: no such property
		created int // hours after t0 of LXD's creation time
	}
	// Built and created in order: a, b, c, d.
	inOrder := []img{{"a", 1, 1}, {"b", 2, 2}, {"c", 3, 3}, {"d", 4, 4}}
	for _, tt := range []struct {
		name    string
		images  []img
		current string // what the alias points to; "": no alias
		keep    int
		want    []string // pruned, in order
	}{
		{name: "keeps the keep newest", images: inOrder, current: "d", keep: 2, want: []string{"a", "b"}},
		{name: "never the one the alias points to, even the oldest", images: inOrder, current: "a", keep: 2, want: []string{"b", "c"}},
		{name: "nor with keep 0", images: inOrder, current: "b", keep: 0, want: []string{"a", "c", "d"}},
		{name: "no alias yet", images: inOrder, keep: 1, want: []string{"a", "b", "c"}},
		{name: "no more than keep", images: inOrder, current: "d", keep: 4},
		{
			name:    "the build time orders, not LXD's creation time",
			images:  []img{{"a", 1, 4}, {"b", 2, 3}, {"c", 3, 2}, {"d", 4, 1}},
			current: "d", keep: 1, want: []string{"a", "b", "c"},
		},
		{
			name:    "an image without a build time is ordered by its creation time",
			images:  []img{{"a", 1, 1}, {"x", 0, 2}, {"b", 3, 5}, {"c", 4, 4}},
			current: "c", keep: 2, want: []string{"a", "x"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeLXD()
			byFP := map[string]string{}
			for _, i := range tt.images {
				props := map[string]string{PropName: "linux"}
				if i.built != 0 {
					props[PropBuildTime] = t0.Add(time.Duration(i.built) * time.Hour).Format(time.RFC3339)
				}
				var aliases []string
				if i.label == tt.current {
					aliases = []string{"linux"}
				}
				byFP[f.addImage(props, t0.Add(time.Duration(i.created)*time.Hour), aliases...)] = i.label
			}
			// Another name's images are never ours to prune.
			other := f.addImage(map[string]string{PropName: "windows", PropBuildTime: t0.Format(time.RFC3339)}, t0)
			f.addImage(map[string]string{PropName: "windows"}, t0)
			f.addImage(nil, t0)

			pruned, err := Prune(context.Background(), f, "linux", tt.keep)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, fp := range pruned {
				got = append(got, byFP[fp])
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("pruned %v, want %v", got, tt.want)
			}
			if n := len(f.called("delete-image ")); n != len(tt.want) {
				t.Errorf("%d images deleted, want %d", n, len(tt.want))
			}
			if _, err := f.Image(context.Background(), other); err != nil {
				t.Errorf("another name's image: %v", err)
			}
			if tt.current != "" && byFP[f.alias("linux")] != tt.current {
				t.Errorf("the alias's image is gone")
			}
		})
	}
}

// TestPruneFakeDeleteFails: an image that will not go is reported, not
// listed as pruned, and the alias's image stays.
func TestPruneFakeDeleteFails(t *testing.T) {
	f := newFakeLXD()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var fps []string
	for i := range 4 {
		fps = append(fps, f.addImage(map[string]string{PropName: "linux"}, t0.Add(time.Duration(i)*time.Hour)))
	}
	f.SetAlias(context.Background(), "linux", fps[3])
	f.deleteImage = func(fp string) error {
		if fp == fps[0] {
			return errRefused
		}
		return nil
	}
	pruned, err := Prune(context.Background(), f, "linux", 3)
	if !errors.Is(err, errRefused) {
		t.Errorf("error %v, want %v", err, errRefused)
	}
	// The one to go would not: nothing newer goes in its place.
	if len(pruned) != 0 {
		t.Errorf("pruned %v; want none: the three newest stay", pruned)
	}
}
