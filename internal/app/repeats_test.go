package app

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// TestE2ERepeatsReachNobodyTwice: a client sends one room message and one
// 1:1 message three times each with the same client_msg_id, then both
// are republished, as `laneim replay --republish` would, to
// messages.routed and to the comet's delivery topic. Every connection of
// the room's members and of both users gets each message exactly once;
// the retries are answered with the first SendResult and not routed
// again, so the comet drops only the republished copies.
func TestE2ERepeatsReachNobodyTwice(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice, bob, carol := c.login("alice"), c.login("bob"), c.login("carol")
	bobPhone := c.login("bob") // bob's second device, in no room
	for _, conn := range []*client.Conn{alice, bob, carol} {
		c.join(conn, "lobby")
	}
	room, dm := topics.RoomConversation("lobby"), topics.DirectConversation("alice", "bob")
	sends := []*clientpb.Send{
		{ClientMsgId: "room-1", To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("to the room"), ContentType: "text/plain"},
		{ClientMsgId: "dm-1", To: &clientpb.Send_User{User: "bob"}, Body: []byte("to bob"), ContentType: "text/plain"},
	}
	for _, s := range sends {
		var first *clientpb.SendResult
		for i := range 3 {
			res, err := alice.Send(ctx, s)
			if err != nil {
				t.Fatalf("send %s, attempt %d: %v", s.GetClientMsgId(), i+1, err)
			}
			if first == nil {
				first = res
			} else if !proto.Equal(res, first) {
				t.Fatalf("send %s, attempt %d answered %v, want the first answer %v", s.GetClientMsgId(), i+1, res, first)
			}
		}
	}
	// What each connection got, by conversation and seq.
	got := map[*client.Conn]map[string]map[uint64][]*clientpb.Message{}
	for _, conn := range []*client.Conn{alice, bob, carol, bobPhone} {
		got[conn] = map[string]map[uint64][]*clientpb.Message{}
	}
	readUntil(t, carol, map[string]uint64{room: 1}, got[carol])
	readUntil(t, bobPhone, map[string]uint64{dm: 1}, got[bobPhone])
	roomMsg, dmMsg := got[carol][room][1][0], got[bobPhone][dm][1][0]

	// The replay: each message once more through fan-out, and once more
	// straight to the comet.
	pub, err := wiring.NewPublisher(c.settings.Infra().Kafka)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	republish := func(topic string, msg *message.Message, err error) {
		t.Helper()
		if err == nil {
			err = pub.Publish(topic, msg)
		}
		if err != nil {
			t.Fatalf("republish to %s: %v", topic, err)
		}
	}
	batch := func(m *clientpb.Message) *clientpb.ServerFrame {
		return &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{m}}}}
	}
	msg, err := topics.Routed.Encode(&topicpb.Routed{Message: roomMsg, Room: "lobby", Comets: []string{"c1"}})
	republish(topics.Routed.Name, msg, err)
	msg, err = topics.Routed.Encode(&topicpb.Routed{Message: dmMsg, Users: []string{"alice", "bob"}, Comets: []string{"c1"}})
	republish(topics.Routed.Name, msg, err)
	msg, err = topics.Deliveries.Encode(&topicpb.Delivery{Room: "lobby", Frame: batch(roomMsg)})
	republish(topics.Delivery("c1"), msg, err)
	msg, err = topics.Deliveries.Encode(&topicpb.Delivery{Users: []string{"alice", "bob"}, Frame: batch(dmMsg)})
	republish(topics.Delivery("c1"), msg, err)

	// Then one more message in each conversation: it comes after the
	// republished ones, on the same partitions.
	if _, err := alice.SendRoom(ctx, "lobby", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendUser(ctx, "bob", []byte("after")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		conn *client.Conn
		want map[string]uint64 // conversation -> last seq
	}{
		{"alice", alice, map[string]uint64{room: 2, dm: 2}},
		{"bob", bob, map[string]uint64{room: 2, dm: 2}},
		{"carol", carol, map[string]uint64{room: 2}},
		{"bob's phone", bobPhone, map[string]uint64{dm: 2}},
	} {
		got := got[tt.conn]
		readUntil(t, tt.conn, tt.want, got)
		for conv, last := range tt.want {
			for seq := uint64(1); seq <= last; seq++ {
				if n := len(got[conv][seq]); n != 1 {
					t.Errorf("%s got %s#%d %d times, want once", tt.name, conv, seq, n)
				}
			}
		}
		for conv := range got {
			if _, ok := tt.want[conv]; !ok {
				t.Errorf("%s got messages of %s", tt.name, conv)
			}
		}
	}
	// Dropped at the comet: the two republished room copies (once for the
	// room), the two 1:1 copies for each of alice's and bob's three
	// connections. The retried sends were not routed again.
	if n := c.comet.Stats().RepeatsDropped; n != 2+2*3 {
		t.Errorf("comet dropped %d repeats, want %d", n, 2+2*3)
	}
}

// readUntil reads conn's messages into got until it holds, in each
// conversation of last, its last seq.
func readUntil(t *testing.T, conn *client.Conn, last map[string]uint64, got map[string]map[uint64][]*clientpb.Message) {
	t.Helper()
	done := func() bool {
		for conv, seq := range last {
			if len(got[conv][seq]) == 0 {
				return false
			}
		}
		return true
	}
	timeout := time.After(30 * time.Second)
	for !done() {
		select {
		case f, ok := <-conn.Frames():
			if !ok {
				t.Fatalf("connection closed: %v", conn.Err())
			}
			for _, m := range f.GetMessages().GetMessages() {
				if got[m.GetConversation()] == nil {
					got[m.GetConversation()] = map[uint64][]*clientpb.Message{}
				}
				got[m.GetConversation()][m.GetSeq()] = append(got[m.GetConversation()][m.GetSeq()], m)
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %v", last)
		}
	}
}
