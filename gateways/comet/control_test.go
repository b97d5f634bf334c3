package comet_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/gateways/comet"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
)

// TestControlFrames sends WebSocket pings of several sizes and a close
// over a raw socket, the way clients that ping at the WebSocket level do
// (Python's websockets library does every 20 s), and checks the comet's
// pong and close: they go through the library's smallest read and write
// buffers (socket.go), so payloads longer than those must come back whole.
func TestControlFrames(t *testing.T) {
	nc := rawConn(t, comet.Config{RequestRate: -1})
	for _, n := range []int{0, 1, 15, 16, 17, 100, 125} {
		payload := bytes.Repeat([]byte{'p'}, n)
		if err := writeClientFrame(nc, 0x9, payload); err != nil {
			t.Fatal(err)
		}
		op, got, err := readServerFrame(nc)
		if err != nil {
			t.Fatalf("ping of %d bytes: %v", n, err)
		}
		if op != 0xA || !bytes.Equal(got, payload) {
			t.Fatalf("ping of %d bytes: answered opcode %#x with %d bytes, want a pong with the payload", n, op, len(got))
		}
	}
	reason := []byte("bye, with a reason longer than sixteen bytes")
	if err := writeClientFrame(nc, 0x8, append(binary.BigEndian.AppendUint16(nil, 1000), reason...)); err != nil {
		t.Fatal(err)
	}
	op, got, err := readServerFrame(nc)
	if err != nil {
		t.Fatalf("close: %v", err)
	}
	if op != 0x8 || len(got) < 2 || binary.BigEndian.Uint16(got) != 1000 {
		t.Fatalf("close answered with opcode %#x and %q, want a close frame with code 1000", op, got)
	}
}

// TestPingFloodIsRateLimited: WebSocket ping frames spend the
// connection's request budget. Within it each is answered with a pong;
// past it none is, and each counts as a refusal, so that a
// flood is closed (1008) as a flood of requests is, instead of taking a
// core to answer.
func TestPingFloodIsRateLimited(t *testing.T) {
	const burst = 5
	nc := rawConn(t, comet.Config{RequestRate: 0.001, RequestBurst: burst})
	// The budget, the refusals that close, and more.
	var flood bytes.Buffer
	for i := range burst + 101 + 50 {
		if err := writeClientFrame(&flood, 0x9, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	wrote := make(chan error, 1) // the server may close before reading it all
	go func() {
		_, err := nc.Write(flood.Bytes())
		wrote <- err
	}()
	defer func() {
		nc.Close() // ends the write
		<-wrote
	}()
	pongs := pongsUntil1008(t, nc, func(n int, got []byte) {
		if string(got) != strconv.Itoa(n) {
			t.Fatalf("pong %d carries %q", n, got)
		}
	})
	if pongs != burst {
		t.Fatalf("%d pings answered, want the burst of %d", pongs, burst)
	}
}

// TestRefusalsNotForgivenByFramesAllowed: a client that keeps sending
// faster than its budget is closed (1008) even though a frame of its
// passes now and then. Bursts of ten pings against a budget of one at
// a time: at least nine of each burst are refused, whatever the pause
// between bursts. When a frame allowed reset a count of refusals in a
// row, such a client was refused for ever (outside abuse check).
func TestRefusalsNotForgivenByFramesAllowed(t *testing.T) {
	nc := rawConn(t, comet.Config{RequestRate: 200, RequestBurst: 1})
	done := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for range 1000 { // 10,000 pings at most; the close comes after about 12 bursts
			var burst bytes.Buffer
			for i := range 10 {
				if err := writeClientFrame(&burst, 0x9, []byte{byte(i)}); err != nil {
					return
				}
			}
			if _, err := nc.Write(burst.Bytes()); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	defer func() {
		close(done)
		nc.Close()
		<-wrote
	}()
	pongsUntil1008(t, nc, func(int, []byte) {})
}

// pongsUntil1008 reads pongs, passing each with its number to pong, until
// a close frame with code 1008, and returns how many came; anything else
// fails the test.
func pongsUntil1008(t *testing.T, nc net.Conn, pong func(n int, payload []byte)) int {
	t.Helper()
	for n := 0; ; n++ {
		op, got, err := readServerFrame(nc)
		if err != nil {
			t.Fatalf("after %d pongs: %v, want a close frame", n, err)
		}
		if op != 0xA {
			if op != 0x8 || len(got) < 2 || binary.BigEndian.Uint16(got) != 1008 {
				t.Fatalf("after %d pongs: opcode %#x with %q, want a close frame with code 1008", n, op, got)
			}
			return n
		}
		pong(n, got)
	}
}

// TestFragmentFloodIsClosed: fragments of a message cost a budget of
// their own (ten per request of the connection's), so that a message of
// empty fragments that never ends is closed (1008) instead of being read
// for ever (outside abuse check); a message in a few fragments is served.
func TestFragmentFloodIsClosed(t *testing.T) {
	ping, err := proto.Marshal(&clientpb.ClientFrame{RequestId: 7, Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{ClientTimeUnixMs: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	nc := rawConn(t, comet.Config{RequestRate: 20, RequestBurst: 5}) // 50 fragments at once
	var msg bytes.Buffer
	for i, b := range ping { // a Ping a byte a fragment
		op := byte(0)
		if i == 0 {
			op = 0x2
		}
		if i == len(ping)-1 {
			op |= 0x80
		}
		writeFragment(&msg, op, []byte{b})
	}
	if _, err := nc.Write(msg.Bytes()); err != nil {
		t.Fatal(err)
	}
	op, got, err := readServerFrame(nc)
	var pong clientpb.ServerFrame
	if err != nil || op != 0x2 || proto.Unmarshal(got, &pong) != nil || pong.GetRequestId() != 7 || pong.GetPong() == nil {
		t.Fatalf("a Ping in %d fragments answered %#x %q (%v), want its Pong", len(ping), op, got, err)
	}
	var flood bytes.Buffer
	writeFragment(&flood, 0x2, nil)
	for range 2000 {
		writeFragment(&flood, 0, nil)
	}
	wrote := make(chan error, 1) // the server may close before reading it all
	go func() {
		_, err := nc.Write(flood.Bytes())
		wrote <- err
	}()
	defer func() {
		nc.Close()
		<-wrote
	}()
	// Not the login timeout's 1008 (10 s): the budget's.
	op, got, err = readServerFrame(nc)
	if err != nil || op != 0x8 || len(got) < 2 || binary.BigEndian.Uint16(got) != 1008 || string(got[2:]) != "rate limit exceeded" {
		t.Fatalf("after a flood of fragments: %#x %q (%v), want a close frame 1008 \"rate limit exceeded\"", op, got, err)
	}
}

// writeFragment writes one masked frame whose first header byte is first
// (FIN and opcode) and whose payload fits in 125 bytes.
func writeFragment(w *bytes.Buffer, first byte, payload []byte) {
	mask := [4]byte{1, 2, 3, 4}
	w.Write([]byte{first, 0x80 | byte(len(payload))})
	w.Write(mask[:])
	for i, c := range payload {
		w.WriteByte(c ^ mask[i%4])
	}
}

// TestProtocolErrorsClose1002: a client that breaks the WebSocket
// protocol in a frame header gets a close frame with 1002 (protocol
// error). The library sent none for these, and the comet closed with
// 1000 (abuse check, F8).
func TestProtocolErrorsClose1002(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header []byte
	}{
		{"unmasked frame", []byte{0x82, 0x02, 'h', 'i'}},
		{"64-bit length with its top bit set", []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}},
		{"reserved bits", []byte{0xf2, 0x80, 1, 2, 3, 4}},
		{"unknown opcode", []byte{0x83, 0x80, 1, 2, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := rawConn(t, comet.Config{RequestRate: -1})
			if _, err := nc.Write(tc.header); err != nil {
				t.Fatal(err)
			}
			op, payload, err := readServerFrame(nc)
			if err != nil {
				t.Fatalf("no close frame: %v", err)
			}
			if op != 0x8 || len(payload) < 2 {
				t.Fatalf("frame opcode %#x payload %q, want a close frame", op, payload)
			}
			if code := binary.BigEndian.Uint16(payload); code != 1002 {
				t.Errorf("close code %d (%q), want 1002", code, payload[2:])
			}
		})
	}
}

// rawConn starts a comet with cfg (its id, secret and no address limit
// added) and returns a WebSocket connection to it opened by hand, with a
// 10 s deadline; all end with the test.
func rawConn(t *testing.T, cfg comet.Config) net.Conn {
	t.Helper()
	cfg.ID, cfg.Secret, cfg.MaxConnsPerAddress = "ctl", testSecret, -1
	c, err := comet.New(cfg, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(func() {
		c.Close()
		srv.Close()
	})
	nc, err := rawUpgrade(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return nc
}

// writeClientFrame writes one final, masked frame of opcode op.
func writeClientFrame(w io.Writer, op byte, payload []byte) error {
	if len(payload) > 125 {
		panic("control frame payloads fit in 125 bytes")
	}
	mask := [4]byte{1, 2, 3, 4}
	b := []byte{0x80 | op, 0x80 | byte(len(payload))}
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	_, err := w.Write(b)
	return err
}

// readServerFrame reads one unmasked frame of at most 65,535 bytes.
func readServerFrame(r net.Conn) (op byte, payload []byte, err error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:2]); err != nil {
		return 0, nil, err
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		if _, err := io.ReadFull(r, h[2:4]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(h[2:4]))
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}
