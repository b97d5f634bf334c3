package comet

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

// countingConn records each Write call made on it.
type countingConn struct {
	net.Conn // nil: only Read and Write are used
	writes   [][]byte
	failWith error
}

func (c *countingConn) Write(p []byte) (int, error) {
	if c.failWith != nil {
		return 0, c.failWith
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *countingConn) Read(p []byte) (int, error) { return 0, io.EOF }

func TestSocketGathersBatchIntoOneWrite(t *testing.T) {
	big := strings.Repeat("x", 10_000) // more than the library's buffer would hold
	tests := []struct {
		name       string
		batch      bool
		writes     []string
		wantWrites int
	}{
		{"outside a batch each write goes out", false, []string{"a", "b", big}, 3},
		{"a batch goes out in one write", true, []string{"a", "b", big}, 1},
		{"an empty batch writes nothing", true, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc := &countingConn{}
			s := &socket{Conn: nc, r: nc}
			if tt.batch {
				s.gather()
			}
			var want []byte
			for _, w := range tt.writes {
				if n, err := s.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(w))
				}
				want = append(want, w...)
			}
			if tt.batch {
				n, err := s.send()
				if err != nil || n != len(want) {
					t.Fatalf("send = %d, %v; want %d, nil", n, err, len(want))
				}
			}
			if len(nc.writes) != tt.wantWrites {
				t.Fatalf("%d write calls, want %d", len(nc.writes), tt.wantWrites)
			}
			if got := bytes.Join(nc.writes, nil); !bytes.Equal(got, want) {
				t.Fatalf("wrote %d bytes, want %d in order", len(got), len(want))
			}
			// After send, writes go straight out again.
			before := len(nc.writes)
			s.Write([]byte("pong"))
			if len(nc.writes) != before+1 {
				t.Fatalf("a write after the batch was held back")
			}
		})
	}
}

func TestSocketSendError(t *testing.T) {
	boom := errors.New("boom")
	nc := &countingConn{failWith: boom}
	s := &socket{Conn: nc, r: nc}
	s.gather()
	s.Write([]byte("frame"))
	if _, err := s.send(); !errors.Is(err, boom) {
		t.Fatalf("send error = %v, want %v wrapped", err, boom)
	}
	if s.buf != nil {
		t.Fatalf("the batch is still open after a failed send")
	}
}

func TestNewSocketBuffersKeepsReadAhead(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	// The HTTP server read a frame's first bytes along with the request.
	httpReader := bufio.NewReader(io.MultiReader(strings.NewReader("early"), server))
	if _, err := httpReader.Peek(5); err != nil {
		t.Fatal(err)
	}
	s, brw, err := newSocketBuffers(server, bufio.NewReadWriter(httpReader, bufio.NewWriter(server)))
	if err != nil {
		t.Fatal(err)
	}
	if s.Conn != server {
		t.Fatal("socket does not wrap the hijacked connection")
	}
	go func() {
		client.Write([]byte("-late"))
	}()
	got := make([]byte, len("early-late"))
	if _, err := io.ReadFull(brw, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "early-late" {
		t.Fatalf("read %q, want %q", got, "early-late")
	}
	if brw.Reader.Size() != libReadBufferSize || brw.Writer.Size() != writeBufferSize {
		t.Fatalf("buffer sizes %d/%d, want %d/%d", brw.Reader.Size(), brw.Writer.Size(), libReadBufferSize, writeBufferSize)
	}
}

// TestSocketReadBuffer checks that reads through the library's small
// reader take whole sends of the client in one network read, and that the
// socket holds its pooled read buffer only while bytes are left in it:
// an idle connection holds none, and unread sees bytes left in either.
func TestSocketReadBuffer(t *testing.T) {
	tests := []struct {
		name  string
		sent  int   // bytes the client sends at once
		reads []int // sizes of the reads taking them, in turn
	}{
		{"header then payload", 60, []int{2, 4, 54}},
		{"byte by byte", 20, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"one read", 100, []int{100}},
		{"bigger than the buffer", 3 * readBufferSize, []int{2, 3*readBufferSize - 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := net.Pipe()
			defer server.Close()
			defer client.Close()
			s, brw, err := newSocketBuffers(server, bufio.NewReadWriter(bufio.NewReader(server), bufio.NewWriter(server)))
			if err != nil {
				t.Fatal(err)
			}
			sent := make([]byte, tt.sent)
			for i := range sent {
				sent[i] = byte(i)
			}
			go client.Write(sent)
			var got []byte
			for i, n := range tt.reads {
				b := make([]byte, n)
				if _, err := io.ReadFull(brw, b); err != nil {
					t.Fatal(err)
				}
				got = append(got, b...)
				if last := i == len(tt.reads)-1; last == s.unread() {
					t.Fatalf("after read %d of %d (%d of %d bytes): unread %v", i+1, len(tt.reads), len(got), tt.sent, s.unread())
				}
			}
			if !bytes.Equal(got, sent) {
				t.Fatalf("read %v, want %v", got, sent)
			}
			if s.rbuf != nil {
				t.Fatal("the socket holds a read buffer with nothing left to read")
			}
		})
	}
}
