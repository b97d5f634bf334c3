package comet

import (
	"bytes"
	"testing"

	"github.com/laneim/laneim/internal/wsframe"
)

// clientFrame is a masked frame with the given first header byte (FIN
// and opcode) and payload.
func clientFrame(first byte, payload []byte) []byte {
	b := wsframe.AppendHeader(nil, first&0x0f, len(payload), true)
	b[0] = first
	mask := [4]byte{9, 8, 7, 6}
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	return b
}

func TestFrameScan(t *testing.T) {
	const fin = 0x80
	big := bytes.Repeat([]byte{1}, 300)     // a 16-bit length
	huge := bytes.Repeat([]byte{2}, 70_000) // a 64-bit length
	for _, tt := range []struct {
		name   string
		stream [][]byte
		want   int
	}{
		{"a whole message", [][]byte{clientFrame(fin|wsframe.Binary, []byte("hi"))}, 0},
		{"a ping", [][]byte{clientFrame(fin|0x9, []byte("p"))}, 0},
		{"a message in three", [][]byte{clientFrame(wsframe.Binary, []byte("a")), clientFrame(0, big), clientFrame(fin, []byte("c"))}, 3},
		{"a ping among fragments", [][]byte{clientFrame(wsframe.Text, nil), clientFrame(fin|0x9, nil), clientFrame(0, nil)}, 2},
		{"long payloads skipped", [][]byte{clientFrame(fin|wsframe.Binary, huge), clientFrame(fin|wsframe.Binary, big), clientFrame(0, nil)}, 1},
		{"empty fragments", [][]byte{clientFrame(wsframe.Binary, nil), clientFrame(0, nil), clientFrame(0, nil), clientFrame(0, nil)}, 4},
	} {
		stream := bytes.Join(tt.stream, nil)
		// Whatever the reads' sizes: whole, byte by byte, and in 5s.
		for _, size := range []int{len(stream), 1, 5} {
			var f frameScan
			got := 0
			for b := stream; len(b) > 0; {
				n := min(size, len(b))
				got += f.feed(b[:n])
				b = b[n:]
			}
			if got != tt.want || f.have != 0 || f.skip != 0 {
				t.Errorf("%s in reads of %d: %d fragments (state %d, %d), want %d", tt.name, size, got, f.have, f.skip, tt.want)
			}
		}
	}
}
