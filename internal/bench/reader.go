package bench

import "sync"

// goRead reads c in a goroutine of its own until it ends, handing what it
// reads to feed: how connections a poller cannot read (TLS, or not on
// Linux) are read. wg counts the goroutine.
func goRead(c *wsConn, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.nc.Read(buf)
			if n > 0 {
				if ferr := c.feed(buf[:n]); ferr != nil {
					c.end(ferr)
					return
				}
			}
			if err != nil {
				c.end(err)
				return
			}
		}
	}()
}
