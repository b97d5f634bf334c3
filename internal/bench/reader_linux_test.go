//go:build linux

package bench

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/laneim/laneim/internal/testinfra"
)

// rawPair returns a rawSocket taken from one end of a loopback TCP
// connection, and the other end.
func rawPair(t *testing.T) (*rawSocket, net.Conn) {
	t.Helper()
	nc, peer := testinfra.TCPPair(t)
	sock, err := takeSocket(nc.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sock.close)
	return sock, peer
}

// TestRawSocketOutlivesItsConn: the socket a poller takes keeps working
// once its net.Conn is closed, both ways, and a closed one refuses use.
func TestRawSocketOutlivesItsConn(t *testing.T) {
	sock, peer := rawPair(t)
	if err := sock.write([]byte("ping"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := peer.Read(got); err != nil || string(got) != "ping" {
		t.Fatalf("peer read %q, %v; want ping", got, err)
	}
	if _, err := peer.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var n int
	for n == 0 && time.Now().Before(deadline) {
		_ = sock.do(func(fd int) error {
			n, _ = unix.Read(fd, got)
			return nil
		})
		time.Sleep(time.Millisecond)
	}
	if string(got[:n]) != "pong" {
		t.Fatalf("read %q from the taken socket, want pong", got[:n])
	}
	sock.close()
	if err := sock.write([]byte("x"), time.Now().Add(time.Second)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

// TestRawSocketWriteWaitsAndEnds: a write to a peer that reads nothing
// waits until its deadline, and a close ends a write that waits.
func TestRawSocketWriteWaitsAndEnds(t *testing.T) {
	sock, _ := rawPair(t)
	big := make([]byte, 64<<20) // more than both socket buffers hold
	start := time.Now()
	if err := sock.write(big, time.Now().Add(200*time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a full socket: %v, want os.ErrDeadlineExceeded", err)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("the write gave up after %v, before its deadline", waited)
	}
	done := make(chan error, 1)
	go func() { done <- sock.write(big, time.Now().Add(time.Minute)) }()
	time.Sleep(50 * time.Millisecond)
	closed := make(chan struct{})
	go func() { sock.close(); close(closed) }()
	defer func() { <-closed }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a write ended by close succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("close did not end a waiting write")
	}
}
