package routing_test

import (
	"log/slog"
	"testing"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/workers/routing"
)

// TestOverKafka runs the routing handler in a real router on the Kafka
// protocol: an accepted message comes out on messages.routed and its
// SendResult on the sender's comet topic, after the refusal of the
// message submitted before it.
func TestOverKafka(t *testing.T) {
	t.Parallel()
	k := testinfra.KafkaPipeline(t, topics.Delivery(origin.Comet))
	h := testinfra.Must(routing.New(routing.Config{}, newWorld(t), k.Pub, slog.New(slog.DiscardHandler)))(t)
	k.Run(h.Pipeline())

	// Same conversation, so same partition: handled in this order.
	for i, sender := range []string{"carol", "bob"} {
		sub := &topicpb.Submitted{Origin: origin, RequestId: uint64(i + 1), Sender: sender, ClientMsgId: "m", To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("hi")}
		out, err := topics.Submitted.Encode(sub)
		if err != nil {
			t.Fatal(err)
		}
		k.Publish(topics.Submitted.Name, out)
	}

	routed, err := topics.Routed.Decode(k.Next(topics.Routed.Name))
	if err != nil {
		t.Fatal(err)
	}
	if m := routed.GetMessage(); m.GetSender() != "bob" || m.GetConversation() != "room:lobby" || m.GetSeq() != 1 || routed.GetRoom() != "lobby" {
		t.Fatalf("routed %v, want bob's lobby message with seq 1", routed)
	}
	refusal, err := topics.Deliveries.Decode(k.Next(topics.Delivery(origin.Comet)))
	if err != nil {
		t.Fatal(err)
	}
	if refusal.GetFrame().GetRequestId() != 1 || refusal.GetFrame().GetError().GetCode() != clientpb.Error_NOT_MEMBER {
		t.Fatalf("first answer %v, want NOT_MEMBER to request 1", refusal)
	}
	result, err := topics.Deliveries.Decode(k.Next(topics.Delivery(origin.Comet)))
	if err != nil {
		t.Fatal(err)
	}
	if res := result.GetFrame().GetSendResult(); result.GetFrame().GetRequestId() != 2 || res.GetSeq() != 1 || res.GetMessageId() != routed.GetMessage().GetId() {
		t.Fatalf("second answer %v, want the SendResult of %s", result, routed.GetMessage().GetId())
	}
}
