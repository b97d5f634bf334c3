package wiring_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// TestBatchingSubscriberMerges: messages queued behind an unacked one are
// handed on merged, in order, never across a change of key and never
// with a payload that does not decode, which goes alone; a nacked merged
// message comes back whole; an acked one commits every offset it
// carries.
func TestBatchingSubscriberMerges(t *testing.T) {
	t.Parallel()
	k := testinfra.KafkaPipeline(t)
	kcfg := k.Kafka
	sub := func(room, id string) *message.Message {
		m, err := topics.Submitted.Encode(&topicpb.Submitted{Sender: "u", ClientMsgId: id, To: &topicpb.Submitted_Room{Room: room}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	poison := message.NewMessage("poison", []byte{0xff, 0xff})
	poison.Metadata.Set(topics.KeyMetadata, "room:a")
	// b is a room whose messages share room a's partition: the order
	// below is the partition's.
	b := sameRoomPartition(t, "a")
	k.Publish(topics.Submitted.Name, sub("a", "1"), sub("a", "2"), sub("a", "3"), sub(b, "x"), sub("a", "4"), poison, sub("a", "5"))

	const group = "test.batching"
	subscriber, err := wiring.NewBatchingSubscriber(kcfg, group, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in, err := subscriber.Subscribe(ctx, topics.Submitted.Name)
	if err != nil {
		t.Fatal(err)
	}
	next := func() *message.Message {
		t.Helper()
		select {
		case m := <-in:
			return m
		case <-ctx.Done():
			t.Fatal("no message in time")
			return nil
		}
	}
	ids := func(m *message.Message) []string {
		t.Helper()
		if m.UUID == "poison" {
			return []string{"poison"}
		}
		s, err := topics.Submitted.Decode(m)
		if err != nil {
			t.Fatalf("message %s does not decode: %v", m.UUID, err)
		}
		var out []string
		for _, s := range topics.SplitSubmitted(s) {
			out = append(out, s.GetClientMsgId())
		}
		return out
	}

	var groups [][]string
	var a []string // room a's ids, in the order handed on
	nacked := false
	for len(a) < 6 || !slices.Contains(slices.Concat(groups...), "x") {
		m := next()
		got := ids(m)
		if len(groups) == 0 {
			// Hold the first so that the rest queue up behind it.
			time.Sleep(300 * time.Millisecond)
		}
		if len(got) > 1 && !nacked {
			nacked = true
			m.Nack()
			again := next()
			if g := ids(again); !slices.Equal(g, got) {
				t.Fatalf("nacked %v, handed again %v", got, g)
			}
			m = again
		}
		m.Ack()
		groups = append(groups, got)
		if got[0] != "x" {
			a = append(a, got...)
		}
		if len(groups) > 20 {
			t.Fatalf("too many messages: %v", groups)
		}
	}
	if want := []string{"1", "2", "3", "4", "poison", "5"}; !slices.Equal(a, want) {
		t.Errorf("room a handed on as %v, want %v in order", groups, want)
	}
	for _, g := range groups {
		if len(g) > 1 && (slices.Contains(g, "poison") || slices.Contains(g, "x")) {
			t.Errorf("group %v merges a poison message or another key", g)
		}
	}
	if !nacked {
		t.Errorf("nothing was merged: %v", groups)
	}
	if all := slices.Concat(groups...); !slices.Equal(all, []string{"1", "2", "3", "x", "4", "poison", "5"}) {
		t.Errorf("handed on %v, not in the partition's order", groups)
	}

	// Everything was acked: a new subscriber of the group starts after it.
	cancel()
	if err := subscriber.Close(); err != nil {
		t.Fatal(err)
	}
	k.Publish(topics.Submitted.Name, sub("a", "after"))
	again, err := wiring.NewBatchingSubscriber(kcfg, group, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.Close() })
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if in, err = again.Subscribe(ctx, topics.Submitted.Name); err != nil {
		t.Fatal(err)
	}
	if got := ids(next()); !slices.Equal(got, []string{"after"}) {
		t.Errorf("after the acks, the group resumed with %v, want [after]", got)
	}
}

// sameRoomPartition returns a room other than room whose conversation's
// messages go to the same partition of topics.Submitted.
func sameRoomPartition(t *testing.T, room string) string {
	t.Helper()
	p := sarama.NewHashPartitioner(topics.Submitted.Name)
	part := func(r string) int32 {
		n, err := p.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(topics.RoomConversation(r))}, topics.Submitted.Partitions)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	want := part(room)
	for i := range 1000 {
		if r := fmt.Sprint("r", i); part(r) == want {
			return r
		}
	}
	t.Fatal("no room shares the partition")
	return ""
}

// TestBatchingSubscriberMergesAcrossKeys: on a topic that batches across
// keys (session.events), a run of one partition merges whatever its
// keys, in the partition's order, and a poison message still goes alone.
func TestBatchingSubscriberMergesAcrossKeys(t *testing.T) {
	t.Parallel()
	k := testinfra.KafkaPipeline(t)
	kcfg := k.Kafka
	users := sameUserPartition(t, 4)
	var msgs []*message.Message
	for i, u := range users {
		m, err := topics.SessionEvents.Encode(&topicpb.SessionEvent{Kind: topicpb.SessionEvent_CLOSED, User: u})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
		if i == 2 {
			poison := message.NewMessage("poison", []byte{0xff, 0xff})
			poison.Metadata.Set(topics.KeyMetadata, "user/"+u)
			msgs = append(msgs, poison)
		}
	}
	k.Publish(topics.SessionEvents.Name, msgs...)

	ctx, in := subscribe(t, kcfg, "test.across", topics.SessionEvents.Name)
	var groups [][]string
	for n := 0; n < len(users)+1; {
		var m *message.Message
		select {
		case m = <-in:
		case <-ctx.Done():
			t.Fatalf("no message in time; so far %v", groups)
		}
		var got []string
		if m.UUID == "poison" {
			got = []string{"poison"}
		} else {
			ev, err := topics.SessionEvents.Decode(m)
			if err != nil {
				t.Fatalf("message %s does not decode: %v", m.UUID, err)
			}
			for _, e := range topics.Split(topics.SessionEvents, ev) {
				got = append(got, e.GetUser())
			}
			if n := wiring.Merged(m); n != len(got) {
				t.Errorf("a message carrying %d payloads says it carries %d (metadata %q)", len(got), n, m.Metadata.Get(wiring.MergedMetadata))
			}
		}
		m.Ack()
		groups = append(groups, got)
		n += len(got)
	}
	want := []string{users[0], users[1], users[2], "poison", users[3]}
	if all := slices.Concat(groups...); !slices.Equal(all, want) {
		t.Errorf("handed on %v, want %v in order", groups, want)
	}
	merged := false
	for _, g := range groups {
		if len(g) > 1 && slices.Contains(g, "poison") {
			t.Errorf("group %v merges a poison message", g)
		}
		merged = merged || len(g) > 1
	}
	if !merged {
		t.Errorf("nothing merged across keys: %v", groups)
	}
}

// subscribe returns a context that ends 30 s later (or with the test)
// and the messages of topic for a new BatchingSubscriber in group.
func subscribe(t *testing.T, kcfg wiring.KafkaConfig, group, topic string) (context.Context, <-chan *message.Message) {
	t.Helper()
	subscriber, err := wiring.NewBatchingSubscriber(kcfg, group, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { subscriber.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	in, err := subscriber.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, in
}

// sameUserPartition returns n users whose session events go to one
// partition of topics.SessionEvents.
func sameUserPartition(t *testing.T, n int) []string {
	t.Helper()
	return usersBy(t, n, func(first, p int32) bool { return p == first })
}

// usersOnPartitions returns n users whose session events go to n
// different partitions of topics.SessionEvents.
func usersOnPartitions(t *testing.T, n int) []string {
	t.Helper()
	taken := map[int32]bool{}
	return usersBy(t, n, func(_, p int32) bool {
		ok := !taken[p]
		taken[p] = true
		return ok
	})
}

// usersBy returns n users u0, u1... that take: their session events'
// partition p, with first the first user's, is one take accepts.
func usersBy(t *testing.T, n int, take func(first, p int32) bool) []string {
	t.Helper()
	part := sarama.NewHashPartitioner(topics.SessionEvents.Name)
	var out []string
	var first int32
	for i := 0; i < 10000 && len(out) < n; i++ {
		u := fmt.Sprint("u", i)
		p, err := part.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder("user/" + u)}, topics.SessionEvents.Partitions)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = p
		}
		if take(first, p) {
			out = append(out, u)
		}
	}
	if len(out) < n {
		t.Fatalf("only %d users of the %d wanted", len(out), n)
	}
	return out
}

// TestBatchingSubscriberMergesAcrossPartitions: on a topic that batches
// across keys, runs that several partitions have ready are handed on as
// one message, and each user's events still arrive once each, in order;
// a poison message on a partition of its own still goes alone.
func TestBatchingSubscriberMergesAcrossPartitions(t *testing.T) {
	t.Parallel()
	k := testinfra.KafkaPipeline(t)
	users := usersOnPartitions(t, 13)
	poisoned := users[12]
	users = users[:12]
	event := func(u, conn string) *message.Message {
		m, err := topics.SessionEvents.Encode(&topicpb.SessionEvent{Kind: topicpb.SessionEvent_CLOSED, User: u, Session: &topicpb.Session{Comet: "c", Conn: conn}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ctx, in := subscribe(t, k.Kafka, "test.partitions", topics.SessionEvents.Name)
	var msgs []*message.Message
	for _, conn := range []string{"1", "2"} {
		for _, u := range users {
			msgs = append(msgs, event(u, conn))
		}
		if conn == "1" {
			poison := message.NewMessage("poison", []byte{0xff, 0xff})
			poison.Metadata.Set(topics.KeyMetadata, "user/"+poisoned)
			msgs = append(msgs, poison)
		}
	}
	k.Publish(topics.SessionEvents.Name, msgs...)

	seen := map[string][]string{} // user: conns in the order handed on
	spans := 0                    // messages carrying more than one user
	poisons := 0
	for n := 0; n < len(msgs); {
		var m *message.Message
		select {
		case m = <-in:
		case <-ctx.Done():
			t.Fatalf("no message in time; so far %v", seen)
		}
		ev, err := topics.SessionEvents.Decode(m)
		if err != nil {
			if m.UUID != "poison" || wiring.Merged(m) != 1 || !bytes.Equal(m.Payload, []byte{0xff, 0xff}) {
				t.Errorf("message %s does not decode and carries %d payloads: the poison message was merged", m.UUID, wiring.Merged(m))
			}
			poisons++
			n += wiring.Merged(m)
			m.Ack()
			continue
		}
		carried := map[string]bool{}
		for _, e := range topics.Split(topics.SessionEvents, ev) {
			seen[e.GetUser()] = append(seen[e.GetUser()], e.GetSession().GetConn())
			carried[e.GetUser()] = true
			n++
		}
		if len(carried) > 1 {
			spans++
		}
		// Held a while, so that the other partitions' runs queue up.
		time.Sleep(100 * time.Millisecond)
		m.Ack()
	}
	for _, u := range users {
		if got := seen[u]; !slices.Equal(got, []string{"1", "2"}) {
			t.Errorf("user %s's events handed on as %v, want [1 2]", u, got)
		}
	}
	if spans == 0 {
		t.Errorf("no message carried the events of several partitions: %v", seen)
	}
	if poisons != 1 {
		t.Errorf("the poison message was handed on %d times, want once alone", poisons)
	}
}

// TestBatchingSubscriberHandsOverMergedPartitions: two subscribers of one
// group share a topic that batches across keys, the second joining while
// the first merges its partitions' runs. Every event is handed on, and
// each user's events are first handed on in the order published, across
// the rebalance.
func TestBatchingSubscriberHandsOverMergedPartitions(t *testing.T) {
	t.Parallel()
	k := testinfra.KafkaPipeline(t)
	users := usersOnPartitions(t, 16)
	const rounds = 100 // of one event per user, 20 ms apart
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var mu sync.Mutex
	seen := map[string][]string{} // user: conns in the order handed on, repeats included
	distinct := map[string]bool{}
	handled := map[string]int{} // by subscriber
	var wg sync.WaitGroup
	consume := func(name string) {
		s, err := wiring.NewBatchingSubscriber(k.Kafka, "test.handover", slog.New(slog.DiscardHandler), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		in, err := s.Subscribe(ctx, topics.SessionEvents.Name)
		if err != nil {
			t.Fatal(err)
		}
		// Each message is handled in a goroutine of its own, as
		// Watermill's router does, taking its time: two messages out at
		// once that carried one partition's events would mix their order.
		wg.Go(func() {
			for m := range in {
				wg.Go(func() {
					time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
					ev, err := topics.SessionEvents.Decode(m)
					if err != nil {
						t.Errorf("%s: %v", name, err)
						m.Ack()
						return
					}
					mu.Lock()
					for _, e := range topics.Split(topics.SessionEvents, ev) {
						u, c := e.GetUser(), e.GetSession().GetConn()
						seen[u] = append(seen[u], c)
						distinct[u+"/"+c] = true
						handled[name]++
					}
					mu.Unlock()
					m.Ack()
				})
			}
		})
	}
	consume("first")
	for c := range rounds {
		if c == 5 {
			consume("second")
		}
		var msgs []*message.Message
		for _, u := range users {
			m, err := topics.SessionEvents.Encode(&topicpb.SessionEvent{Kind: topicpb.SessionEvent_CLOSED, User: u, Session: &topicpb.Session{Comet: "c", Conn: fmt.Sprint(c)}})
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, m)
		}
		k.Publish(topics.SessionEvents.Name, msgs...)
		time.Sleep(20 * time.Millisecond)
	}
	for {
		mu.Lock()
		n := len(distinct)
		mu.Unlock()
		if n == len(users)*rounds {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d events handed on in time", n, len(users)*rounds)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if handled["first"] == 0 || handled["second"] == 0 {
		t.Errorf("handled by subscriber %v: no handover happened", handled)
	}
	var want []string
	for c := range rounds {
		want = append(want, fmt.Sprint(c))
	}
	for _, u := range users {
		var first []string // the order in which each conn was first handed on
		for _, c := range seen[u] {
			if !slices.Contains(first, c) {
				first = append(first, c)
			}
		}
		if !slices.Equal(first, want) {
			t.Errorf("user %s's events first handed on as %v, want %v", u, first, want)
		}
	}
	t.Logf("handled by subscriber %v", handled)
}

// TestBatchingSubscriberClosesWhileHandingOn: a subscription on a topic
// that batches across keys ends, by its context or by Close, while its
// mergers are handing messages on that nobody reads: its channel closes
// only after they stopped (under -race, a merger sending on the channel
// as it closed was reported, and could panic).
func TestBatchingSubscriberClosesWhileHandingOn(t *testing.T) {
	t.Parallel()
	k := testinfra.KafkaPipeline(t)
	var msgs []*message.Message
	for _, u := range usersOnPartitions(t, 8) {
		m, err := topics.SessionEvents.Encode(&topicpb.SessionEvent{Kind: topicpb.SessionEvent_CLOSED, User: u, Session: &topicpb.Session{Comet: "c", Conn: "1"}})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	k.Publish(topics.SessionEvents.Name, msgs...)
	for i, byClose := range []bool{false, true, false, true} {
		subscriber, err := wiring.NewBatchingSubscriber(k.Kafka, fmt.Sprint("test.close-", i), slog.New(slog.DiscardHandler), nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		in, err := subscriber.Subscribe(ctx, topics.SessionEvents.Name)
		if err != nil {
			t.Fatal(err)
		}
		select { // one message handed on; the mergers are blocked on the next
		case m := <-in:
			m.Ack()
		case <-ctx.Done():
			t.Fatal("nothing handed on")
		}
		time.Sleep(50 * time.Millisecond)
		if byClose {
			subscriber.Close()
		} else {
			cancel()
		}
		for range in { // drains what was handed on, then ends
		}
		subscriber.Close()
		cancel()
	}
}
