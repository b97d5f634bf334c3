package comet

import "slices"

// smallSetMax is the size up to which a smallSet keeps a slice.
const smallSetMax = 16

// smallSet is a set that keeps a few elements in a slice and more in a
// map. A connection is in a room or two, and a user has a connection or
// two, but a Go map holding one element costs ~200 bytes: per idle
// connection, that was as much as its socket's state (issue 9).
// The zero value is an empty set.
type smallSet[T comparable] struct {
	few  []T
	many map[T]struct{} // past smallSetMax elements; few is then nil
}

// add adds v; it reports whether v was not in the set.
func (s *smallSet[T]) add(v T) bool {
	if s.many != nil {
		if _, ok := s.many[v]; ok {
			return false
		}
		s.many[v] = struct{}{}
		return true
	}
	if slices.Contains(s.few, v) {
		return false
	}
	if len(s.few) < smallSetMax {
		s.few = append(s.few, v)
		return true
	}
	s.many = make(map[T]struct{}, 2*smallSetMax)
	for _, w := range s.few {
		s.many[w] = struct{}{}
	}
	s.many[v] = struct{}{}
	s.few = nil
	return true
}

// remove removes v, if it is in the set.
func (s *smallSet[T]) remove(v T) {
	if s.many != nil {
		delete(s.many, v)
		return
	}
	if i := slices.Index(s.few, v); i >= 0 {
		last := len(s.few) - 1
		s.few[i] = s.few[last]
		var zero T
		s.few[last] = zero // no reference kept past the end
		s.few = s.few[:last]
	}
}

// has reports whether v is in the set.
func (s *smallSet[T]) has(v T) bool {
	if s.many != nil {
		_, ok := s.many[v]
		return ok
	}
	return slices.Contains(s.few, v)
}

// len returns the number of elements; a nil set has none.
func (s *smallSet[T]) len() int {
	if s == nil {
		return 0
	}
	if s.many != nil {
		return len(s.many)
	}
	return len(s.few)
}

// appendTo appends the elements to out, in no particular order; a nil
// set has none. The caller may change the set while going through out.
func (s *smallSet[T]) appendTo(out []T) []T {
	if s == nil {
		return out
	}
	if s.many == nil {
		return append(out, s.few...)
	}
	for v := range s.many {
		out = append(out, v)
	}
	return out
}
