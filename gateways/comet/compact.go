package comet

import (
	"bytes"

	"google.golang.org/protobuf/encoding/protowire"
)

// encoding is how a connection's frames are written.
type encoding uint8

const (
	encProto       encoding = iota // protobuf (laneim.v1.proto)
	encJSON                        // protojson (laneim.v1.json, or no subprotocol)
	encCompact                     // protobuf with compact MessageBatches (Login.compact_batches)
	encCompactJSON                 // protojson of encCompact
	encodings                      // how many there are
)

// text reports whether e is written as WebSocket text messages.
func (e encoding) text() bool { return e == encJSON || e == encCompactJSON }

// Wire numbers of the messages compact batches rewrite (proto/client.proto).
const (
	batchMessages protowire.Number = 1  // MessageBatch.messages
	batchShared   protowire.Number = 2  // MessageBatch.shared
	frameMessages protowire.Number = 12 // ServerFrame.messages
)

// Wire numbers of the SyncResult frames a room's recent messages answer
// (recent.go).
const (
	frameRequestID   protowire.Number = 1  // ServerFrame.request_id
	frameSyncResult  protowire.Number = 18 // ServerFrame.sync_result
	syncConversation protowire.Number = 1  // SyncResult.conversation
	syncMessages     protowire.Number = 2  // SyncResult.messages
	syncHasMore      protowire.Number = 3  // SyncResult.has_more
)

// sharedFields are the Message fields a compact batch carries once, in
// MessageBatch.shared, when all its messages have the same value:
// conversation, sender and content_type.
var sharedFields = [...]protowire.Number{2, 4, 6}

func sharedIndex(n protowire.Number) int {
	for i, f := range sharedFields {
		if f == n {
			return i
		}
	}
	return -1
}

// compactFrame returns the ServerFrame encoding b with its MessageBatch,
// if any, rewritten by compactBatch; b itself when it has none or nothing
// is shared. It works on the wire format: the frame's messages are not
// decoded again.
func compactFrame(b []byte) []byte {
	for rest := b; len(rest) > 0; {
		num, typ, k, v := consumeField(rest)
		if k < 0 {
			return b
		}
		if num == frameMessages && typ == protowire.BytesType {
			batch, _ := protowire.ConsumeBytes(rest[k : k+v])
			c, ok := compactBatch(batch)
			if !ok {
				return b // nothing shared
			}
			head := len(b) - len(rest) // the fields before the batch
			out := make([]byte, 0, len(b))
			out = append(out, b[:head]...)
			out = protowire.AppendTag(out, frameMessages, protowire.BytesType)
			out = protowire.AppendBytes(out, c)
			return append(out, rest[k+v:]...)
		}
		rest = rest[k+v:]
	}
	return b
}

// compactBatch returns the MessageBatch encoding b with the fields of
// sharedFields that every message has, with one non-empty value, taken
// out of the messages and written once in shared, first, and true; b
// itself and false when no field is shared or b holds anything but
// messages.
func compactBatch(b []byte) ([]byte, bool) {
	var (
		vals   [len(sharedFields)][]byte
		shared = [len(sharedFields)]bool{true, true, true}
		n      int
	)
	for rest := b; len(rest) > 0; n++ {
		m, k := consumeMessage(rest)
		if k < 0 {
			return b, false
		}
		rest = rest[k:]
		var seen [len(sharedFields)]int
		for mr := m; len(mr) > 0; {
			num, typ, k, v := consumeField(mr)
			if k < 0 {
				return b, false
			}
			if i := sharedIndex(num); i >= 0 {
				val, _ := protowire.ConsumeBytes(mr[k : k+v])
				seen[i]++
				switch {
				case typ != protowire.BytesType || len(val) == 0:
					shared[i] = false
				case n == 0:
					vals[i] = val
				case !bytes.Equal(vals[i], val):
					shared[i] = false
				}
			}
			mr = mr[k+v:]
		}
		for i, s := range seen {
			if s != 1 {
				shared[i] = false
			}
		}
	}
	if n == 0 || shared == [len(sharedFields)]bool{} {
		return b, false
	}
	var sh []byte
	for i, num := range sharedFields {
		if shared[i] {
			sh = protowire.AppendTag(sh, num, protowire.BytesType)
			sh = protowire.AppendBytes(sh, vals[i])
		}
	}
	out := make([]byte, 0, len(b))
	out = protowire.AppendTag(out, batchShared, protowire.BytesType)
	out = protowire.AppendBytes(out, sh)
	var kept []byte
	for rest := b; len(rest) > 0; {
		m, k := consumeMessage(rest)
		rest = rest[k:]
		kept = kept[:0]
		for mr := m; len(mr) > 0; {
			num, _, k, v := consumeField(mr) // read whole by the first pass
			if i := sharedIndex(num); i < 0 || !shared[i] {
				kept = append(kept, mr[:k+v]...)
			}
			mr = mr[k+v:]
		}
		out = protowire.AppendTag(out, batchMessages, protowire.BytesType)
		out = protowire.AppendBytes(out, kept)
	}
	return out, true
}

// consumeField reads the field b starts with: its number and type, the
// length of its tag and of its value; k is negative if b does not start
// with a whole field.
func consumeField(b []byte) (num protowire.Number, typ protowire.Type, k, v int) {
	num, typ, k = protowire.ConsumeTag(b)
	if k < 0 {
		return 0, 0, -1, 0
	}
	if v = protowire.ConsumeFieldValue(num, typ, b[k:]); v < 0 {
		return 0, 0, -1, 0
	}
	return num, typ, k, v
}

// consumeMessage reads one MessageBatch.messages field from b: the
// message's bytes and the length of the field, or a negative length if
// b does not start with one.
func consumeMessage(b []byte) ([]byte, int) {
	num, typ, k, v := consumeField(b)
	if k < 0 || num != batchMessages || typ != protowire.BytesType {
		return nil, -1
	}
	m, _ := protowire.ConsumeBytes(b[k : k+v])
	return m, k + v
}

// sharedPrefix returns the shared field a compact MessageBatch encoding
// starts with, or nil. Compact batches of one room merge into one when
// their shared fields are the same bytes (see appendMerged).
func sharedPrefix(batch []byte) []byte {
	num, typ, k, v := consumeField(batch)
	if k < 0 || num != batchShared || typ != protowire.BytesType {
		return nil
	}
	return batch[:k+v]
}
