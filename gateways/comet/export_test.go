package comet

import "github.com/laneim/laneim/proto/topicpb"

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
	cn := newConn(c, "test."+user, nil, false)
	c.conns[cn.id] = cn
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		for {
			select {
			case f := <-cn.send:
				f.bytes(false)
			case <-cn.closing:
				return
			}
		}
	}()
	c.Deliver(&topicpb.Delivery{Conns: []string{cn.id}, Control: &topicpb.Control{Authenticate: user, Join: room}})
	return cn.id
}
