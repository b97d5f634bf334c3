package comet

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
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

	mu  sync.Mutex
	buf *[]byte // the batch being gathered, or nil
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

// Read reads what the HTTP server had read past the request, then from
// the network.
func (s *socket) Read(p []byte) (int, error) { return s.r.Read(p) }

// Write buffers p during a batch and writes it otherwise.
func (s *socket) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buf != nil {
		*s.buf = append(*s.buf, p...)
		return len(p), nil
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
// Reads are client frames, mostly small; writes of data frames are
// gathered by socket, so the library's write buffer only carries control
// frames written outside a batch. The HTTP server's 4 KiB buffers would
// cost 8 KiB per idle connection.
const (
	readBufferSize  = 1 << 10
	writeBufferSize = 256
)

// newSocketBuffers returns the socket for nc, which reads first what the
// HTTP server had read into brw past the request, and the smaller
// buffered reader and writer the WebSocket library is to use over it.
func newSocketBuffers(nc net.Conn, brw *bufio.ReadWriter) (*socket, *bufio.ReadWriter, error) {
	s := &socket{Conn: nc, r: nc}
	if n := brw.Reader.Buffered(); n > 0 {
		b, err := brw.Reader.Peek(n)
		if err != nil {
			return nil, nil, fmt.Errorf("comet: read buffered request bytes: %w", err)
		}
		s.r = io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc)
	}
	return s, bufio.NewReadWriter(bufio.NewReaderSize(s, readBufferSize), bufio.NewWriterSize(s, writeBufferSize)), nil
}
