package bench

import (
	"encoding/binary"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the client protocol (proto/client.proto) that the
// bench's receive path reads without decoding whole frames.
const (
	serverFrameRequestID  = 1  // ServerFrame.request_id
	serverFrameMessages   = 12 // ServerFrame.messages (MessageBatch)
	serverFrameSyncResult = 18 // ServerFrame.sync_result (SyncResult)
	syncMessages          = 2  // SyncResult.messages (repeated Message)
	syncHasMore           = 3  // SyncResult.has_more
	batchMessages         = 1  // MessageBatch.messages (repeated Message)
	batchShared           = 2  // MessageBatch.shared (Message), in compact batches
	messageConversation   = 2  // Message.conversation
	messageSeq            = 3  // Message.seq
	messageBody           = 5  // Message.body
)

// scanBatch reads a protobuf ServerFrame and, if it is a MessageBatch,
// calls fn with the seq and the send time (the body's first 8 bytes, Unix
// nanoseconds, big-endian) of each message of conversation, and reports
// how many it found and true. A frame that is not a batch, or does not
// parse, reports false.
//
// It is the members' receive path, run for every message every member
// gets (a million a second at 10,000 members × 100 msg/s), so the loops
// over a batch and a message read tags and lengths of one byte inline,
// leave the rest to protowire, and stop reading a message once its
// conversation, seq and body are found (BenchmarkScanBatch).
func scanBatch(frame []byte, conversation string, fn func(seq uint64, sentUnixNano int64)) (int, bool) {
	batch, ok := field(frame, serverFrameMessages)
	if !ok {
		return 0, false
	}
	// A compact batch (Login.compact_batches) may carry the messages'
	// conversation once, in shared: a message without one has it.
	var sharedConv []byte
	if shared, ok := field(batch, batchShared); ok {
		sharedConv, _ = field(shared, messageConversation)
	}
	n, _, ok := scanMessages(batch, batchMessages, sharedConv, conversation, fn)
	return n, ok
}

// scanSync reads a protobuf ServerFrame and, if it answers a Sync,
// calls fn as scanBatch does for each message of conversation in its
// page, and reports how many it found, the largest seq of the page (0
// if empty), its has_more and true. A frame that is not a SyncResult, or
// does not parse, reports false. A catch-up reads thousands of pages of
// 500 messages after mass cuts: decoding them whole cost the load tool
// a core.
func scanSync(frame []byte, conversation string, fn func(seq uint64, sentUnixNano int64)) (n int, last uint64, more, ok bool) {
	res, ok := field(frame, serverFrameSyncResult)
	if !ok {
		return 0, 0, false, false
	}
	n, last, ok = scanMessages(res, syncMessages, nil, conversation, fn)
	if !ok {
		return 0, 0, false, false
	}
	for b := res; len(b) > 0; {
		num, typ, l := consumeTag(b)
		if l < 0 {
			return 0, 0, false, false
		}
		b = b[l:]
		if num == syncHasMore && typ == protowire.VarintType {
			v, l := consumeVarint(b)
			if l < 0 {
				return 0, 0, false, false
			}
			more = v != 0
			b = b[l:]
			continue
		}
		if l = protowire.ConsumeFieldValue(num, typ, b); l < 0 {
			return 0, 0, false, false
		}
		b = b[l:]
	}
	return n, last, more, true
}

// scanMessages reads the messages in field msgField of list (a
// MessageBatch or a SyncResult) and calls fn for each of conversation
// (or of defaultConv, when a message has none) with a body of at least 8
// bytes. It reports how many, the largest seq of all the messages and
// whether list parsed.
func scanMessages(list []byte, msgField protowire.Number, defaultConv []byte, conversation string, fn func(seq uint64, sentUnixNano int64)) (n int, last uint64, ok bool) {
	for len(list) > 0 {
		num, typ, l := consumeTag(list)
		if l < 0 {
			return n, last, false
		}
		list = list[l:]
		if num != msgField || typ != protowire.BytesType {
			l = protowire.ConsumeFieldValue(num, typ, list)
			if l < 0 {
				return n, last, false
			}
			list = list[l:]
			continue
		}
		msg, l := consumeBytes(list)
		if l < 0 {
			return n, last, false
		}
		list = list[l:]
		var (
			conv  = defaultConv
			seq   uint64
			body  []byte
			found int // fields of seq and body seen
		)
		// The server's messages are marshalled in field order, each
		// field once, so the rest of a message is skipped once seq and
		// body are found: its conversation, if it has one, came first.
		for len(msg) > 0 && found < 2 {
			num, typ, l := consumeTag(msg)
			if l < 0 {
				return n, last, false
			}
			msg = msg[l:]
			switch typ {
			case protowire.BytesType:
				v, l := consumeBytes(msg)
				if l < 0 {
					return n, last, false
				}
				switch num {
				case messageConversation:
					conv = v
				case messageBody:
					body, found = v, found+1
				}
				msg = msg[l:]
			case protowire.VarintType:
				v, l := consumeVarint(msg)
				if l < 0 {
					return n, last, false
				}
				if num == messageSeq {
					seq, found = v, found+1
				}
				msg = msg[l:]
			default:
				l := protowire.ConsumeFieldValue(num, typ, msg)
				if l < 0 {
					return n, last, false
				}
				msg = msg[l:]
			}
		}
		last = max(last, seq)
		if string(conv) != conversation || len(body) < 8 { // compared without a copy
			continue
		}
		fn(seq, int64(binary.BigEndian.Uint64(body)))
		n++
	}
	return n, last, true
}

// varintField returns the first varint of field num in b, a message's
// encoding, and whether it found one.
func varintField(b []byte, num protowire.Number) (uint64, bool) {
	for len(b) > 0 {
		n, typ, l := consumeTag(b)
		if l < 0 {
			return 0, false
		}
		b = b[l:]
		if n == num && typ == protowire.VarintType {
			v, l := consumeVarint(b)
			return v, l >= 0
		}
		if l = protowire.ConsumeFieldValue(n, typ, b); l < 0 {
			return 0, false
		}
		b = b[l:]
	}
	return 0, false
}

func consumeVarint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	return protowire.ConsumeVarint(b)
}

// consumeTag is protowire.ConsumeTag with a one-byte tag (fields 1 to
// 15) read inline.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	if len(b) > 0 && b[0] < 0x80 && b[0]>>3 != 0 {
		return protowire.Number(b[0] >> 3), protowire.Type(b[0] & 7), 1
	}
	return protowire.ConsumeTag(b)
}

// consumeBytes is protowire.ConsumeBytes with a one-byte length read
// inline.
func consumeBytes(b []byte) ([]byte, int) {
	if len(b) > 0 && b[0] < 0x80 {
		m := int(b[0])
		if m+1 > len(b) {
			return nil, -1
		}
		return b[1 : 1+m], 1 + m
	}
	return protowire.ConsumeBytes(b)
}

// field returns the bytes of the first length-delimited field num of a
// message.
func field(b []byte, num protowire.Number) ([]byte, bool) {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, false
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			return v, l >= 0
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return nil, false
		}
		b = b[l:]
	}
	return nil, false
}
