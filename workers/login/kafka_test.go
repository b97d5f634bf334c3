package login_test

import (
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/workers/login"
)

// TestOverKafka runs the login handler in a real router on the Kafka
// protocol: an accepted login comes out on session.events, a refused one
// on the comet's delivery topic, an undecodable one in dead letters.
func TestOverKafka(t *testing.T) {
	t.Parallel()
	k := testinfra.KafkaPipeline(t, topics.Delivery("c1"))
	h, err := login.New(fakeUsers{"alice": {ID: "alice"}}, k.Pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	k.Run(h.Pipeline())

	for i, user := range []string{"alice", "acme:alice"} {
		req := &topicpb.LoginRequest{Session: &topicpb.Session{Comet: "c1", Conn: "x." + string(rune('1'+i))}, RequestId: uint64(i + 1), User: user, TokenExpiresUnixMs: inAnHour(), Device: "web"}
		out, err := topics.LoginRequests.Encode(req)
		if err != nil {
			t.Fatal(err)
		}
		k.Publish(topics.LoginRequests.Name, out)
	}
	k.Publish(topics.LoginRequests.Name, message.NewMessage("poison-1", []byte{0xff, 0xff}))

	ev, err := topics.SessionEvents.Decode(k.Next(topics.SessionEvents.Name))
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetKind() != topicpb.SessionEvent_OPENED || ev.GetUser() != "alice" || ev.GetSession().GetConn() != "x.1" || ev.GetRequestId() != 1 {
		t.Fatalf("session event %v, want alice's x.1 opened", ev)
	}
	d, err := topics.Deliveries.Decode(k.Next(topics.Delivery("c1")))
	if err != nil {
		t.Fatal(err)
	}
	if d.GetFrame().GetError().GetCode() != clientpb.Error_BAD_TOKEN || d.GetFrame().GetRequestId() != 2 || len(d.GetConns()) != 1 || d.GetConns()[0] != "x.2" {
		t.Fatalf("delivery %v, want BAD_TOKEN to x.2", d)
	}
	dl := k.Next(topics.DeadLetters)
	if dl.UUID != "poison-1" || dl.Metadata.Get(middleware.PoisonedHandlerKey) != login.Name {
		t.Fatalf("dead letter %s from %q, want poison-1 from %s", dl.UUID, dl.Metadata.Get(middleware.PoisonedHandlerKey), login.Name)
	}
}
