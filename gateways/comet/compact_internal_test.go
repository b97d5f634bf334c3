package comet

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
)

// TestCompactFrame: a compact frame carries once the fields all its
// messages share, and expands to the frame it stands for.
func TestCompactFrame(t *testing.T) {
	msg := func(conv, sender, ct string, seq uint64) *clientpb.Message {
		return &clientpb.Message{Id: "id", Conversation: conv, Seq: seq, Sender: sender, Body: []byte("hi"), ContentType: ct, ServerTimeUnixMs: 1, Mentions: []string{"m"}}
	}
	batch := func(req uint64, msgs ...*clientpb.Message) *clientpb.ServerFrame {
		return &clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: msgs}}}
	}
	tests := []struct {
		name  string
		frame *clientpb.ServerFrame
		want  *clientpb.Message // shared; nil: the frame is written as it is
	}{
		{"all shared", batch(0, msg("room:a", "u", "text/plain", 1), msg("room:a", "u", "text/plain", 2)),
			&clientpb.Message{Conversation: "room:a", Sender: "u", ContentType: "text/plain"}},
		{"one message", batch(0, msg("room:a", "u", "", 1)), &clientpb.Message{Conversation: "room:a", Sender: "u"}},
		{"senders differ", batch(0, msg("room:a", "u", "t", 1), msg("room:a", "v", "t", 2)),
			&clientpb.Message{Conversation: "room:a", ContentType: "t"}},
		{"one content type empty", batch(0, msg("room:a", "u", "t", 1), msg("room:a", "u", "", 2)),
			&clientpb.Message{Conversation: "room:a", Sender: "u"}},
		{"a request id stays", batch(9, msg("room:a", "u", "t", 1)), &clientpb.Message{Conversation: "room:a", Sender: "u", ContentType: "t"}},
		{"nothing shared", batch(0, msg("room:a", "u", "", 1), msg("room:b", "v", "", 2)), nil},
		{"no messages", batch(0), nil},
		{"not a batch", &clientpb.ServerFrame{RequestId: 3, Body: &clientpb.ServerFrame_Pong{Pong: &clientpb.Pong{ServerTimeUnixMs: 5}}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			full := newFrame(tt.frame).bytes(encProto)
			compact := newFrame(tt.frame).bytes(encCompact)
			if tt.want == nil {
				if !bytes.Equal(compact, full) {
					t.Fatalf("compact encoding differs from the protobuf one with nothing shared")
				}
				return
			}
			// One message pays two bytes for shared, so that a room's
			// frames keep merging (appendMerged); more save.
			if n := len(tt.frame.GetMessages().GetMessages()); n > 1 && len(compact) >= len(full) {
				t.Fatalf("compact frame of %d bytes, the whole one %d", len(compact), len(full))
			}
			var got clientpb.ServerFrame
			if err := proto.Unmarshal(compact, &got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got.GetMessages().GetShared(), tt.want) {
				t.Fatalf("shared %v, want %v", got.GetMessages().GetShared(), tt.want)
			}
			for _, m := range got.GetMessages().GetMessages() {
				if tt.want.Conversation != "" && m.Conversation != "" || tt.want.Sender != "" && m.Sender != "" {
					t.Fatalf("message %v still carries a shared field", m)
				}
			}
			got.GetMessages().Expand()
			if !proto.Equal(&got, tt.frame) {
				t.Fatalf("expanded to %v, want %v", &got, tt.frame)
			}
			// JSON: the same compact frame, but for one message, which
			// is written whole (JSON frames never merge).
			if len(tt.frame.GetMessages().GetMessages()) < 2 {
				if !bytes.Equal(newFrame(tt.frame).bytes(encCompactJSON), newFrame(tt.frame).bytes(encJSON)) {
					t.Fatalf("compact JSON of one message differs from the whole one")
				}
				return
			}
			var js clientpb.ServerFrame
			if err := protojson.Unmarshal(newFrame(tt.frame).bytes(encCompactJSON), &js); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(js.GetMessages().GetShared(), tt.want) {
				t.Fatalf("JSON shared %v, want %v", js.GetMessages().GetShared(), tt.want)
			}
			js.GetMessages().Expand()
			if !proto.Equal(&js, tt.frame) {
				t.Fatalf("JSON expanded to %v, want %v", &js, tt.frame)
			}
		})
	}
}

// TestCompactBatchRefusesWhatIsNotABatch: bytes that are not a batch of
// messages are written as they are.
func TestCompactBatchRefusesWhatIsNotABatch(t *testing.T) {
	for _, b := range [][]byte{{0x0a}, {0x0a, 0x05, 0x12}, {0x12, 0x00}, {0xff}} {
		if got, ok := compactBatch(b); ok || !bytes.Equal(got, b) {
			t.Fatalf("compactBatch(% x) = % x, %v", b, got, ok)
		}
	}
}

// FuzzCompactFrame: whatever ServerFrame the comet writes, its compact
// encoding decodes and expands to the same frame, and is never larger
// than the protobuf one by more than shared's two bytes of framing.
func FuzzCompactFrame(f *testing.F) {
	seed := func(fr *clientpb.ServerFrame) {
		b, err := proto.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	m := func(conv, sender, ct string, seq uint64) *clientpb.Message {
		return &clientpb.Message{Id: "i", Conversation: conv, Seq: seq, Sender: sender, ContentType: ct, Body: []byte{1}, ClientMsgId: "c"}
	}
	seed(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{m("room:a", "u", "t", 1), m("room:a", "u", "t", 2)}}}})
	seed(&clientpb.ServerFrame{RequestId: 4, Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{m("room:a", "u", "", 1), m("room:a", "v", "t", 2)}}}})
	seed(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{m("dm:a:b", "a", "t", 1)}}}})
	seed(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Pong{Pong: &clientpb.Pong{ServerTimeUnixMs: 1}}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var want clientpb.ServerFrame
		if proto.Unmarshal(data, &want) != nil {
			return
		}
		b := newFrame(&want)
		full, compact := b.bytes(encProto), b.bytes(encCompact)
		if len(compact) > len(full)+2+2 { // shared's tag and length, and the batch's longer length
			t.Fatalf("compact frame of %d bytes, the whole one %d", len(compact), len(full))
		}
		var got clientpb.ServerFrame
		if err := proto.Unmarshal(compact, &got); err != nil {
			t.Fatalf("compact frame does not decode: %v", err)
		}
		got.GetMessages().Expand()
		want.GetMessages().Expand() // should data carry shared already
		if !proto.Equal(&got, &want) {
			t.Fatalf("expanded to %v, want %v", &got, &want)
		}
	})
}

// BenchmarkCompactFrame: the comet's cost of encoding a room frame, once
// per frame for all its members of one encoding; a compact encoding
// includes the protobuf one it is made from (the bench's room, 16 and 82
// messages a frame: 100 and 500 msg/s at 10,000 members).
func BenchmarkCompactFrame(b *testing.B) {
	for _, n := range []int{16, 82} {
		msgs := make([]*clientpb.Message, n)
		for i := range msgs {
			msgs[i] = &clientpb.Message{
				Id: "019abf3c-7d2e-7c4a-9b1e-5f0a3c2d1e4f", Conversation: "room:bench-449214", Seq: uint64(1000 + i),
				Sender: "bench", Body: []byte("\x17\x9a\x5c\x2e\x00\x00\x00\x00hello"), ContentType: "application/x-laneim-bench",
				ServerTimeUnixMs: 1_700_000_000_000, ClientMsgId: "3f2b9c1e-8a7d-4e6f-b5c4-2d1e0f9a8b7c",
			}
		}
		msg := &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: msgs}}}
		for _, e := range []struct {
			name string
			enc  encoding
		}{{"proto", encProto}, {"compact", encCompact}, {"json", encJSON}, {"compactJSON", encCompactJSON}} {
			b.Run(fmt.Sprintf("%d/%s", n, e.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					newFrame(msg).bytes(e.enc)
				}
			})
		}
	}
}
