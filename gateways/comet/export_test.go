package comet

import (
	"strconv"
	"time"

	"github.com/laneim/laneim/proto/topicpb"
)

// AddTestMember adds a connection logged in as user and member of room,
// without a WebSocket: a goroutine owned by the comet encodes (protobuf)
// and discards its frames until the connection is kicked or the comet
// closes. For benchmarks of the fan-out path and heartbeat tests. It
// returns the connection id.
func (c *Comet) AddTestMember(room, user string) string {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ""
	}
	cn := newConn(c, "test."+user, nil, nil, false)
	c.conns[cn.id] = cn
	c.mu.Unlock()
	c.Deliver(&topicpb.Delivery{Conns: []string{cn.id}, Control: &topicpb.Control{Authenticate: user, Join: room}})
	return cn.id
}

// WaitWritten waits, polling, until no connection has a frame queued or a
// writer running, or until timeout; it reports whether they all had.
func (c *Comet) WaitWritten(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		busy := false
		c.mu.RLock()
		for _, cn := range c.conns {
			cn.qmu.Lock()
			busy = (cn.writing && !cn.parked) || len(cn.queue) > 0 || cn.claimed
			cn.qmu.Unlock()
			if busy {
				break
			}
		}
		for _, r := range c.rooms {
			if busy {
				break
			}
			r.mu.Lock()
			busy = len(r.log) > 0 || r.timer != nil
			r.mu.Unlock()
		}
		c.mu.RUnlock()
		if !busy {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// AdmitAll logs every connection not yet logged in in as a user of its
// own (u<n>) and puts it in room, as the pipeline would after a Login
// and a Join; it returns how many it admitted. For benchmarks over real
// sockets.
func (c *Comet) AdmitAll(room string) int {
	c.mu.RLock()
	var ids []string
	for id, cn := range c.conns {
		if !cn.authed.Load() {
			ids = append(ids, id)
		}
	}
	c.mu.RUnlock()
	for i, id := range ids {
		c.Deliver(&topicpb.Delivery{Conns: []string{id}, Control: &topicpb.Control{Authenticate: "u" + strconv.Itoa(i), Join: room}})
	}
	return len(ids)
}

// AddressKey is (*Comet).addressKey: how a client address is counted.
func AddressKey(c *Comet, remote string) string { return c.addressKey(remote) }

// NoParking makes a comet of cfg keep a reader goroutine per connection.
func NoParking(cfg *Config) { cfg.noParking = true }
