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
	messageConversation = 2  // Message.conversation
	messageSeq          = 3  // Message.seq
	messageBody         = 5  // Message.body
)

// scanBatch reads a protobuf ServerFrame and, if it is a MessageBatch,
// calls fn with the seq and the send time (the body's first 8 bytes, Unix
// nanoseconds, big-endian) of each message of conversation, and reports
// how many it found and true. A frame that is not a batch, or does not
// parse, reports false.
func scanBatch(frame []byte, conversation string, fn func(seq uint64, sentUnixNano int64)) (int, bool) {
	batch, ok := field(frame, serverFrameMessages)
	if !ok {
		return 0, false
	}
	n := 0
	for len(batch) > 0 {
		num, typ, l := protowire.ConsumeTag(batch)
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
		msg, l := protowire.ConsumeBytes(batch)
		if l < 0 {
			return n, false
		}
		batch = batch[l:]
		var (
			conv []byte
			seq  uint64
			body []byte
		)
		for len(msg) > 0 {
			num, typ, l := protowire.ConsumeTag(msg)
			if l < 0 {
				return n, false
			}
			msg = msg[l:]
			switch {
			case num == messageConversation && typ == protowire.BytesType:
				v, l := protowire.ConsumeBytes(msg)
				if l < 0 {
					return n, false
				}
				conv, msg = v, msg[l:]
			case num == messageSeq && typ == protowire.VarintType:
				v, l := protowire.ConsumeVarint(msg)
				if l < 0 {
					return n, false
				}
				seq, msg = v, msg[l:]
			case num == messageBody && typ == protowire.BytesType:
				v, l := protowire.ConsumeBytes(msg)
				if l < 0 {
					return n, false
				}
				body, msg = v, msg[l:]
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
