package comet

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/internal/wsframe"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
)

// roomFrame returns a room's frame of messages with the given seqs, each
// with a body of size bytes.
func roomFrame(room string, size int, seqs ...uint64) *frame {
	return roomFrameFrom(room, "u", size, seqs...)
}

// roomFrameFrom is roomFrame with messages of sender.
func roomFrameFrom(room, sender string, size int, seqs ...uint64) *frame {
	conv := topics.RoomConversation(room)
	var msgs []*clientpb.Message
	for _, s := range seqs {
		msgs = append(msgs, &clientpb.Message{Id: fmt.Sprint(conv, "/", s), Conversation: conv, Seq: s, Sender: sender, Body: bytes.Repeat([]byte("b"), size)})
	}
	f := newFrame(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: msgs}}})
	f.conv = conv
	return f
}

// replyFrame returns an answer to request req.
func replyFrame(req uint64) *frame {
	return newFrame(&clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_Pong{Pong: &clientpb.Pong{}}})
}

// readMessages splits b into whole WebSocket messages (unmasked, FIN) and
// returns their opcodes and payloads, and where in b each ends.
func readMessages(t *testing.T, b []byte) (ops []byte, payloads [][]byte, ends []int) {
	t.Helper()
	total := len(b)
	for len(b) > 0 {
		f, n, err := wsframe.Next(b, 1<<40)
		if err != nil || n == 0 || !f.Fin {
			t.Fatalf("not a whole unmasked message (%v): % x", err, b[:min(len(b), 16)])
		}
		ops, payloads = append(ops, f.Op), append(payloads, f.Payload)
		b = b[n:]
		ends = append(ends, total-len(b))
	}
	return ops, payloads, ends
}

// describe decodes one message per payload as a client would and
// describes it: "conv:seq,seq" for messages, "reply:id" for the others.
func describe(t *testing.T, ops []byte, payloads [][]byte) []string {
	t.Helper()
	var out []string
	for i, p := range payloads {
		var f clientpb.ServerFrame
		var err error
		if ops[i] == wsframe.Text {
			err = protojson.Unmarshal(p, &f)
		} else {
			err = proto.Unmarshal(p, &f)
		}
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if f.GetRequestId() != 0 {
			out = append(out, fmt.Sprintf("reply:%d", f.GetRequestId()))
			continue
		}
		f.GetMessages().Expand()
		var seqs []string
		conv := ""
		for _, m := range f.GetMessages().GetMessages() {
			if conv != "" && m.GetConversation() != conv {
				t.Fatalf("message %d mixes %s and %s", i, conv, m.GetConversation())
			}
			conv = m.GetConversation()
			seqs = append(seqs, fmt.Sprint(m.GetSeq()))
		}
		out = append(out, conv+":"+strings.Join(seqs, ","))
	}
	return out
}

func TestAppendMerged(t *testing.T) {
	big := maxMerged/2 - 100 // two fit in one message, three do not
	tests := []struct {
		name   string
		frames []*frame
		enc    encoding
		want   []string
	}{
		{"one frame", []*frame{roomFrame("a", 1, 1)}, encProto, []string{"room:a:1"}},
		{"a room's frames merge", []*frame{roomFrame("a", 1, 1, 2), roomFrame("a", 1, 3), roomFrame("a", 1, 4)}, encProto, []string{"room:a:1,2,3,4"}},
		{"rooms stay apart", []*frame{roomFrame("a", 1, 1), roomFrame("b", 1, 1), roomFrame("b", 1, 2), roomFrame("a", 1, 2)}, encProto, []string{"room:a:1", "room:b:1,2", "room:a:2"}},
		{"an answer breaks a run", []*frame{roomFrame("a", 1, 1), replyFrame(7), roomFrame("a", 1, 2), roomFrame("a", 1, 3)}, encProto, []string{"room:a:1", "reply:7", "room:a:2,3"}},
		{"a frame of one connection does not merge", []*frame{newFrame(roomFrame("a", 1, 1).msg), newFrame(roomFrame("a", 1, 2).msg)}, encProto, []string{"room:a:1", "room:a:2"}},
		{"JSON does not merge", []*frame{roomFrame("a", 1, 1), roomFrame("a", 1, 2)}, encJSON, []string{"room:a:1", "room:a:2"}},
		{"compact batches merge, sharing once", []*frame{roomFrame("a", 1, 1, 2), roomFrame("a", 1, 3), roomFrame("a", 1, 4)}, encCompact, []string{"room:a:1,2,3,4"}},
		{"compact batches sharing other fields do not merge", []*frame{roomFrameFrom("a", "u", 1, 1), roomFrameFrom("a", "v", 1, 2), roomFrameFrom("a", "v", 1, 3)}, encCompact, []string{"room:a:1", "room:a:2,3"}},
		{"an answer breaks a compact run", []*frame{roomFrame("a", 1, 1), replyFrame(7), roomFrame("a", 1, 2)}, encCompact, []string{"room:a:1", "reply:7", "room:a:2"}},
		{"merged messages stay bounded", []*frame{roomFrame("a", big, 1), roomFrame("a", big, 2), roomFrame("a", big, 3)}, encProto, []string{"room:a:1,2", "room:a:3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, ends := appendMerged(nil, tt.frames, tt.enc, nil)
			ops, payloads, read := readMessages(t, b)
			if got := describe(t, ops, payloads); !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if !slices.Equal(ends, read) {
				t.Fatalf("reported messages ending at %v, read them ending at %v", ends, read)
			}
			sent, got := 0, 0
			for _, f := range tt.frames {
				sent += len(f.msg.GetMessages().GetMessages())
			}
			for i, p := range payloads {
				var f clientpb.ServerFrame
				if ops[i] == wsframe.Text {
					if err := protojson.Unmarshal(p, &f); err != nil {
						t.Fatal(err)
					}
				} else if err := proto.Unmarshal(p, &f); err != nil {
					t.Fatal(err)
				}
				got += len(f.GetMessages().GetMessages())
			}
			if got != sent {
				t.Fatalf("%d messages arrived of %d sent", got, sent)
			}
			for i, p := range payloads {
				if ops[i] == wsframe.Text || tt.enc == encCompact {
					continue // compact batches: TestCompactFrame
				}
				// Every protobuf message, merged or not, is the
				// canonical encoding of its frame (a merged one: of its
				// frames' messages in one batch).
				var f clientpb.ServerFrame
				if err := proto.Unmarshal(p, &f); err != nil {
					t.Fatal(err)
				}
				canonical, err := proto.Marshal(&f)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(p, canonical) {
					t.Fatalf("message %d is not the canonical encoding of its batch", i)
				}
			}
		})
	}
}

// loopback returns the two ends of a loopback TCP connection, the first
// wrapped as a comet's socket.
func loopback(t *testing.T) (*socket, net.Conn) {
	t.Helper()
	client, server := testinfra.TCPPair(t)
	s, _, err := newSocketBuffers(server, bufio.NewReadWriter(bufio.NewReader(server), bufio.NewWriter(server)))
	if err != nil {
		t.Fatal(err)
	}
	return s, client
}

// claimedConn returns a connection of a new comet over s, claimed for the
// first of frames as a broadcast would, the others queued behind it.
func claimedConn(t *testing.T, s *socket, frames ...*frame) *conn {
	t.Helper()
	c, err := New(Config{ID: "t", Secret: "test-secret-of-the-comet-tests-0123456789"}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cn := newConn(c, "t.1", nil, s, false)
	if len(frames) > 0 {
		if !cn.claim(frames[0]) {
			t.Fatal("an idle connection was not claimed")
		}
		for _, f := range frames[1:] {
			cn.enqueue(f)
		}
	}
	return cn
}

// TestWriteClaimedSendsWhatWasQueued: a connection whose turn comes after
// several frames were queued to it gets them all in one write, a room's
// frames merged, in order.
func TestWriteClaimedSendsWhatWasQueued(t *testing.T) {
	s, client := loopback(t)
	cn := claimedConn(t, s, roomFrame("a", 10, 1), roomFrame("a", 10, 2), replyFrame(3), roomFrame("a", 10, 3), roomFrame("b", 10, 1))
	cn.writeClaimed()

	want := []string{"room:a:1,2", "reply:3", "room:a:3", "room:b:1"}
	wantBytes, _ := appendMerged(nil, []*frame{roomFrame("a", 10, 1), roomFrame("a", 10, 2), replyFrame(3), roomFrame("a", 10, 3), roomFrame("b", 10, 1)}, encProto, nil)
	got := make([]byte, len(wantBytes))
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	ops, payloads, _ := readMessages(t, got)
	if d := describe(t, ops, payloads); !slices.Equal(d, want) {
		t.Fatalf("client read %q, want %q", d, want)
	}
	cn.qmu.Lock()
	defer cn.qmu.Unlock()
	if cn.claimed || len(cn.queue) > 0 || cn.qbytes != 0 {
		t.Fatalf("after the write: claimed %v, %d frames (%d bytes) queued", cn.claimed, len(cn.queue), cn.qbytes)
	}
	if n := cn.comet.framesSent.Load(); n != int64(len(want)) {
		t.Fatalf("counted %d frames sent, want %d", n, len(want))
	}
}

// TestWriteClaimedKeepsWhatTheKernelDidNotTake: when the socket takes part
// of a merged write, the rest waits at the head of the queue, byte for
// byte, and what the client reads followed by it is the whole write.
func TestWriteClaimedKeepsWhatTheKernelDidNotTake(t *testing.T) {
	s, client := loopback(t)
	if err := s.Conn.(*net.TCPConn).SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if err := client.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	var frames []*frame
	for i := range 64 {
		frames = append(frames, roomFrame("a", 4000, uint64(i+1)))
	}
	whole, _ := appendMerged(nil, frames, encProto, nil)
	cn := claimedConn(t, s, frames...)
	cn.writing = true // as if a writer ran: resume starts none, the rest stays queued
	cn.writeClaimed()

	cn.qmu.Lock()
	queue := slices.Clone(cn.queue)
	qbytes, claimed := cn.qbytes, cn.claimed
	cn.qmu.Unlock()
	if claimed || len(queue) != 1 || queue[0].raw == nil {
		t.Fatalf("claimed %v, queue %v: want the rest as one remainder", claimed, queue)
	}
	rest := queue[0].raw
	if qbytes != len(rest) || cn.comet.queued.Load() != int64(len(rest)) {
		t.Fatalf("queued bytes %d (comet %d), want %d", qbytes, cn.comet.queued.Load(), len(rest))
	}
	got := make([]byte, len(whole)-len(rest))
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(got, rest...), whole) {
		t.Fatal("what was written and what is left are not the whole write")
	}
}

func TestReadyListIsFirstInFirstOut(t *testing.T) {
	var l readyList
	l.cond.L = &l.mu
	var conns []*conn
	for i := range 3*readyBatch + 5 {
		conns = append(conns, &conn{id: fmt.Sprint(i)})
	}
	if start, ok := l.add(conns[:10]); !start || !ok {
		t.Fatalf("first add: start %v, ok %v", start, ok)
	}
	if start, ok := l.add(conns[10:]); start || !ok {
		t.Fatalf("second add: start %v, ok %v", start, ok)
	}
	var got []*conn
	for len(got) < len(conns) {
		batch := l.take(nil)
		if len(batch) == 0 || len(batch) > readyBatch {
			t.Fatalf("took %d connections", len(batch))
		}
		got = append(got, batch...)
	}
	if !slices.Equal(got, conns) {
		t.Fatal("connections taken out of order")
	}
	l.add(conns[:2])
	if waiting := l.stop(); len(waiting) != 2 {
		t.Fatalf("stop returned %d waiting, want 2", len(waiting))
	}
	if b := l.take(nil); b != nil {
		t.Fatalf("take after stop returned %v", b)
	}
	if _, ok := l.add(conns[:1]); ok {
		t.Fatal("add after stop succeeded")
	}
}

// TestRoomFramesMerge: a member whose turn comes after two of its room's
// frames were flushed gets their messages as one frame.
func TestRoomFramesMerge(t *testing.T) {
	s, client := loopback(t)
	cn := claimedConn(t, s)
	cn.comet.cfg.BatchWindow = 0  // a frame per add
	cn.comet.ready.started = true // no writers: the test takes the turn
	r := newRoom(cn.comet, "a")
	r.join(cn)
	r.add(roomFrame("a", 10, 1).msg.GetMessages().GetMessages())
	r.add(roomFrame("a", 10, 2, 3).msg.GetMessages().GetMessages())
	if batch := cn.comet.ready.take(nil); len(batch) != 1 || batch[0] != cn {
		t.Fatalf("ready list held %v, want the member once", batch)
	}
	cn.writeClaimed()

	want, _ := appendMerged(nil, []*frame{roomFrame("a", 10, 1, 2, 3)}, encProto, nil)
	got := make([]byte, len(want))
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	ops, payloads, _ := readMessages(t, got)
	if d := describe(t, ops, payloads); !slices.Equal(d, []string{"room:a:1,2,3"}) {
		t.Fatalf("client read %q, want one frame of seqs 1 to 3", d)
	}
}
