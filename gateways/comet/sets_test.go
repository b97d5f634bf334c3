package comet

import (
	"slices"
	"testing"
)

func TestSmallSet(t *testing.T) {
	var none *smallSet[int]
	if none.len() != 0 || none.appendTo(nil) != nil {
		t.Fatal("a nil set is not empty")
	}
	for _, n := range []int{0, 1, 2, smallSetMax, smallSetMax + 1, 3 * smallSetMax} {
		var s smallSet[int]
		want := map[int]bool{}
		for i := range n {
			if !s.add(i) {
				t.Fatalf("n=%d: add(%d) reports present", n, i)
			}
			if s.add(i) {
				t.Fatalf("n=%d: add(%d) again reports new", n, i)
			}
			want[i] = true
		}
		if s.len() != n {
			t.Fatalf("n=%d: len %d", n, s.len())
		}
		if (n > smallSetMax) != (s.many != nil) {
			t.Fatalf("n=%d: map in use: %v", n, s.many != nil)
		}
		for i := 0; i < n; i += 2 { // remove the even ones, and one never added
			s.remove(i)
			delete(want, i)
		}
		s.remove(-1)
		got := s.appendTo(nil)
		slices.Sort(got)
		var wantList []int
		for i := range n {
			if want[i] {
				wantList = append(wantList, i)
			}
		}
		if !slices.Equal(got, wantList) || s.len() != len(wantList) {
			t.Fatalf("n=%d: after removals %v (len %d), want %v", n, got, s.len(), wantList)
		}
	}
}
