package comet

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// socket is the network connection under a WebSocket connection. It
// lets the writer send a whole batch of frames in one write system call:
// between gather and send, what the WebSocket library writes is appended
// to a buffer borrowed from a pool, and send writes it at once. Outside a
// batch (a pong or close frame the library writes on its own) writes go
// straight to the network.
//
// Without it the library would make two write calls for every frame
// larger than its 4 KiB buffer (the buffer, then the rest), and one per
// frame of a batch: the write call is most of the comet's CPU (issue 9).
//
// Writes are made under mu, so bytes reach the network in the order the
// library wrote them even when a direct write races the end of a batch.
type socket struct {
	net.Conn
	r io.Reader // reads: bytes the HTTP server had read ahead, then Conn

	br    *bufio.Reader // the WebSocket library's reader over the socket
	ahead *bytes.Reader // the bytes read ahead, until read; nil: none

	// Bytes read from the network and not yet taken: (*rbuf)[rpos:rend],
	// in a buffer borrowed from readBuffers, given back once emptied;
	// nil when none. Only the connection's reader reads.
	rbuf       *[]byte
	rpos, rend int

	mu  sync.Mutex
	buf *[]byte // the batch being gathered, or nil

	// writeTimeout bounds a write outside a batch (0: none).
	writeTimeout time.Duration

	// frames is the client's budget of fragments of messages
	// (framescan.go), nil when not limited; scan counts them. Only the
	// reader reads.
	frames *rate.Limiter
	scan   frameScan

	raw syscall.RawConn // for writeNow; nil: not a system socket
	now struct {        // writeNow's write in progress, under mu
		b   []byte
		n   int
		err error
		fn  func(fd uintptr) bool // s.writeFD, made once
	}
}

// gather starts a batch: writes are buffered until send.
func (s *socket) gather() {
	s.mu.Lock()
	if s.buf == nil {
		s.buf = batchBuffers.Get().(*[]byte)
	}
	s.mu.Unlock()
}

// send writes the batch gathered since gather in one call, returns its
// buffer to the pool and ends the batch. It reports the bytes written.
func (s *socket) send() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	buf := s.buf
	if buf == nil {
		return 0, nil
	}
	s.buf = nil
	var n int
	var err error
	if len(*buf) > 0 {
		n, err = s.Conn.Write(*buf)
	}
	*buf = (*buf)[:0]
	if cap(*buf) <= maxPooledBatch {
		batchBuffers.Put(buf)
	}
	if err != nil {
		return n, fmt.Errorf("comet: write batch: %w", err)
	}
	return n, nil
}

// errBusy: the socket is in use (a batch is being gathered, or the
// library is writing a control frame); write through the queue.
var errBusy = errors.New("comet: socket busy")

// writeNow writes b without waiting: as much as the kernel takes at once.
// It reports how many bytes it wrote; fewer than len(b) with a nil error
// means the socket's buffer is full, and the rest is the caller's to
// write later, before anything else. It returns errBusy, having written
// nothing, when the socket is in use, which keeps whole frames of other
// writers from being split.
func (s *socket) writeNow(b []byte) (n int, err error) {
	if s.raw == nil || !s.mu.TryLock() {
		return 0, errBusy
	}
	defer s.mu.Unlock()
	if s.buf != nil {
		return 0, errBusy
	}
	s.now.b, s.now.n, s.now.err = b, 0, nil
	rerr := s.raw.Write(s.now.fn)
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		// The deadline of an earlier, finished batch (writeBatch)
		// has passed; it bounds nothing now.
		if rerr = s.Conn.SetWriteDeadline(time.Time{}); rerr == nil {
			rerr = s.raw.Write(s.now.fn)
		}
	}
	n, err = s.now.n, cmp.Or(s.now.err, rerr)
	s.now.b = nil
	if err != nil {
		return n, fmt.Errorf("comet: write: %w", err)
	}
	return n, nil
}

// writeFD is writeNow's part on the file descriptor, with s.mu held: it
// writes s.now.b until done or the kernel takes no more. It always
// reports true, so that the runtime does not wait for the socket.
func (s *socket) writeFD(fd uintptr) bool {
	b := s.now.b
	for s.now.n < len(b) {
		m, err := syscall.Write(int(fd), b[s.now.n:])
		if m > 0 {
			s.now.n += m
		}
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true // full: the rest is written later
		case err != nil:
			s.now.err = err
			return true
		case m <= 0:
			return true
		}
	}
	return true
}

// Read reads what the HTTP server had read past the request, then from
// the network. A read shorter than a buffer (the library's reader is the
// smallest bufio allows) fills a buffer borrowed from a pool, which goes
// back to the pool once its bytes are taken: a connection holds a read
// buffer only while a client frame is being read, not while it is idle.
func (s *socket) Read(p []byte) (int, error) {
	n, err := s.read(p)
	if s.frames != nil && n > 0 {
		if k := s.scan.feed(p[:n]); k > 0 && !s.frames.AllowN(time.Now(), k) {
			return 0, errFrameFlood
		}
	}
	return n, err
}

// read is Read without the count of fragments.
func (s *socket) read(p []byte) (int, error) {
	if s.rbuf == nil {
		if len(p) >= readBufferSize {
			return s.r.Read(p)
		}
		b := readBuffers.Get().(*[]byte)
		n, err := s.r.Read((*b)[:cap(*b)])
		if n <= 0 {
			readBuffers.Put(b)
			return 0, err
		}
		// An error with bytes is left for the next read to meet again.
		s.rbuf, s.rpos, s.rend = b, 0, n
	}
	n := copy(p, (*s.rbuf)[s.rpos:s.rend])
	s.rpos += n
	if s.rpos == s.rend {
		readBuffers.Put(s.rbuf)
		s.rbuf = nil
	}
	return n, nil
}

// Write buffers p during a batch and writes it otherwise, within
// writeTimeout. A write outside a batch is the library's own (a pong,
// a close frame), made when it reads a control frame: the deadline the
// last batch set may have passed long ago, and would fail it at once.
func (s *socket) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buf != nil {
		*s.buf = append(*s.buf, p...)
		return len(p), nil
	}
	if s.writeTimeout > 0 {
		if err := s.Conn.SetWriteDeadline(time.Now().Add(s.writeTimeout)); err != nil {
			return 0, fmt.Errorf("comet: write deadline: %w", err)
		}
	}
	return s.Conn.Write(p)
}

// maxPooledBatch is the largest batch buffer kept for reuse; bigger ones,
// from rare huge batches, are left to the garbage collector.
const maxPooledBatch = 1 << 20

var batchBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 16<<10)
	return &b
}}

// Sizes of the buffers the WebSocket library reads and writes through.
// Reads are client frames, mostly small, read through socket's pooled
// buffer of readBufferSize, so the library's reader is the smallest
// bufio allows. Data frames are written by writeNow or gathered by
// socket into one write, so the library's writer, the smallest too,
// holds only a frame's header: a control frame written outside a batch
// (a pong, the close) takes two write calls instead of one. The HTTP
// server's 4 KiB buffers would cost 8 KiB per idle connection.
const (
	libReadBufferSize = 16
	readBufferSize    = 1 << 10
	writeBufferSize   = 16
)

var readBuffers = sync.Pool{New: func() any {
	b := make([]byte, readBufferSize)
	return &b
}}

// newSocketBuffers returns the socket for nc, which reads first what the
// HTTP server had read into brw past the request, and the smaller
// buffered reader and writer the WebSocket library is to use over it.
func newSocketBuffers(nc net.Conn, brw *bufio.ReadWriter) (*socket, *bufio.ReadWriter, error) {
	s := &socket{Conn: nc, r: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			s.raw = raw
			s.now.fn = s.writeFD
		}
	}
	if n := brw.Reader.Buffered(); n > 0 {
		b, err := brw.Reader.Peek(n)
		if err != nil {
			return nil, nil, fmt.Errorf("comet: read buffered request bytes: %w", err)
		}
		s.ahead = bytes.NewReader(bytes.Clone(b))
		s.r = io.MultiReader(s.ahead, nc)
	}
	s.br = bufio.NewReaderSize(s, libReadBufferSize)
	return s, bufio.NewReadWriter(s.br, bufio.NewWriterSize(s, writeBufferSize)), nil
}

// unread reports whether bytes the client sent have been read from the
// network but not yet by the WebSocket library. Only the reader calls
// it, between messages.
func (s *socket) unread() bool {
	return s.br.Buffered() > 0 || s.rbuf != nil || s.ahead != nil && s.ahead.Len() > 0
}
