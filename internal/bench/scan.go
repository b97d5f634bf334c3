package bench

import (
	"encoding/binary"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the client protocol (proto/client.proto) that the
// bench's receive path reads without decoding whole frames.
const (
	serverFrameMessages = 12 // ServerFrame.messages (MessageBatch)
	batchMessages       = 1  // MessageBatch.messages (repeated Message)
	batchShared         = 2  // MessageBatch.shared (Message), in compact batches
	messageConversation = 2  // Message.conversation
	messageSeq          = 3  // Message.seq
	messageBody         = 5  // Message.body
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
	n := 0
	for len(batch) > 0 {
		num, typ, l := consumeTag(batch)
		if l < 0 {
			return n, false
		}
		batch = batch[l:]
		if num != batchMessages || typ != protowire.BytesType {
			l = protowire.ConsumeFieldValue(num, typ, batch)
			if l < 0 {
				return n, false
			}
			batch = batch[l:]
			continue
		}
		msg, l := consumeBytes(batch)
		if l < 0 {
			return n, false
		}
		batch = batch[l:]
		var (
			conv  = sharedConv
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
				return n, false
			}
			msg = msg[l:]
			switch typ {
			case protowire.BytesType:
				v, l := consumeBytes(msg)
				if l < 0 {
					return n, false
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
					return n, false
				}
				if num == messageSeq {
					seq, found = v, found+1
				}
				msg = msg[l:]
			default:
				l := protowire.ConsumeFieldValue(num, typ, msg)
				if l < 0 {
					return n, false
				}
				msg = msg[l:]
			}
		}
		if string(conv) != conversation || len(body) < 8 { // compared without a copy
			continue
		}
		fn(seq, int64(binary.BigEndian.Uint64(body)))
		n++
	}
	return n, true
}

// consumeVarint is protowire.ConsumeVarint with a one-byte value read
// inline.
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
