package bench

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/wsframe"
	"github.com/laneim/laneim/proto/clientpb"
)

// wsConn is a bench member's WebSocket connection, speaking
// docs/protocol.md over a socket of its own rather than through the Go
// client: the member's goroutine writes to it, and a reader (reader.go)
// reads it. Ten thousand members each parking a reader goroutine cost the
// machine more than the comet's writes to them (issue 9): a wake-up, a
// read and a read that finds nothing, per frame. A reader reads a ready
// socket once and hands the whole frames it holds to feed.
//
// feed scans each binary frame with the member's peek (its room's
// batches, without decoding them), records each JSON batch, passes the
// answers to its requests (pongs included) to replies, newest kept, and
// drops any other event.
type wsConn struct {
	nc     net.Conn
	json   bool
	peek   func([]byte) (reply *clientpb.ServerFrame, consumed bool)
	record func(*clientpb.MessageBatch)

	in    []byte // read, not yet a whole frame
	frag  []byte // a fragmented message's payload so far
	fragO byte   // its opcode

	replies chan *clientpb.ServerFrame

	wmu    sync.Mutex
	nextID atomic.Uint64

	endOnce sync.Once
	err     error         // why it ended; set before done is closed
	done    chan struct{} // closed when the connection has ended

	// sock is the socket once a poller owns it (reader_linux.go): nc
	// is closed then, and reads, writes and the close go through sock.
	sock  atomic.Pointer[rawSocket]
	token uint64 // the poller's key for it
}

// maxFrame bounds a server frame, as the Go client's read limit does.
const maxFrame = 16 << 20

var errClosedByServer = errors.New("bench: the server closed the connection")

// dialWS connects to target (ws:// or wss://) and upgrades to WebSocket
// with laneIM's subprotocol; any bytes the server sent after its answer
// are fed to the connection.
func dialWS(ctx context.Context, target string, useJSON bool, peek func([]byte) (*clientpb.ServerFrame, bool), record func(*clientpb.MessageBatch)) (*wsConn, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("bench: target %q: %w", target, err)
	}
	port := u.Port()
	switch {
	case u.Scheme != "ws" && u.Scheme != "wss":
		return nil, fmt.Errorf("bench: target %q: not ws:// or wss://", target)
	case port == "" && u.Scheme == "ws":
		port = "80"
	case port == "":
		port = "443"
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", target, err)
	}
	if u.Scheme == "wss" {
		nc = tls.Client(nc, &tls.Config{ServerName: u.Hostname()})
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	sub := client.SubprotocolProto
	if useJSON {
		sub = client.SubprotocolJSON
	}
	var k [16]byte
	for i := range k {
		k[i] = byte(rand.Uint32())
	}
	key := base64.StdEncoding.EncodeToString(k[:])
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n", u.RequestURI(), u.Host, key, sub)
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, fmt.Errorf("bench: upgrade %s: %w", target, err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bench: upgrade %s: %w", target, err)
	}
	resp.Body.Close()
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	switch {
	case resp.StatusCode != http.StatusSwitchingProtocols:
		err = fmt.Errorf("bench: upgrade %s: %s", target, resp.Status)
	case resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]):
		err = fmt.Errorf("bench: upgrade %s: bad Sec-WebSocket-Accept", target)
	case resp.Header.Get("Sec-WebSocket-Protocol") != sub:
		err = fmt.Errorf("bench: upgrade %s: subprotocol %s not accepted", target, sub)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	c := &wsConn{nc: nc, json: useJSON, peek: peek, record: record,
		replies: make(chan *clientpb.ServerFrame, 64), done: make(chan struct{})}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if err := c.feed(b); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return c, nil
}

// readUntil reads the connection itself (before a reader has it) until
// an answer to request id arrives, and returns it.
func (c *wsConn) readUntil(ctx context.Context, id uint64) (*clientpb.ServerFrame, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(time.Minute)
	}
	_ = c.nc.SetReadDeadline(dl)
	defer c.nc.SetReadDeadline(time.Time{})
	buf := make([]byte, 16<<10)
	for {
		select {
		case f := <-c.replies:
			if f.GetRequestId() == id {
				return f, nil
			}
			continue // a frame before the answer
		default:
		}
		n, err := c.nc.Read(buf)
		if n > 0 {
			if ferr := c.feed(buf[:n]); ferr != nil {
				return nil, ferr
			}
		}
		if err != nil {
			return nil, fmt.Errorf("bench: read: %w", err)
		}
	}
}

// send writes f as one masked WebSocket message.
func (c *wsConn) send(ctx context.Context, f *clientpb.ClientFrame) error {
	p, err := client.Marshal(f, c.json)
	if err != nil {
		return fmt.Errorf("bench: encode: %w", err)
	}
	op := byte(wsframe.Binary)
	if c.json {
		op = wsframe.Text
	}
	return c.write(ctx, op, p)
}

// write sends one whole message of opcode op, masked as a client must.
func (c *wsConn) write(ctx context.Context, op byte, p []byte) error {
	b := appendClientFrame(make([]byte, 0, len(p)+14), op, p, rand.Uint32())
	c.wmu.Lock()
	defer c.wmu.Unlock()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	// A write that fails ends the connection: the server may have closed
	// it (a slow consumer), and a frame written in part leaves nothing to
	// go on with. The member then reconnects, as it does when a read
	// finds the connection gone first.
	if sock := c.sock.Load(); sock != nil {
		if err := sock.write(b, dl); err != nil {
			err = fmt.Errorf("bench: write: %w", err)
			c.end(err)
			return err
		}
		return nil
	}
	_ = c.nc.SetWriteDeadline(dl)
	if _, err := c.nc.Write(b); err != nil {
		err = fmt.Errorf("bench: write: %w", err)
		c.end(err)
		return err
	}
	return nil
}

// appendClientFrame appends p as one final client frame of opcode op,
// masked with mask.
func appendClientFrame(b []byte, op byte, p []byte, mask uint32) []byte {
	b = binary.BigEndian.AppendUint32(wsframe.AppendHeader(b, op, len(p), true), mask)
	m := b[len(b)-4:]
	start := len(b)
	b = append(b, p...)
	for i := range p {
		b[start+i] ^= m[i&3]
	}
	return b
}

// do sends f with a fresh request id and waits for its answer among the
// replies; an Error answer is returned as *client.Error.
func (c *wsConn) do(ctx context.Context, f *clientpb.ClientFrame) (*clientpb.ServerFrame, error) {
	id := c.nextID.Add(1)
	f.RequestId = id
	if err := c.send(ctx, f); err != nil {
		return nil, err
	}
	answer := func(r *clientpb.ServerFrame) (*clientpb.ServerFrame, error) {
		if e := r.GetError(); e != nil {
			return r, client.ErrorOf(e)
		}
		return r, nil
	}
	for {
		select {
		case r := <-c.replies:
			if r.GetRequestId() == id {
				return answer(r)
			} // else a pong, or an answer given up on
		case <-c.done:
			// The answer may have come in the read that ended the
			// connection (a close frame right behind it), and select
			// picks among ready cases at random: take it if it is there.
			for {
				select {
				case r := <-c.replies:
					if r.GetRequestId() == id {
						return answer(r)
					}
				default:
					return nil, fmt.Errorf("bench: connection ended: %w", c.err)
				}
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ask sends f with a fresh request id and reads its answer (readUntil),
// before a reader has the connection; an Error answer is returned as
// *client.Error.
func (c *wsConn) ask(ctx context.Context, f *clientpb.ClientFrame) (*clientpb.ServerFrame, error) {
	f.RequestId = c.nextID.Add(1)
	if err := c.send(ctx, f); err != nil {
		return nil, err
	}
	r, err := c.readUntil(ctx, f.RequestId)
	if err != nil {
		return nil, err
	}
	if e := r.GetError(); e != nil {
		return r, client.ErrorOf(e)
	}
	return r, nil
}

// login logs in with the room in the same round trip (or, if separately,
// joins it after), before a reader has the connection.
func (c *wsConn) login(ctx context.Context, token, room string, separately bool) error {
	var join []string
	if room != "" && !separately {
		join = []string{room}
	}
	r, err := c.ask(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token, Device: "bench", Join: join, CompactBatches: true}}})
	if err != nil {
		return fmt.Errorf("bench: login: %w", err)
	}
	if room == "" {
		return nil
	}
	if separately {
		if _, err := c.ask(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Join{Join: &clientpb.JoinRoom{Room: room}}}); err != nil {
			return fmt.Errorf("bench: join %s: %w", room, err)
		}
		return nil
	}
	res := r.GetLoginResult()
	if refused := res.GetJoinRefused(); len(refused) > 0 {
		return fmt.Errorf("bench: join %s: %w", room, client.ErrorOf(refused[0].GetError()))
	}
	if len(res.GetJoined()) != 1 {
		return fmt.Errorf("bench: the login joined %d rooms, want 1", len(res.GetJoined()))
	}
	return nil
}

// feed parses the whole frames of what was read, b, after what is left
// of earlier reads. It returns an error when the connection must end: a
// close frame, or bytes that are not WebSocket.
func (c *wsConn) feed(b []byte) error {
	data := b
	if len(c.in) > 0 {
		c.in = append(c.in, b...)
		data = c.in
	}
	var err error
	for err == nil {
		var f wsframe.Frame
		var n int
		if f, n, err = wsframe.Next(data, maxFrame); n == 0 {
			break // not a whole frame yet, or not a frame at all
		}
		data = data[n:]
		switch f.Op {
		case wsframe.Close:
			err = errClosedByServer
		case wsframe.Ping:
			_ = c.write(context.Background(), wsframe.Pong, f.Payload) // a few bytes, never sent by laneIM's comets
		case wsframe.Pong:
		case wsframe.Cont:
			c.frag = append(c.frag, f.Payload...)
			if f.Fin {
				c.message(c.fragO, c.frag)
				c.frag = c.frag[:0]
			}
		case wsframe.Text, wsframe.Binary:
			if !f.Fin {
				c.fragO, c.frag = f.Op, append(c.frag[:0], f.Payload...)
				continue
			}
			c.message(f.Op, f.Payload)
		default:
			err = fmt.Errorf("bench: opcode %#x", f.Op)
		}
	}
	c.in = append(c.in[:0], data...) // may overlap c.in: append moves like copy
	return err
}

// message handles one whole message.
func (c *wsConn) message(op byte, p []byte) {
	var f *clientpb.ServerFrame
	if op == wsframe.Binary {
		var consumed bool
		if f, consumed = c.peek(p); consumed && f == nil {
			return
		}
	}
	if f == nil {
		var err error
		if f, err = client.Unmarshal(p, op == wsframe.Text); err != nil {
			return // not the bench's to judge: its counts will show what is missing
		}
	}
	if f.GetRequestId() == 0 {
		if b := f.GetMessages(); b != nil && op == wsframe.Text {
			c.record(b)
		}
		// Any other event (presence, typing, read updates) answers no
		// request: nothing would ever take it from replies.
		return
	}
	// The reader never waits for replies to be taken: a poller serves
	// many members, and one member's unread answers (given up on by
	// their requests) would stall them all. When replies is full, the
	// oldest answer goes.
	for {
		select {
		case c.replies <- f:
			return
		default:
		}
		select {
		case <-c.replies:
		default:
		}
	}
}

// end closes the connection once, for err.
func (c *wsConn) end(err error) {
	c.endOnce.Do(func() {
		c.err = err
		if sock := c.sock.Load(); sock != nil {
			sock.close()
		}
		c.nc.Close()
		close(c.done)
	})
}

// Close ends the connection.
func (c *wsConn) Close() { c.end(net.ErrClosed) }
