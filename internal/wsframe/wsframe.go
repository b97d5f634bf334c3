// Package wsframe writes and reads WebSocket frame headers (RFC 6455
// section 5.2) for the code that frames messages itself rather than
// through the WebSocket library, or follows them: the comet's batched
// writes and its count of clients' fragments, the load tool's members.
package wsframe

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Opcodes.
const (
	Cont   = 0x0
	Text   = 0x1
	Binary = 0x2
	Close  = 0x8
	Ping   = 0x9
	Pong   = 0xa
)

// AppendHeader appends the header of a final frame (FIN set) of opcode op
// holding n payload bytes, with the mask bit set if masked; a client,
// which must mask, appends its masking key after it.
func AppendHeader(b []byte, op byte, n int, masked bool) []byte {
	var m byte
	if masked {
		m = 0x80
	}
	b = append(b, 0x80|op)
	switch {
	case n < 126:
		return append(b, m|byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, m|126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, m|127), uint64(n))
	}
}

// Frame is one unmasked frame, as a server sends them.
type Frame struct {
	Fin     bool
	Op      byte
	Payload []byte // a part of the bytes given to Next
}

// ErrMasked is Next's error for a masked frame.
var ErrMasked = errors.New("wsframe: a masked frame")

// Header is a frame's header.
type Header struct {
	Fin    bool
	Op     byte
	Masked bool   // a masking key follows the length
	Len    uint64 // of the payload
}

// ParseHeader reads the frame header at the start of b and reports its
// length in bytes, the masking key included; 0 while b does not hold the
// whole header yet.
func ParseHeader(b []byte) (Header, int) {
	if len(b) < 2 {
		return Header{}, 0
	}
	h, n := Header{Fin: b[0]&0x80 != 0, Op: b[0] & 0x0f, Masked: b[1]&0x80 != 0, Len: uint64(b[1] & 0x7f)}, 2
	switch h.Len {
	case 126:
		if len(b) < 4 {
			return Header{}, 0
		}
		h.Len, n = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return Header{}, 0
		}
		h.Len, n = binary.BigEndian.Uint64(b[2:]), 10
	}
	if h.Masked {
		if n += 4; len(b) < n {
			return Header{}, 0
		}
	}
	return h, n
}

// Next reads the unmasked frame at the start of b and reports how many
// bytes it takes; 0 while b does not hold the whole frame yet. A frame
// that is masked, or whose payload is longer than max, is an error.
func Next(b []byte, max uint64) (Frame, int, error) {
	if len(b) >= 2 && b[1]&0x80 != 0 {
		return Frame{}, 0, ErrMasked
	}
	h, n := ParseHeader(b)
	if n == 0 {
		return Frame{}, 0, nil
	}
	if h.Len > max {
		return Frame{}, 0, fmt.Errorf("wsframe: a frame of %d bytes, more than %d", h.Len, max)
	}
	if uint64(len(b)-n) < h.Len {
		return Frame{}, 0, nil
	}
	end := n + int(h.Len)
	return Frame{Fin: h.Fin, Op: h.Op, Payload: b[n:end]}, end, nil
}
