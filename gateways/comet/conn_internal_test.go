package comet

import (
	"fmt"
	"testing"

	"github.com/laneim/laneim/proto/clientpb"
)

// TestSeenIsBounded: a connection remembers at most maxSeen conversations
// for direct deliveries; the one just recorded is always remembered, and
// forgetting one only lets its repeat through.
func TestSeenIsBounded(t *testing.T) {
	cn := &conn{}
	if cn.seen != nil {
		t.Fatal("seen made before the first delivery")
	}
	msg := func(conv string, seq uint64) []*clientpb.Message {
		return []*clientpb.Message{{Conversation: conv, Seq: seq}}
	}
	for i := range 3 * maxSeen {
		conv := fmt.Sprintf("dm:a:u%d", i)
		if _, dropped := cn.fresh(msg(conv, 1)); dropped != 0 {
			t.Fatalf("%s#1 dropped the first time", conv)
		}
		if _, dropped := cn.fresh(msg(conv, 1)); dropped != 1 {
			t.Fatalf("%s#1 not dropped the second time", conv)
		}
		if len(cn.seen) > maxSeen {
			t.Fatalf("remembers %d conversations, at most %d", len(cn.seen), maxSeen)
		}
	}
	// Which ones were forgotten is up to the map's order: take one.
	forgotten := ""
	for i := range 3 * maxSeen {
		if conv := fmt.Sprintf("dm:a:u%d", i); cn.seen[conv] == 0 {
			forgotten = conv
			break
		}
	}
	if forgotten == "" {
		t.Fatal("no conversation forgotten")
	}
	if kept, dropped := cn.fresh(msg(forgotten, 1)); len(kept) != 1 || dropped != 0 {
		t.Errorf("forgotten conversation: kept %d dropped %d, want its repeat through", len(kept), dropped)
	}
	if kept, dropped := cn.fresh(msg("dm:a:u0", 0)); len(kept) != 1 || dropped != 0 {
		t.Errorf("a message without a seq: kept %d dropped %d, want it kept", len(kept), dropped)
	}
}
