package routing_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/routing"
)

// TestBatch: a merged batch of submissions is routed as if each came
// alone, in order: plain messages of one conversation share one Routed
// payload, an edit goes on its own after the message it edits (sent in
// the same batch), a repeat within the batch is answered with its first
// one's seq and not routed twice, a refused one is answered and skipped,
// and every submission gets exactly one answer, in the order sent.
func TestBatch(t *testing.T) {
	t.Parallel()
	h, rec := newHandler(t, routing.Config{}, newWorld(t))
	lobby := &topicpb.Submitted_Room{Room: "lobby"}
	sub := func(req uint64, sender, id string) *topicpb.Submitted {
		return &topicpb.Submitted{Origin: origin, RequestId: req, Sender: sender, ClientMsgId: id, To: lobby, Body: []byte(id)}
	}
	edit := sub(5, "alice", "e1")
	edit.Edits = "m1"
	refused := sub(4, "carol", "c1") // not a member of lobby
	batch := sub(1, "alice", "m1")
	batch.More = []*topicpb.Submitted{sub(2, "bob", "m1"), sub(3, "alice", "m1"), refused, edit, sub(6, "bob", "m2")}
	if err := handle(t, h, batch); err != nil {
		t.Fatal(err)
	}

	var routed [][]uint64 // the seqs of each Routed payload
	var edits uint64
	answers := map[uint64]string{} // request → "seq N" or the error code
	var order []uint64             // the requests, in the order answered
	out, _ := withoutNotices(rec.Take())
	for _, p := range out {
		switch p.Topic {
		case topics.Routed.Name:
			r, err := topics.Routed.Decode(p.Msg)
			if err != nil {
				t.Fatal(err)
			}
			var seqs []uint64
			for _, m := range topics.SplitRouted(r) {
				if m.GetRoom() != "lobby" || !slices.Equal(m.GetComets(), []string{"c1"}) {
					t.Errorf("routed #%d to room %q comets %v, want lobby on c1", m.GetMessage().GetSeq(), m.GetRoom(), m.GetComets())
				}
				seqs = append(seqs, m.GetMessage().GetSeq())
				if m.GetMessage().GetEdits() != 0 {
					edits = m.GetMessage().GetEdits()
				}
			}
			routed = append(routed, seqs)
		case topics.Delivery(origin.Comet):
			d, err := topics.Deliveries.Decode(p.Msg)
			if err != nil {
				t.Fatal(err)
			}
			f := d.GetFrame()
			if _, dup := answers[f.GetRequestId()]; dup {
				t.Errorf("request %d answered twice", f.GetRequestId())
			}
			order = append(order, f.GetRequestId())
			if e := f.GetError(); e != nil {
				answers[f.GetRequestId()] = e.GetCode().String()
			} else {
				answers[f.GetRequestId()] = fmt.Sprint("seq ", f.GetSendResult().GetSeq())
			}
		default:
			t.Errorf("published to %s", p.Topic)
		}
	}
	if want := [][]uint64{{1, 2}, {3}, {4}}; fmt.Sprint(routed) != fmt.Sprint(want) {
		t.Errorf("routed payloads with seqs %v, want %v", routed, want)
	}
	if edits != 1 {
		t.Errorf("the edit names seq %d, want 1", edits)
	}
	want := map[uint64]string{1: "seq 1", 2: "seq 2", 3: "seq 1", 4: clientpb.Error_NOT_MEMBER.String(), 5: "seq 3", 6: "seq 4"}
	if fmt.Sprint(answers) != fmt.Sprint(want) {
		t.Errorf("answers %v, want %v", answers, want)
	}
	if !slices.IsSorted(order) {
		t.Errorf("requests answered in the order %v, not in the order sent", order)
	}

	// The whole batch again, as after a crash before the ack: every
	// message is answered as a repeat and nothing is routed.
	again := sub(1, "alice", "m1")
	again.More = []*topicpb.Submitted{sub(2, "bob", "m1"), sub(6, "bob", "m2")}
	if err := handle(t, h, again); err != nil {
		t.Fatal(err)
	}
	out, _ = withoutNotices(rec.Take())
	if len(out) != 3 {
		t.Fatalf("the repeated batch published %d messages, want its 3 answers", len(out))
	}
	for _, p := range out {
		if p.Topic != topics.Delivery(origin.Comet) {
			t.Errorf("the repeated batch published to %s", p.Topic)
		}
	}
}

// slowMentions is a store whose mention and read-position writes take a
// while and say when they are done.
type slowMentions struct {
	*directory.Store
	done atomic.Int32
}

func (s *slowMentions) AddMentions(ctx context.Context, conv string, seq uint64, users []string, keep time.Duration) error {
	time.Sleep(50 * time.Millisecond)
	defer s.done.Add(1)
	return s.Store.AddMentions(ctx, conv, seq, users, keep)
}

func (s *slowMentions) RaiseRead(ctx context.Context, user, conv string, seq uint64) (uint64, bool, error) {
	time.Sleep(50 * time.Millisecond)
	defer s.done.Add(1)
	return s.Store.RaiseRead(ctx, user, conv, seq)
}

// watchAnswers is a publisher that notes how many of the store's writes
// were done when the first answer to origin went out.
type watchAnswers struct {
	testinfra.Recorder
	store *slowMentions
	seen  atomic.Int32
}

func (w *watchAnswers) Publish(topic string, msgs ...*message.Message) error {
	if topic == topics.Delivery(origin.Comet) {
		w.seen.CompareAndSwap(0, w.store.done.Load()+1)
	}
	return w.Recorder.Publish(topic, msgs...)
}

// TestAnswerAfterWrites: the SendResult goes only once the message's
// mentions and its sender's read position are written, so that what a
// client reads after its answer (a login's unread counts) includes them.
func TestAnswerAfterWrites(t *testing.T) {
	t.Parallel()
	store := &slowMentions{Store: newWorld(t)}
	pub := &watchAnswers{store: store}
	h := testinfra.Must(routing.New(routing.Config{}, store, pub, slog.New(slog.DiscardHandler)))(t)
	sub := &topicpb.Submitted{Origin: origin, RequestId: 1, Sender: "alice", ClientMsgId: "m", To: &topicpb.Submitted_Room{Room: "lobby"}, Mentions: []string{"bob"}}
	if err := handle(t, h, sub); err != nil {
		t.Fatal(err)
	}
	if got := pub.seen.Load() - 1; got != 2 {
		t.Fatalf("the answer went with %d of the 2 writes (mention, read position) done", got)
	}
}

// BenchmarkRoute routes api pushes into one room, in batches of 1 (one
// message per partition hand-off, as before batches) to 64 (a merged
// backlog), against a real redis-server; ns/op is per message.
func BenchmarkRoute(b *testing.B) {
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprint("batch=", n), func(b *testing.B) {
			h, rec := newHandler(b, routing.Config{}, newWorld(b))
			ctx := context.Background()
			i := 0
			sub := func() *topicpb.Submitted {
				i++
				return &topicpb.Submitted{Sender: "bench", Trusted: true, ClientMsgId: fmt.Sprint("m", i), To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("hello")}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += n {
				batch := sub()
				for range min(n, b.N-done) - 1 {
					batch.More = append(batch.More, sub())
				}
				if err := h.Handle(ctx, batch, nil); err != nil {
					b.Fatal(err)
				}
				rec.Take()
			}
		})
	}
}

// TestBatchInSeqOrder: a repeat of a message whose routing never
// completed keeps its seq, and the batch's Routed payload still lists
// its messages in seq order.
func TestBatchInSeqOrder(t *testing.T) {
	t.Parallel()
	store := newWorld(t)
	h, rec := newHandler(t, routing.Config{}, store)
	// Assigned, then a crash before it was routed.
	old, err := store.Assign(context.Background(), "room:lobby", "alice", "old", func() string { return "id-old" })
	if err != nil {
		t.Fatal(err)
	}
	lobby := &topicpb.Submitted_Room{Room: "lobby"}
	batch := &topicpb.Submitted{Origin: origin, RequestId: 1, Sender: "bob", ClientMsgId: "new", To: lobby}
	batch.More = []*topicpb.Submitted{{Origin: origin, RequestId: 2, Sender: "alice", ClientMsgId: "old", To: lobby}}
	if err := handle(t, h, batch); err != nil {
		t.Fatal(err)
	}
	out, _ := withoutNotices(rec.Take())
	r, err := topics.Routed.Decode(out[0].Msg)
	if err != nil || out[0].Topic != topics.Routed.Name {
		t.Fatalf("first published %s, %v; want the routed batch", out[0].Topic, err)
	}
	var seqs []uint64
	for _, m := range topics.SplitRouted(r) {
		seqs = append(seqs, m.GetMessage().GetSeq())
	}
	if want := []uint64{old.Seq, old.Seq + 1}; !slices.Equal(seqs, want) {
		t.Errorf("routed seqs %v, want %v", seqs, want)
	}
}
