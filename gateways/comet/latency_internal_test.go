package comet

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

// histogramOf returns h's count and sum.
func histogramOf(t *testing.T, h prometheus.Histogram) (uint64, float64) {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// TestLatencyHistograms: a live message's age is observed once when its
// Delivery arrives (an answer's messages are not live), and a room
// frame's write to a member is observed as a lag behind its flush.
func TestLatencyHistograms(t *testing.T) {
	s, client := loopback(t)
	member := claimedConn(t, s)
	c := member.comet
	c.mu.Lock()
	c.conns[member.id] = member
	c.mu.Unlock()
	r := newRoom(c, "a")
	t.Cleanup(r.stop)
	r.join(member)
	c.mu.Lock()
	c.rooms["a"] = r
	c.mu.Unlock()

	conv := topics.RoomConversation("a")
	sent := time.Now().Add(-250 * time.Millisecond).UnixMilli()
	live := &topicpb.Delivery{Room: "a", Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
		Messages: []*clientpb.Message{{Id: "1", Conversation: conv, Seq: 1, Body: []byte("b"), ServerTimeUnixMs: sent}},
	}}}}
	answer := &topicpb.Delivery{Conns: []string{member.id}, Frame: &clientpb.ServerFrame{RequestId: 7, Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
		Messages: []*clientpb.Message{{Id: "0", Conversation: conv, Seq: 1, Body: []byte("old"), ServerTimeUnixMs: sent - 3_600_000}},
	}}}}
	c.Deliver(live)
	n, sum := histogramOf(t, c.lat.age)
	if n != 1 {
		t.Fatalf("%d ages observed, want 1", n)
	}
	if sum < 0.25 || sum > 10 {
		t.Fatalf("age %.3fs, want about 0.25s", sum)
	}

	// The live message was flushed at once (the room was quiet) and is
	// written to the member by the ready list.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := histogramOf(t, c.lat.writeLag); n >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no write lag observed 10s after the room's flush")
		}
		time.Sleep(10 * time.Millisecond)
	}
	n, sum = histogramOf(t, c.lat.writeLag)
	if n != 1 || sum < 0 || sum > 10 {
		t.Fatalf("%d write lags observed, %.3fs in all; want 1 of less than 10s", n, sum)
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the member's socket got nothing: %v", err)
	}

	c.Deliver(answer)
	if n, _ := histogramOf(t, c.lat.age); n != 1 {
		t.Fatalf("%d ages observed after an answer, want still 1 (an answer's messages are not live)", n)
	}
}
