package fanout_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/fanout"
)

func encode(t testing.TB, r *topicpb.Routed) *message.Message {
	t.Helper()
	msg, err := topics.Routed.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func routed(t testing.TB, comets ...string) *message.Message {
	t.Helper()
	return encode(t, &topicpb.Routed{
		Message: &clientpb.Message{Id: "m1", Conversation: "room:lobby", Seq: 9, Sender: "alice", Body: []byte("hi")},
		Room:    "lobby",
		Comets:  comets,
	})
}

// TestOneDeliveryPerComet checks each kind of target: every comet gets
// exactly one delivery, the same bytes, with the Routed's target copied
// and the message as a one-message batch.
func TestOneDeliveryPerComet(t *testing.T) {
	m := &clientpb.Message{Id: "m1", Conversation: "dm:alice:bob", Seq: 9, Sender: "alice", Body: []byte("hi")}
	tests := []struct {
		name   string
		routed *topicpb.Routed
	}{
		{"room", &topicpb.Routed{Message: m, Room: "lobby", Comets: []string{"c1", "c2", "c3"}}},
		{"users", &topicpb.Routed{Message: m, Users: []string{"alice", "bob"}, Comets: []string{"c1", "c2"}}},
		{"broadcast", &topicpb.Routed{Message: m, Broadcast: true, Comets: []string{"c1", "c2", "c3", "c4"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &testinfra.Recorder{}
			if err := newFanout(t, rec).Pipeline().Handle(encode(t, tt.routed)); err != nil {
				t.Fatal(err)
			}
			out := rec.Take()
			if len(out) != len(tt.routed.Comets) {
				t.Fatalf("published %d deliveries, want %d", len(out), len(tt.routed.Comets))
			}
			perTopic := map[string]int{}
			msgs := map[*message.Message]bool{}
			for _, p := range out {
				perTopic[p.Topic]++
				msgs[p.Msg] = true
				if !bytes.Equal(p.Msg.Payload, out[0].Msg.Payload) {
					t.Error("deliveries differ between comets")
				}
				if key, ok := p.Msg.Metadata[topics.KeyMetadata]; !ok || key != "" {
					t.Errorf("key metadata %q, %v; want the delivery topic's empty key", key, ok)
				}
				d, err := topics.Deliveries.Decode(p.Msg)
				if err != nil {
					t.Fatal(err)
				}
				want := &topicpb.Delivery{
					Room: tt.routed.Room, Users: tt.routed.Users, Broadcast: tt.routed.Broadcast,
					Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{m}}}},
				}
				if !proto.Equal(d, want) {
					t.Fatalf("delivery %v, want %v", d, want)
				}
			}
			if len(msgs) != len(out) {
				t.Errorf("%d watermill messages for %d publishes: one was shared", len(msgs), len(out))
			}
			for _, c := range tt.routed.Comets {
				if n := perTopic[topics.Delivery(c)]; n != 1 {
					t.Errorf("%d deliveries for %s, want 1", n, c)
				}
			}
		})
	}
}

func TestNoCometsNoDeliveries(t *testing.T) {
	rec := &testinfra.Recorder{}
	if err := newFanout(t, rec).Pipeline().Handle(routed(t)); err != nil {
		t.Fatal(err)
	}
	if out := rec.Take(); len(out) != 0 {
		t.Fatalf("published %v", out)
	}
}

func TestPublishFailureIsRetried(t *testing.T) {
	rec := &testinfra.Recorder{Err: errors.New("broker down")}
	err := newFanout(t, rec).Pipeline().Handle(routed(t, "c1"))
	if err == nil || pipeline.IsPermanent(err) || !errors.Is(err, rec.Err) {
		t.Fatalf("err = %v, want transient broker down", err)
	}
}

func TestUndecodableIsPermanent(t *testing.T) {
	if err := newFanout(t, &testinfra.Recorder{}).Pipeline().Handle(message.NewMessage("x", []byte{0xff})); !pipeline.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent", err)
	}
}

// failing publishes through a Recorder but fails for the topics in fail
// while they are there.
type failing struct {
	testinfra.Recorder
	mu   sync.Mutex
	fail map[string]bool
}

func (f *failing) Publish(topic string, msgs ...*message.Message) error {
	f.mu.Lock()
	bad := f.fail[topic]
	f.mu.Unlock()
	if bad {
		return fmt.Errorf("no leader for %s", topic)
	}
	return f.Recorder.Publish(topic, msgs...)
}

func (f *failing) heal(topic string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.fail, topic)
}

// TestRetryReachesOnlyFailedComets: a retry of a partly failed message
// publishes only to the comets that did not get it, so none gets it twice.
func TestRetryReachesOnlyFailedComets(t *testing.T) {
	pub := &failing{fail: map[string]bool{topics.Delivery("c2"): true, topics.Delivery("c4"): true}}
	h := newFanout(t, pub)
	msg := routed(t, "c1", "c2", "c3", "c4")

	err := h.Pipeline().Handle(msg)
	if err == nil || pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "c2") || !strings.Contains(err.Error(), "c4") {
		t.Fatalf("err = %v, want a transient error naming c2 and c4", err)
	}
	count := func(want map[string]int) {
		t.Helper()
		got := map[string]int{}
		for _, p := range pub.Take() {
			got[p.Topic]++
		}
		for c, n := range want {
			if got[topics.Delivery(c)] != n {
				t.Errorf("%s got %d deliveries, want %d (all: %v)", c, got[topics.Delivery(c)], n, got)
			}
		}
	}
	count(map[string]int{"c1": 1, "c2": 0, "c3": 1, "c4": 0})

	pub.heal(topics.Delivery("c2"))
	if err := h.Pipeline().Handle(msg); err == nil || strings.Contains(err.Error(), "c2") {
		t.Fatalf("second attempt: err = %v, want c4 alone failing", err)
	}
	count(map[string]int{"c1": 0, "c2": 1, "c3": 0, "c4": 0})

	pub.heal(topics.Delivery("c4"))
	if err := h.Pipeline().Handle(msg); err != nil {
		t.Fatalf("third attempt: %v", err)
	}
	count(map[string]int{"c1": 0, "c2": 0, "c3": 0, "c4": 1})
}

func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("%dComets", n), func(b *testing.B) {
			comets := make([]string, n)
			for i := range comets {
				comets[i] = fmt.Sprint("c", i)
			}
			rec := &testinfra.Recorder{}
			h := newFanout(b, rec)
			msg := routed(b, comets...)
			b.ReportAllocs()
			for b.Loop() {
				if err := h.Pipeline().Handle(msg); err != nil {
					b.Fatal(err)
				}
				rec.Take()
			}
		})
	}
}

func newFanout(t testing.TB, pub message.Publisher) *fanout.Handler {
	return testinfra.Must(fanout.New(pub, nil))(t)
}

// TestBatchIsOneDeliveryPerComet: a Routed payload carrying several
// messages (topics.JoinRouted) reaches each comet as one delivery whose
// batch holds them all, in seq order.
func TestBatchIsOneDeliveryPerComet(t *testing.T) {
	var rs []*topicpb.Routed
	for seq := uint64(1); seq <= 3; seq++ {
		rs = append(rs, &topicpb.Routed{Message: &clientpb.Message{Conversation: "room:lobby", Seq: seq}, Room: "lobby", Comets: []string{"c1", "c2"}})
	}
	rec := &testinfra.Recorder{}
	if err := newFanout(t, rec).Pipeline().Handle(encode(t, topics.JoinRouted(rs))); err != nil {
		t.Fatal(err)
	}
	got := deliveredSeqs(t, rec)
	want := map[string]string{topics.Delivery("c1"): "lobby [1 2 3]", topics.Delivery("c2"): "lobby [1 2 3]"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("deliveries %v, want one per comet: %v", got, want)
	}
}

// deliveredSeqs decodes the deliveries rec took: per delivery topic, its
// room and the seqs of its messages, in order.
func deliveredSeqs(t *testing.T, rec *testinfra.Recorder) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, p := range rec.Take() {
		d, err := topics.Deliveries.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for _, m := range d.GetFrame().GetMessages().GetMessages() {
			seqs = append(seqs, m.GetSeq())
		}
		if _, dup := got[p.Topic]; dup {
			t.Errorf("two deliveries to %s", p.Topic)
		}
		got[p.Topic] = fmt.Sprint(d.GetRoom(), " ", seqs)
	}
	return got
}

// TestMergedBatchFollowsEachMessagesComets: batches merged by the
// consumer keep their own targets; each comet gets the messages that
// target it, in order.
func TestMergedBatchFollowsEachMessagesComets(t *testing.T) {
	m := func(seq uint64) *clientpb.Message { return &clientpb.Message{Conversation: "room:lobby", Seq: seq} }
	first, err := proto.Marshal(topics.JoinRouted([]*topicpb.Routed{
		{Message: m(1), Room: "lobby", Comets: []string{"c1"}}, {Message: m(2)},
	}))
	if err != nil {
		t.Fatal(err)
	}
	second, err := proto.Marshal(&topicpb.Routed{Message: m(3), Room: "lobby", Comets: []string{"c2", "c1"}})
	if err != nil {
		t.Fatal(err)
	}
	msg := message.NewMessage("merged", topics.AppendBatch(first, topics.Routed.BatchField, second))
	rec := &testinfra.Recorder{}
	if err := newFanout(t, rec).Pipeline().Handle(msg); err != nil {
		t.Fatal(err)
	}
	got := deliveredSeqs(t, rec)
	want := map[string]string{topics.Delivery("c1"): "lobby [1 2 3]", topics.Delivery("c2"): "lobby [3]"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("deliveries %v, want %v", got, want)
	}
}
