package comet

import (
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
)

// frame is a ServerFrame encoded at most once per encoding; the same bytes
// go to every connection that receives it. Safe for concurrent use.
//
// A room's frame also counts the connections it has not yet gone out to
// (pending); each connection releases it once, whether it wrote, dropped
// or refused it, and the room hears when few enough are left (see
// room.drained).
type frame struct {
	msg *clientpb.ServerFrame

	pbOnce, jsonOnce sync.Once
	pb, json         []byte

	// The frame as whole WebSocket messages, header included, per
	// encoding (0 protobuf, 1 JSON), for writes that bypass the library
	// (writeNow).
	wsOnce [2]sync.Once
	ws     [2][]byte

	// A remainder is what a non-blocking write of of left unwritten:
	// raw bytes the writer sends as they are, released as of.
	raw []byte
	of  *frame

	room      *room        // nil for frames of one connection
	pending   atomic.Int64 // connections that have not released it
	threshold int64        // pending count at which the room is told
}

func newFrame(f *clientpb.ServerFrame) *frame { return &frame{msg: f} }

// release tells a room's frame that one connection is done with it. Safe
// on nil and on frames without a room.
func (f *frame) release() {
	if f != nil && f.of != nil {
		f = f.of
	}
	if f == nil || f.room == nil {
		return
	}
	if f.pending.Add(-1) == f.threshold {
		f.room.drained(f)
	}
}

// bytes returns the frame in the connection's encoding. Frames are built
// by laneIM from valid messages; should one not encode (a string that is
// not UTF-8, say), the client gets an Error frame instead of nothing.
func (f *frame) bytes(useJSON bool) []byte {
	if f.raw != nil {
		return f.raw
	}
	if useJSON {
		f.jsonOnce.Do(func() {
			var err error
			if f.json, err = protojson.Marshal(f.msg); err != nil {
				f.json, _ = protojson.Marshal(encodeFailure(f.msg, err))
			}
		})
		return f.json
	}
	f.pbOnce.Do(func() {
		var err error
		if f.pb, err = proto.Marshal(f.msg); err != nil {
			f.pb, _ = proto.Marshal(encodeFailure(f.msg, err))
		}
	})
	return f.pb
}

func encodeFailure(f *clientpb.ServerFrame, err error) *clientpb.ServerFrame {
	return &clientpb.ServerFrame{RequestId: f.GetRequestId(), Body: &clientpb.ServerFrame_Error{Error: &clientpb.Error{
		Code: clientpb.Error_UNAVAILABLE, Text: strings.ToValidUTF8("server could not encode a frame: "+err.Error(), "?"),
	}}}
}

// armHold is added to a room frame's pending count while it is being
// queued, so that no release reaches the threshold before arm.
const armHold = 1 << 40

// arm removes the hold that broadcastLocked put on a room frame and, if
// its members released it below the threshold meanwhile, tells the room.
// Safe on nil and on frames without a room.
func (f *frame) arm() {
	if f == nil || f.room == nil {
		return
	}
	if f.pending.Add(-armHold) <= f.threshold {
		f.room.drained(f)
	}
}

// message returns the frame as one whole unmasked WebSocket message
// (RFC 6455 section 5.2: FIN, text or binary opcode, payload length),
// built once per encoding: the bytes a server writes for it.
func (f *frame) message(useJSON bool) []byte {
	i, opcode := 0, byte(0x2) // binary
	if useJSON {
		i, opcode = 1, 0x1 // text
	}
	f.wsOnce[i].Do(func() {
		p := f.bytes(useJSON)
		b := make([]byte, 0, len(p)+10)
		b = append(b, 0x80|opcode)
		switch n := len(p); {
		case n < 126:
			b = append(b, byte(n))
		case n <= 0xffff:
			b = append(b, 126, byte(n>>8), byte(n))
		default:
			b = append(b, 127)
			b = binary.BigEndian.AppendUint64(b, uint64(n))
		}
		f.ws[i] = append(b, p...)
	})
	return f.ws[i]
}

// remainder returns a frame of the bytes of f that a write left, b.
func (f *frame) remainder(b []byte) *frame { return &frame{raw: b, of: f} }
