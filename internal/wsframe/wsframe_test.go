package wsframe_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/laneim/laneim/internal/wsframe"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 70000} {
		p := bytes.Repeat([]byte{'x'}, n)
		b := append(wsframe.AppendHeader(nil, wsframe.Binary, n, false), p...)
		for cut := range min(len(b), 12) { // every cut inside the header, and one into the payload
			if _, used, err := wsframe.Next(b[:cut], 1<<20); used != 0 || err != nil {
				t.Fatalf("n=%d: %d of %d bytes read as a frame of %d, %v", n, cut, len(b), used, err)
			}
		}
		f, used, err := wsframe.Next(b, 1<<20)
		if err != nil || used != len(b) || !f.Fin || f.Op != wsframe.Binary || len(f.Payload) != n {
			t.Fatalf("n=%d: Next = %+v (%d bytes), %d, %v", n, f.Op, len(f.Payload), used, err)
		}
	}
}

func TestHeaderLengthForms(t *testing.T) {
	for _, tc := range []struct {
		n      int
		masked bool
		want   []byte
	}{
		{5, false, []byte{0x82, 5}},
		{5, true, []byte{0x82, 0x85}},
		{300, false, []byte{0x82, 126, 0x01, 0x2c}},
		{300, true, []byte{0x82, 0x80 | 126, 0x01, 0x2c}},
		{70000, false, []byte{0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70}},
	} {
		if got := wsframe.AppendHeader(nil, wsframe.Binary, tc.n, tc.masked); !bytes.Equal(got, tc.want) {
			t.Errorf("AppendHeader(%d, masked %v) = % x, want % x", tc.n, tc.masked, got, tc.want)
		}
	}
}

func TestNextRefuses(t *testing.T) {
	if _, _, err := wsframe.Next(wsframe.AppendHeader(nil, wsframe.Text, 3, true), 1<<20); !errors.Is(err, wsframe.ErrMasked) {
		t.Fatalf("masked frame: %v, want ErrMasked", err)
	}
	if _, _, err := wsframe.Next(wsframe.AppendHeader(nil, wsframe.Text, 1001, false), 1000); err == nil {
		t.Fatal("a frame over the bound was read")
	}
}

// TestParseHeader: a client's masked header is read once whole, masking
// key included, in each length form.
func TestParseHeader(t *testing.T) {
	for _, n := range []int{0, 125, 126, 0xffff, 0x10000} {
		b := append(wsframe.AppendHeader(nil, wsframe.Text, n, true), 1, 2, 3, 4)
		for cut := range len(b) {
			if _, used := wsframe.ParseHeader(b[:cut]); used != 0 {
				t.Fatalf("n=%d: %d of %d header bytes read as a header of %d", n, cut, len(b), used)
			}
		}
		h, used := wsframe.ParseHeader(b)
		if used != len(b) || !h.Fin || h.Op != wsframe.Text || !h.Masked || h.Len != uint64(n) {
			t.Fatalf("n=%d: ParseHeader = %+v, %d; want the whole %d-byte header", n, h, used, len(b))
		}
	}
}
