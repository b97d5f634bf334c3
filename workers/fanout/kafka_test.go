package fanout_test

import (
	"testing"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

// TestOverKafka runs the fan-out handler in a real router on the Kafka
// protocol: two routed messages of a room reach each target comet's topic
// once each, in order (in one delivery or two: the subscriber may merge
// them), and nothing reaches a comet that is not a target.
func TestOverKafka(t *testing.T) {
	t.Parallel()
	comets := []string{"c1", "c2", "c3"}
	k := testinfra.KafkaPipeline(t, topics.Delivery("c1"), topics.Delivery("c2"), topics.Delivery("c3"))
	k.Run(newFanout(t, k.Pub).Pipeline())

	for seq := uint64(1); seq <= 2; seq++ {
		m := &clientpb.Message{Id: "m", Conversation: "room:lobby", Seq: seq, Sender: "alice"}
		k.Publish(topics.Routed.Name, encode(t, &topicpb.Routed{Message: m, Room: "lobby", Comets: comets[:2]}))
	}
	next := func(comet string) *topicpb.Delivery {
		t.Helper()
		d, err := topics.Deliveries.Decode(k.Next(topics.Delivery(comet)))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, c := range comets[:2] {
		// One partition: a duplicate of seq 1 would come before seq 2.
		for seq := uint64(1); seq <= 2; {
			d := next(c)
			msgs := d.GetFrame().GetMessages().GetMessages()
			if d.GetRoom() != "lobby" || len(msgs) == 0 {
				t.Fatalf("%s: delivery %v, want lobby from seq %d", c, d, seq)
			}
			for _, m := range msgs {
				if m.GetSeq() != seq {
					t.Fatalf("%s: delivery %v, want lobby from seq %d", c, d, seq)
				}
				seq++
			}
		}
	}
	// c3 is a target of neither message: once both were delivered, its
	// topic gets a marker, which must be the first thing on it.
	marker, err := topics.Deliveries.Encode(&topicpb.Delivery{Room: "marker"})
	if err != nil {
		t.Fatal(err)
	}
	k.Publish(topics.Delivery("c3"), marker)
	if d := next("c3"); d.GetRoom() != "marker" {
		t.Fatalf("c3, not a target, got %v", d)
	}
}
