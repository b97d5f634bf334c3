package comet

import "github.com/laneim/laneim/proto/topicpb"

// AddTestMember adds a logged-in member of room without a WebSocket: a
// goroutine owned by the comet encodes and discards its frames. For
// benchmarks of the fan-out path.
func (c *Comet) AddTestMember(room, user string) {
	cn := &conn{id: user, send: make(chan *frame, c.cfg.SendQueue), closing: make(chan struct{}), rooms: map[string]struct{}{}}
	c.mu.Lock()
	c.conns[cn.id] = cn
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		for {
			select {
			case f := <-cn.send:
				f.bytes(false)
			case <-c.ctx.Done():
				return
			}
		}
	}()
	c.Deliver(&topicpb.Delivery{Conns: []string{cn.id}, Control: &topicpb.Control{Authenticate: user, Join: room}})
}
