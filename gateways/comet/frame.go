package comet

import (
	"bytes"
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

	once    [encodings]sync.Once
	encoded [encodings][]byte

	// The frame as whole WebSocket messages, header included, per
	// encoding, for writes that bypass the library (writeNow).
	wsOnce [encodings]sync.Once
	ws     [encodings][]byte

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
	// pooled is the buffer of its protobuf encoding, taken from
	// pageBuffers (newPooledFrame); nil for any other frame.
	pooled *[]byte
}

func newFrame(f *clientpb.ServerFrame) *frame { return &frame{msg: f} }

// newPooledFrame returns a frame whose protobuf encoding is *buf, made
// already (its compact encoding is the same: it holds no batch), for one
// connection reading protobuf: its JSON encodings would be made of msg,
// which only stands for it. Its writer gives buf back to pageBuffers
// once the frame is written or dropped (release).
func newPooledFrame(msg *clientpb.ServerFrame, buf *[]byte) *frame {
	f := &frame{msg: msg, pooled: buf}
	f.once[encProto].Do(func() { f.encoded[encProto] = *buf })
	return f
}

// release gives the frame's pooled buffer back, if it has one: the
// frame must not be written after. Its encodings that share the buffer
// are forgotten, so that a mistaken write after it sends nothing rather
// than another frame's bytes.
func (f *frame) release() {
	if f.pooled == nil {
		return
	}
	buf := f.pooled
	f.pooled = nil
	for e := range f.encoded {
		if len(f.encoded[e]) > 0 && len(*buf) > 0 && &f.encoded[e][0] == &(*buf)[0] {
			f.encoded[e] = nil
		}
	}
	if cap(*buf) <= maxPooledPage {
		*buf = (*buf)[:0]
		pageBuffers.Put(buf)
	}
}

// bytes returns the frame in encoding e. Frames are built by laneIM
// from valid messages; should one not encode (a string that is not
// UTF-8, say), the client gets an Error frame instead of nothing.
func (f *frame) bytes(e encoding) []byte {
	if f.raw != nil {
		return f.raw
	}
	f.once[e].Do(func() {
		var err error
		switch e {
		case encJSON:
			if f.encoded[e], err = protojson.Marshal(f.msg); err != nil {
				f.encoded[e], _ = protojson.Marshal(encodeFailure(f.msg, err))
			}
		case encCompact:
			f.encoded[e] = compactFrame(f.bytes(encProto))
		case encCompactJSON:
			// The compact protobuf frame, decoded once and written as
			// JSON: the same fields shared. A frame of one message is
			// written whole: JSON frames never merge, so shared would
			// only cost.
			if len(f.msg.GetMessages().GetMessages()) > 1 {
				var c clientpb.ServerFrame
				if proto.Unmarshal(f.bytes(encCompact), &c) == nil {
					if f.encoded[e], err = protojson.Marshal(&c); err == nil {
						return
					}
				}
			}
			f.encoded[e] = f.bytes(encJSON)
		default:
			if f.encoded[e], err = proto.Marshal(f.msg); err != nil {
				f.encoded[e], _ = proto.Marshal(encodeFailure(f.msg, err))
			}
		}
	})
	return f.encoded[e]
}

func encodeFailure(f *clientpb.ServerFrame, err error) *clientpb.ServerFrame {
	return &clientpb.ServerFrame{RequestId: f.GetRequestId(), Body: &clientpb.ServerFrame_Error{Error: &clientpb.Error{
		Code: clientpb.Error_UNAVAILABLE, Text: strings.ToValidUTF8("server could not encode a frame: "+err.Error(), "?"),
	}}}
}

// message returns the frame as one whole unmasked WebSocket message,
// built once per encoding: the bytes a server writes for it.
func (f *frame) message(e encoding) []byte {
	opcode := byte(wsframe.Binary)
	if e.text() {
		opcode = wsframe.Text
	}
	f.wsOnce[e].Do(func() {
		p := f.bytes(e)
		f.ws[e] = append(wsframe.AppendHeader(make([]byte, 0, len(p)+10), opcode, len(p), false), p...)
	})
	return f.ws[e]
}

// messagesTag is the key of ServerFrame.messages (field 12, bytes).
var messagesTag = protowire.AppendTag(nil, frameMessages, protowire.BytesType)[0]

// batch returns the encoded MessageBatch of a room's frame in e, a
// protobuf encoding: the frame's encoding is messagesTag, its length,
// then these bytes, and nothing else (no request id). Frames of one room
// that follow each other in a connection's queue can so go out as one
// ServerFrame whose MessageBatch holds all their messages, still of one
// conversation and in order (see appendMerged). nil for any other frame
// or encoding.
func (f *frame) batch(e encoding) []byte {
	if f.conv == "" || f.raw != nil || e.text() {
		return nil
	}
	b := f.bytes(e)
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

// appendMerged appends frames to b as WebSocket messages in encoding e,
// merging runs of a room's protobuf frames (see batch) into one message
// of at most maxMerged bytes, and returns b and ends with, appended,
// where in b each message it wrote ends. Compact batches merge when they
// share the same fields (sharedPrefix); the merged batch carries shared
// once.
func appendMerged(b []byte, frames []*frame, e encoding, ends []int) ([]byte, []int) {
	for i := 0; i < len(frames); {
		j, size := i+1, 0
		first := frames[i].batch(e)
		shared := sharedPrefix(first)
		if first != nil {
			size = len(first)
			for j < len(frames) && frames[j].conv == frames[i].conv {
				next := frames[j].batch(e)
				if next == nil || !bytes.Equal(sharedPrefix(next), shared) || size+len(next)-len(shared) > maxMerged {
					break
				}
				size += len(next) - len(shared)
				j++
			}
		}
		if j == i+1 {
			b = append(b, frames[i].message(e)...)
		} else {
			b = wsframe.AppendHeader(b, wsframe.Binary, 1+protowire.SizeVarint(uint64(size))+size, false)
			b = protowire.AppendVarint(append(b, messagesTag), uint64(size))
			b = append(b, first...)
			for _, f := range frames[i+1 : j] {
				b = append(b, f.batch(e)[len(shared):]...)
			}
		}
		ends = append(ends, len(b))
		i = j
	}
	return b, ends
}
