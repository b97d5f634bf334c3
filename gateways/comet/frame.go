package comet

import (
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/internal/wsframe"
	"github.com/laneim/laneim/proto/clientpb"
)

// frame is a ServerFrame encoded at most once per encoding; the same bytes
// go to every connection that receives it. Safe for concurrent use.
type frame struct {
	msg *clientpb.ServerFrame

	pbOnce, jsonOnce sync.Once
	pb, json         []byte

	// The frame as whole WebSocket messages, header included, per
	// encoding (0 protobuf, 1 JSON), for writes that bypass the library
	// (writeNow).
	wsOnce [2]sync.Once
	ws     [2][]byte

	// A remainder is what a non-blocking write left of a frame
	// unwritten: raw bytes the writer sends as they are.
	raw []byte

	// conv is the conversation of a room's frame, whose messages a write
	// may merge with the next frames of the room (see batch); "" for
	// any other frame.
	conv string
	// flushed is when a room's frame was flushed, for the write lag
	// (latency.go); zero for any other frame.
	flushed time.Time
}

func newFrame(f *clientpb.ServerFrame) *frame { return &frame{msg: f} }

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

// message returns the frame as one whole unmasked WebSocket message,
// built once per encoding: the bytes a server writes for it.
func (f *frame) message(useJSON bool) []byte {
	i, opcode := 0, byte(wsframe.Binary)
	if useJSON {
		i, opcode = 1, wsframe.Text
	}
	f.wsOnce[i].Do(func() {
		p := f.bytes(useJSON)
		f.ws[i] = append(wsframe.AppendHeader(make([]byte, 0, len(p)+10), opcode, len(p), false), p...)
	})
	return f.ws[i]
}

// messagesTag is the key of ServerFrame.messages (field 12, bytes).
var messagesTag = protowire.AppendTag(nil, 12, protowire.BytesType)[0]

// batch returns the encoded MessageBatch of a room's frame: the frame's
// protobuf encoding is messagesTag, its length, then these bytes, and
// nothing else (no request id). Frames of one room that follow each
// other in a connection's queue can so go out as one ServerFrame whose
// MessageBatch holds all their messages, still of one conversation and
// in order (see appendMerged). nil for any other frame.
func (f *frame) batch() []byte {
	if f.conv == "" || f.raw != nil {
		return nil
	}
	b := f.bytes(false)
	if len(b) == 0 || b[0] != messagesTag {
		return nil // not encoded as expected (an Error instead, say)
	}
	n, k := protowire.ConsumeVarint(b[1:])
	if k < 0 || uint64(len(b)-1-k) != n {
		return nil
	}
	return b[1+k:]
}

// maxMerged bounds the payload of a message that merges frames.
const maxMerged = 1 << 20

// appendMerged appends frames to b as WebSocket messages in the
// connection's encoding, merging runs of a room's protobuf frames (see
// batch) into one message of at most maxMerged bytes, and returns b and
// ends with, appended, where in b each message it wrote ends.
func appendMerged(b []byte, frames []*frame, useJSON bool, ends []int) ([]byte, []int) {
	for i := 0; i < len(frames); {
		j, size := i+1, 0
		if first := frames[i].batch(); first != nil && !useJSON {
			size = len(first)
			for j < len(frames) && frames[j].conv == frames[i].conv {
				next := frames[j].batch()
				if next == nil || size+len(next) > maxMerged {
					break
				}
				size += len(next)
				j++
			}
		}
		if j == i+1 {
			b = append(b, frames[i].message(useJSON)...)
		} else {
			b = wsframe.AppendHeader(b, wsframe.Binary, 1+protowire.SizeVarint(uint64(size))+size, false)
			b = protowire.AppendVarint(append(b, messagesTag), uint64(size))
			for _, f := range frames[i:j] {
				b = append(b, f.batch()...)
			}
		}
		ends = append(ends, len(b))
		i = j
	}
	return b, ends
}
