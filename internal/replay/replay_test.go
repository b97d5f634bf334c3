package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/laneim/laneim/internal/replay"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

func lines(t *testing.T, b *bytes.Buffer) []replay.Record {
	t.Helper()
	var out []replay.Record
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var r replay.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

func TestReplayDecodesFiltersAndTakesDeadLettersBack(t *testing.T) {
	t.Parallel()
	kcfg := testinfra.Kafka(t)
	pub, err := wiring.NewPublisher(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	start := time.Now()
	for i, room := range []string{"lobby", "dev", "lobby"} {
		m, _ := topics.Submitted.Encode(&topicpb.Submitted{Sender: "alice", ClientMsgId: string(rune('a' + i)), To: &topicpb.Submitted_Room{Room: room}, Body: []byte("hi")})
		if err := pub.Publish(topics.Submitted.Name, m); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var out bytes.Buffer
	n, err := replay.Run(ctx, replay.Options{Brokers: kcfg.Brokers, Topic: topics.Submitted.Name, Partition: -1, Key: "room:lobby"}, &out)
	if err != nil || n != 2 {
		t.Fatalf("replay = %d, %v", n, err)
	}
	recs := lines(t, &out)
	for _, r := range recs {
		if r.Type != "laneim.topic.v1.Submitted" || !strings.Contains(string(r.Payload), `"room":"lobby"`) || r.Key != "room:lobby" {
			t.Fatalf("record %+v payload %s", r, r.Payload)
		}
	}
	// From a time after everything: nothing.
	out.Reset()
	if n, err := replay.Run(ctx, replay.Options{Brokers: kcfg.Brokers, Topic: topics.Submitted.Name, Partition: -1, From: time.Now().Add(time.Hour).Format(time.RFC3339)}, &out); err != nil || n != 0 {
		t.Fatalf("replay from the future = %d, %v", n, err)
	}
	if n, err := replay.Run(ctx, replay.Options{Brokers: kcfg.Brokers, Topic: topics.Submitted.Name, Partition: -1, From: start.Add(-time.Minute).Format(time.RFC3339), Limit: 1}, &out); err != nil || n != 1 {
		t.Fatalf("replay with limit = %d, %v", n, err)
	}

	// A dead letter as the router leaves it: the routed message that
	// failed, with why and where in its metadata.
	routed, _ := topics.Routed.Encode(&topicpb.Routed{Message: &clientpb.Message{Conversation: "room:lobby", Seq: 9}})
	dead := message.NewMessage(routed.UUID, routed.Payload)
	dead.Metadata = routed.Metadata
	dead.Metadata.Set(middleware.PoisonedTopicKey, topics.Routed.Name)
	dead.Metadata.Set(middleware.PoisonedHandlerKey, "fanout")
	dead.Metadata.Set(middleware.ReasonForPoisonedKey, "comet c9 unreachable")
	if err := pub.Publish(topics.DeadLetters, dead); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if n, err := replay.Run(ctx, replay.Options{Brokers: kcfg.Brokers, Topic: topics.DeadLetters, Partition: -1}, &out); err != nil || n != 1 {
		t.Fatalf("replay dead letters = %d, %v", n, err)
	}
	dl := lines(t, &out)[0]
	if dl.Type != "laneim.topic.v1.Routed" || dl.Metadata[middleware.ReasonForPoisonedKey] != "comet c9 unreachable" || !strings.Contains(string(dl.Payload), `"seq":"9"`) {
		t.Fatalf("dead letter %+v payload %s", dl, dl.Payload)
	}
	if n, err := replay.Run(ctx, replay.Options{Brokers: kcfg.Brokers, Topic: topics.DeadLetters, Partition: -1, Republish: replay.Original}, &out); err != nil || n != 1 {
		t.Fatalf("republish = %d, %v", n, err)
	}
	out.Reset()
	if n, err := replay.Run(ctx, replay.Options{Brokers: kcfg.Brokers, Topic: topics.Routed.Name, Partition: -1}, &out); err != nil || n != 1 {
		t.Fatalf("routed after republish = %d, %v", n, err)
	}
	back := lines(t, &out)[0]
	if back.Key != "room:lobby" || back.Metadata[middleware.PoisonedTopicKey] != "" || !strings.Contains(string(back.Payload), `"seq":"9"`) {
		t.Fatalf("republished %+v", back)
	}
}

// TestReplayBodiesAsTextAndUnknownTopics: --bodies text prints UTF-8 bodies
// (nested ones too) as strings and leaves other bytes in base64; a topic
// that does not exist is an error, not zero messages.
func TestReplayBodiesAsTextAndUnknownTopics(t *testing.T) {
	t.Parallel()
	kcfg := testinfra.Kafka(t)
	pub, err := wiring.NewPublisher(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, _ := topics.Submitted.Encode(&topicpb.Submitted{Sender: "alice", ClientMsgId: "c-1", To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("grep me")})
	routed, _ := topics.Routed.Encode(&topicpb.Routed{Message: &clientpb.Message{Conversation: "room:lobby", Seq: 1, Body: []byte("nested body")}})
	binary, _ := topics.Routed.Encode(&topicpb.Routed{Message: &clientpb.Message{Conversation: "room:lobby", Seq: 2, Body: []byte{0xff, 0xfe}}})
	if err := pub.Publish(topics.Submitted.Name, sub); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(topics.Routed.Name, routed, binary); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, c := range []struct {
		topic, bodies string
		want          []string
	}{
		{topics.Submitted.Name, replay.Text, []string{`"body":"grep me"`, `"clientMsgId":"c-1"`}},
		{topics.Submitted.Name, replay.Base64, []string{`"body":"Z3JlcCBtZQ=="`}},
		{topics.Routed.Name, replay.Text, []string{`"body":"nested body"`, `"body":"//4="`}},
	} {
		var out bytes.Buffer
		if _, err := replay.Run(ctx, replay.Options{Brokers: kcfg.Brokers, Topic: c.topic, Partition: -1, Bodies: c.bodies}, &out); err != nil {
			t.Fatalf("%s --bodies %s: %v", c.topic, c.bodies, err)
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s --bodies %s: no %s in\n%s", c.topic, c.bodies, w, out.String())
			}
		}
	}
	var out bytes.Buffer
	if _, err := replay.Run(ctx, replay.Options{Brokers: kcfg.Brokers, Topic: "no.such.topic", Partition: -1}, &out); err == nil || !strings.Contains(err.Error(), `no topic "no.such.topic"`) {
		t.Fatalf("unknown topic: %v", err)
	}
	if _, err := replay.Run(ctx, replay.Options{Brokers: kcfg.Brokers, Topic: topics.Routed.Name, Partition: -1, Bodies: "hex"}, &out); err == nil {
		t.Fatal("--bodies hex accepted")
	}
}

// TestRepublishChecksItsTarget: replay republishes neither to a topic
// that does not exist (the producer would create it) nor a payload to a
// laneIM topic of another payload type (newcomer check: a session event
// sent to messages.routed was dead-lettered there, and a typo made a
// topic).
func TestRepublishChecksItsTarget(t *testing.T) {
	t.Parallel()
	p := testinfra.KafkaPipeline(t)
	ev, _ := topics.SessionEvents.Encode(&topicpb.SessionEvent{Kind: topicpb.SessionEvent_HEARTBEAT, Session: &topicpb.Session{Comet: "c1"}})
	p.Publish(topics.SessionEvents.Name, ev)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct{ target, want string }{
		{"messages.routd", `no topic "messages.routd" to republish to`},
		{topics.Routed.Name, "takes laneim.topic.v1.Routed: not republished"},
	} {
		var out bytes.Buffer
		n, err := replay.Run(ctx, replay.Options{Brokers: p.Kafka.Brokers, Topic: topics.SessionEvents.Name, Partition: -1, Republish: c.target}, &out)
		if n != 0 || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("republish to %s = %d, %v; want an error saying %q", c.target, n, err, c.want)
		}
	}
	// The same payload type is republished.
	var out bytes.Buffer
	if n, err := replay.Run(ctx, replay.Options{Brokers: p.Kafka.Brokers, Topic: topics.SessionEvents.Name, Partition: -1, Republish: topics.SessionEvents.Name, Limit: 1}, &out); err != nil || n != 1 {
		t.Fatalf("republish to its own topic = %d, %v", n, err)
	}
}
