package topics_test

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

func TestAppendBatchMergesSubmissions(t *testing.T) {
	sub := func(i int) *topicpb.Submitted {
		return &topicpb.Submitted{Sender: fmt.Sprint("u", i), ClientMsgId: fmt.Sprint("m", i), To: &topicpb.Submitted_Room{Room: "r"}, Body: []byte{byte(i)}}
	}
	tests := []struct {
		name string
		// batches are the payloads merged, each a submission with the
		// given number of more of its own (a producer's batch).
		batches []int
	}{
		{"one", []int{0}},
		{"three plain", []int{0, 0, 0}},
		{"nested", []int{2, 0, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []*topicpb.Submitted
			var payload []byte
			n := 0
			for i, more := range tt.batches {
				s := sub(n)
				want = append(want, sub(n))
				n++
				for range more {
					s.More = append(s.More, sub(n))
					want = append(want, sub(n))
					n++
				}
				b, err := proto.Marshal(s)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					payload = b
				} else {
					payload = topics.AppendBatch(payload, topics.Submitted.BatchField, b)
				}
			}
			var merged topicpb.Submitted
			if err := proto.Unmarshal(payload, &merged); err != nil {
				t.Fatal(err)
			}
			got := topics.SplitSubmitted(&merged)
			if len(got) != len(want) {
				t.Fatalf("split into %d, want %d", len(got), len(want))
			}
			for i := range want {
				if !proto.Equal(got[i], want[i]) {
					t.Errorf("submission %d = %v, want %v", i, got[i], want[i])
				}
			}
		})
	}
}

func TestJoinAndSplitRouted(t *testing.T) {
	var rs []*topicpb.Routed
	for seq := uint64(1); seq <= 3; seq++ {
		rs = append(rs, &topicpb.Routed{
			Message:         &clientpb.Message{Conversation: "room:r", Seq: seq},
			Comets:          []string{"c1", "c2"},
			Room:            "r",
			SubmittedUnixMs: int64(seq),
		})
	}
	joined := topics.JoinRouted(rs)
	b, err := proto.Marshal(joined)
	if err != nil {
		t.Fatal(err)
	}
	var one topicpb.Routed
	if err := proto.Unmarshal(b, &one); err != nil {
		t.Fatal(err)
	}
	for _, m := range one.GetMore() {
		if len(m.GetComets()) != 0 || m.GetRoom() != "" {
			t.Errorf("joined message %d repeats the targets", m.GetMessage().GetSeq())
		}
	}
	got := topics.SplitRouted(&one)
	if len(got) != 3 {
		t.Fatalf("split into %d, want 3", len(got))
	}
	for i, r := range got {
		seq := uint64(i + 1)
		if r.GetMessage().GetSeq() != seq || r.GetSubmittedUnixMs() != int64(seq) || r.GetRoom() != "r" || len(r.GetComets()) != 2 || len(r.GetMore()) != 0 {
			t.Errorf("message %d = %v", i, r)
		}
	}
	if topics.JoinRouted(nil) != nil {
		t.Error("JoinRouted(nil) is not nil")
	}
}

func TestSplit(t *testing.T) {
	ev := func(user string, more ...*topicpb.SessionEvent) *topicpb.SessionEvent {
		return &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, User: user, More: more}
	}
	tests := []struct {
		name string
		in   *topicpb.SessionEvent
		want []string
	}{
		{"alone", ev("a"), []string{"a"}},
		{"flat", ev("a", ev("b"), ev("c")), []string{"a", "b", "c"}},
		{"nested", ev("a", ev("b", ev("c")), ev("d")), []string{"a", "b", "c", "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Round-trip through AppendBatch, as a consumer merges.
			b, err := proto.Marshal(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			v := new(topicpb.SessionEvent)
			if err := proto.Unmarshal(b, v); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range topics.Split(topics.SessionEvents, v) {
				if len(e.GetMore()) != 0 {
					t.Errorf("%s kept %d more", e.GetUser(), len(e.GetMore()))
				}
				got = append(got, e.GetUser())
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("split %v, want %v", got, tt.want)
			}
		})
	}
	// A topic without a BatchField: a batch of one, left as it is.
	h := &topicpb.HistoryRequest{User: "a"}
	if got := topics.Split(topics.HistoryRequests, h); len(got) != 1 || got[0] != h {
		t.Errorf("split of a topic without batches: %v", got)
	}
}
