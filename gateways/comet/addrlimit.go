package comet

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
)

// Connections per client address (issue 11): a comet holds at most
// MaxConnsPerAddress WebSocket connections from one address; one more is
// refused before the upgrade with HTTP 429 and Retry-After, so it costs
// neither a goroutine nor a socket buffer. IPv6 clients are counted per
// /64, the block a single host usually holds. Loopback is exempt unless
// LimitLoopback is set: dev mode, the load tools and a local proxy all
// connect from there.

// addrRetryAfter is the Retry-After, in seconds, of a connection refused
// for its address.
const addrRetryAfter = 10

// addressKey is the key under which a client address is counted, "" when
// it is not counted (loopback, unless limited; an address that does not
// parse, which net/http does not produce).
func (c *Comet) addressKey(remote string) string {
	if c.cfg.MaxConnsPerAddress <= 0 {
		return ""
	}
	if !c.cfg.LimitLoopback && isLoopback(remote) {
		return ""
	}
	return addressOf(remote)
}

func isLoopback(remote string) bool {
	ip, ok := parseRemote(remote)
	return ok && ip.IsLoopback()
}

func parseRemote(remote string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}

// addressOf is the key of a client address: its IP, an IPv6 one's /64;
// "" when it does not parse.
func addressOf(remote string) string {
	ip, ok := parseRemote(remote)
	if !ok {
		return ""
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// takeAddress counts one more connection from key. It reports false, the
// count unchanged, when key already has MaxConnsPerAddress connections.
func (c *Comet) takeAddress(key string) bool {
	if key == "" {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byAddress[key] >= c.cfg.MaxConnsPerAddress {
		return false
	}
	c.byAddress[key]++
	return true
}

// releaseAddress counts one connection from key less.
func (c *Comet) releaseAddress(key string) {
	if key == "" {
		return
	}
	c.mu.Lock()
	c.releaseAddressLocked(key)
	c.mu.Unlock()
}

func (c *Comet) releaseAddressLocked(key string) {
	if key == "" {
		return
	}
	if c.byAddress[key]--; c.byAddress[key] <= 0 {
		delete(c.byAddress, key)
	}
}

// refuseAddress answers a connection refused for its address.
func (c *Comet) refuseAddress(w http.ResponseWriter, r *http.Request) {
	c.addressLimited.Add(1)
	c.logger.Debug("connection refused: too many from its address", "remote", r.RemoteAddr)
	w.Header().Set("Retry-After", strconv.Itoa(addrRetryAfter))
	http.Error(w, "laneim: too many connections from this address ("+strconv.Itoa(c.cfg.MaxConnsPerAddress)+"); retry later", http.StatusTooManyRequests)
}
