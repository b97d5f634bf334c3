package bench

import (
	"encoding/binary"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
)

func TestScanBatch(t *testing.T) {
	body := func(sent int64) []byte {
		b := binary.BigEndian.AppendUint64(nil, uint64(sent))
		return append(b, "hello"...)
	}
	batch := &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{
		{Id: "a", Conversation: "room:r", Seq: 7, Sender: "s", Body: body(100), ContentType: "x", ServerTimeUnixMs: 5, ClientMsgId: "c"},
		{Conversation: "room:other", Seq: 1, Body: body(1)},
		{Conversation: "room:r", Seq: 8, Body: []byte("short")},
		{Conversation: "room:r", Seq: 9, Body: body(300)},
	}}}}
	// A compact batch: the conversation in shared, once; a message that
	// has its own keeps it.
	compact := &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
		Messages: []*clientpb.Message{
			{Id: "a", Seq: 7, Body: body(100)},
			{Conversation: "room:other", Seq: 1, Body: body(1)},
			{Seq: 9, Body: body(300)},
		},
		Shared: &clientpb.Message{Conversation: "room:r", Sender: "s"},
	}}}
	sharedElsewhere := &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
		Messages: []*clientpb.Message{{Seq: 4, Body: body(40)}},
		Shared:   &clientpb.Message{Conversation: "room:other"},
	}}}
	pong := &clientpb.ServerFrame{RequestId: 3, Body: &clientpb.ServerFrame_Pong{Pong: &clientpb.Pong{ClientTimeUnixMs: 1}}}
	tests := []struct {
		name  string
		frame []byte
		want  []int64 // seq, sent pairs
		ok    bool
	}{
		{"batch", marshal(t, batch), []int64{7, 100, 9, 300}, true},
		{"compact batch", marshal(t, compact), []int64{7, 100, 9, 300}, true},
		{"compact batch of another conversation", marshal(t, sharedElsewhere), nil, true},
		{"not a batch", marshal(t, pong), nil, false},
		{"garbage", []byte{0xff, 0xff, 0xff}, nil, false},
		{"empty", nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int64
			n, ok := scanBatch(tt.frame, "room:r", func(seq uint64, sent int64) { got = append(got, int64(seq), sent) })
			if ok != tt.ok || n != len(tt.want)/2 || len(got) != len(tt.want) {
				t.Fatalf("scanBatch = %d, %v, %v; want %d, %v, %v", n, ok, got, len(tt.want)/2, tt.ok, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

// TestScanSync: a page answering a Sync is scanned like a batch, and
// gives its largest seq (of any message) and its has_more; the member
// counts its messages once and hands catchUp a page standing for it.
func TestScanSync(t *testing.T) {
	body := func(sent int64) []byte {
		b := binary.BigEndian.AppendUint64(nil, uint64(sent))
		return append(b, "hello"...)
	}
	page := func(req uint64, more bool, msgs ...*clientpb.Message) []byte {
		return marshal(t, &clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_SyncResult{SyncResult: &clientpb.SyncResult{
			Conversation: "room:r", Messages: msgs, HasMore: more}}})
	}
	full := page(4, true,
		&clientpb.Message{Id: "a", Conversation: "room:r", Seq: 7, Sender: "s", Body: body(100), ContentType: "x", ServerTimeUnixMs: 5},
		&clientpb.Message{Conversation: "room:r", Seq: 9, Body: []byte("short")},
		&clientpb.Message{Conversation: "room:r", Seq: 8, Body: body(300)},
	)
	for _, tt := range []struct {
		name  string
		frame []byte
		want  []int64 // seq, sent pairs
		last  uint64
		more  bool
		ok    bool
	}{
		{"page", full, []int64{7, 100, 8, 300}, 9, true, true},
		{"last page", page(5, false, &clientpb.Message{Conversation: "room:r", Seq: 10, Body: body(1)}), []int64{10, 1}, 10, false, true},
		{"empty page", page(6, false), nil, 0, false, true},
		{"a batch", marshal(t, &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{}}}), nil, 0, false, false},
		{"garbage", []byte{0x92, 0x01, 0xff}, nil, 0, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []int64
			n, last, more, ok := scanSync(tt.frame, "room:r", func(seq uint64, sent int64) { got = append(got, int64(seq), sent) })
			if ok != tt.ok || n != len(tt.want)/2 || !slices.Equal(got, tt.want) || last != tt.last || more != tt.more {
				t.Fatalf("scanSync = %d, %d, %v, %v, %v; want %d, %d, %v, %v, %v", n, last, more, ok, got, len(tt.want)/2, tt.last, tt.more, tt.ok, tt.want)
			}
		})
	}

	m := &member{conversation: "room:r", lat: &latencies{}}
	m.lat.cur.Store(new(histogram))
	for range 2 { // the same page twice: counted once
		f, ok := m.peek(full)
		if res := f.GetSyncResult(); !ok || f.GetRequestId() != 4 || !res.GetHasMore() || len(res.GetMessages()) != 1 || res.GetMessages()[0].GetSeq() != 9 {
			t.Fatalf("peek = %v, %v; want request 4's page standing at seq 9, with more", f, ok)
		}
	}
	if m.delivered.Load() != 2 || m.synced.Load() != 2 {
		t.Fatalf("delivered %d, synced %d; want 2 and 2", m.delivered.Load(), m.synced.Load())
	}
}

func marshal(t *testing.T, f *clientpb.ServerFrame) []byte {
	t.Helper()
	b, err := proto.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BenchmarkScanBatch scans a frame like those of `laneim bench
// --members 10000 --rate 100`: 39 messages of the api's pushes.
func BenchmarkScanBatch(b *testing.B) {
	var msgs []*clientpb.Message
	for i := range 39 {
		body := binary.BigEndian.AppendUint64(nil, uint64(1_700_000_000_000_000_000+i))
		msgs = append(msgs, &clientpb.Message{
			Id: "019abf3c-7d2e-7c4a-9b1e-5f0a3c2d1e4f", Conversation: "room:bench-449214", Seq: uint64(1000 + i),
			Sender: "bench", Body: append(body, make([]byte, 24)...), ContentType: "application/x-laneim-bench",
			ServerTimeUnixMs: 1_700_000_000_000, ClientMsgId: "3f2b9c1e-8a7d-4e6f-b5c4-2d1e0f9a8b7c",
		})
	}
	frame, err := proto.Marshal(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: msgs}}})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	var sum uint64
	for b.Loop() {
		n, ok := scanBatch(frame, "room:bench-449214", func(seq uint64, sent int64) { sum += seq })
		if !ok || n != len(msgs) {
			b.Fatalf("scanned %d, %v", n, ok)
		}
	}
	_ = sum
}
