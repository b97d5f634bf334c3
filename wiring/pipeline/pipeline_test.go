package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/pipeline"
)

func TestOn(t *testing.T) {
	var got *topicpb.Submitted
	h := pipeline.On("routing", topics.Submitted, func(_ context.Context, v *topicpb.Submitted, _ *message.Message) error {
		got = v
		return nil
	})
	if h.Name != "routing" || h.Topic != topics.Submitted.Name || pipeline.ConsumerGroup(h.Name) != "laneim.routing" {
		t.Fatalf("handler %q on %q", h.Name, h.Topic)
	}
	msg, err := topics.Submitted.Encode(&topicpb.Submitted{Sender: "alice", ClientMsgId: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Handle(msg); err != nil {
		t.Fatal(err)
	}
	if got.GetSender() != "alice" || got.GetClientMsgId() != "m1" {
		t.Fatalf("decoded %v", got)
	}
	got = nil
	if err := h.Handle(message.NewMessage("poison", []byte{0xff, 0xff})); !pipeline.IsPermanent(err) {
		t.Fatalf("undecodable payload: %v, want a permanent error", err)
	}
	if got != nil {
		t.Fatal("the function saw an undecodable payload")
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", pipeline.Permanent(nil), false},
		{"plain", base, false},
		{"marked", pipeline.Permanent(base), true},
		{"marked then wrapped", fmt.Errorf("ctx: %w", pipeline.Permanent(base)), true},
	}
	for _, tt := range tests {
		if got := pipeline.IsPermanent(tt.err); got != tt.want {
			t.Errorf("%s: IsPermanent = %v, want %v", tt.name, got, tt.want)
		}
	}
	if err := pipeline.Permanent(base); !errors.Is(err, base) || err.Error() != "boom" {
		t.Errorf("Permanent hides its cause: %v", err)
	}
}

func TestReply(t *testing.T) {
	rec := &testinfra.Recorder{}
	if err := pipeline.Reply(rec, &topicpb.Session{}, topics.ErrorFrame(1, clientpb.Error_INVALID, "x"), nil); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Take()); n != 0 {
		t.Fatalf("a session without a comet got %d messages", n)
	}
	s := &topicpb.Session{Comet: "c1", Conn: "k1"}
	if err := pipeline.ReplyError(rec, s, 7, clientpb.Error_NOT_MEMBER, "no"); err != nil {
		t.Fatal(err)
	}
	msgs := rec.Take()
	if len(msgs) != 1 || msgs[0].Topic != topics.Delivery("c1") {
		t.Fatalf("published %+v", msgs)
	}
	d, err := topics.Deliveries.Decode(msgs[0].Msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.GetConns()) != 1 || d.GetConns()[0] != "k1" || d.GetFrame().GetRequestId() != 7 || d.GetFrame().GetError().GetCode() != clientpb.Error_NOT_MEMBER {
		t.Fatalf("delivery %v", d)
	}
	rec.Err = errors.New("broker down")
	if err := pipeline.Reply(rec, s, topics.ErrorFrame(1, clientpb.Error_INVALID, "x"), nil); !errors.Is(err, rec.Err) {
		t.Fatalf("publish failure: %v", err)
	}
}

func TestExpired(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	ms := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	for _, tc := range []struct {
		name               string
		received, deadline int64
		want               bool
	}{
		{"no deadline", ms(-time.Hour), 0, false},
		{"past", ms(-6 * time.Second), ms(-time.Second), true},
		{"within the margin", ms(-4500 * time.Millisecond), ms(500 * time.Millisecond), true},
		{"at the margin", ms(-4 * time.Second), ms(pipeline.AnswerMargin), false},
		{"in time", ms(-time.Second), ms(4 * time.Second), false},
		{"no receipt time: the whole margin", 0, ms(900 * time.Millisecond), true},
		{"short timeout: a quarter of it", ms(-100 * time.Millisecond), ms(100 * time.Millisecond), false},
		{"short timeout, within its quarter", ms(-160 * time.Millisecond), ms(40 * time.Millisecond), true},
	} {
		if got := pipeline.Expired(tc.received, tc.deadline, now); got != tc.want {
			t.Errorf("%s: Expired = %v, want %v", tc.name, got, tc.want)
		}
	}
}
