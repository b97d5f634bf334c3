package fanout_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/workers/fanout"
)

func routed(t testing.TB, comets ...string) *message.Message {
	t.Helper()
	msg, err := topics.Routed.Encode(&topicpb.Routed{
		Message: &clientpb.Message{Id: "m1", Conversation: "room:lobby", Seq: 9, Sender: "alice", Body: []byte("hi")},
		Room:    "lobby",
		Comets:  comets,
	})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestOneDeliveryPerComet(t *testing.T) {
	rec := &testinfra.Recorder{}
	if err := fanout.New(rec).Handle(routed(t, "c1", "c2", "c3")); err != nil {
		t.Fatal(err)
	}
	out := rec.Take()
	if len(out) != 3 {
		t.Fatalf("published %d deliveries, want 3", len(out))
	}
	seen := map[string]bool{}
	for _, p := range out {
		seen[p.Topic] = true
		if !bytes.Equal(p.Msg.Payload, out[0].Msg.Payload) {
			t.Error("deliveries differ between comets")
		}
		d, err := topics.Deliveries.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		msgs := d.GetFrame().GetMessages().GetMessages()
		if d.GetRoom() != "lobby" || len(msgs) != 1 || msgs[0].GetSeq() != 9 {
			t.Fatalf("delivery %v", d)
		}
	}
	for _, c := range []string{"c1", "c2", "c3"} {
		if !seen[topics.Delivery(c)] {
			t.Errorf("nothing for %s", c)
		}
	}
}

func TestNoCometsNoDeliveries(t *testing.T) {
	rec := &testinfra.Recorder{}
	if err := fanout.New(rec).Handle(routed(t)); err != nil {
		t.Fatal(err)
	}
	if out := rec.Take(); len(out) != 0 {
		t.Fatalf("published %v", out)
	}
}

func TestPublishFailureIsRetried(t *testing.T) {
	rec := &testinfra.Recorder{Err: errors.New("broker down")}
	err := fanout.New(rec).Handle(routed(t, "c1"))
	if err == nil || wiring.IsPermanent(err) {
		t.Fatalf("err = %v, want transient", err)
	}
	if err := fanout.New(rec).Handle(message.NewMessage("x", []byte{0xff})); !wiring.IsPermanent(err) {
		t.Fatalf("undecodable: err = %v, want permanent", err)
	}
}

func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("%dComets", n), func(b *testing.B) {
			comets := make([]string, n)
			for i := range comets {
				comets[i] = fmt.Sprint("c", i)
			}
			rec := &testinfra.Recorder{}
			h := fanout.New(rec)
			msg := routed(b, comets...)
			b.ReportAllocs()
			for b.Loop() {
				if err := h.Handle(msg); err != nil {
					b.Fatal(err)
				}
				rec.Take()
			}
		})
	}
}
