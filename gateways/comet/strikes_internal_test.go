package comet

import (
	"testing"
	"time"
)

// TestStrikesPastTheBucketAreADebt: strikes beyond MaxStrikes, from
// connections dialled at once before any of them struck, keep the
// address refused for a second each instead of being lost.
func TestStrikesPastTheBucketAreADebt(t *testing.T) {
	c := &Comet{cfg: Config{MaxStrikes: 5}}
	c.strikes.m = map[string]*strike{}
	const key = "127.0.0.9"
	for range 4 {
		c.strike(key)
	}
	if c.struckOut(key) {
		t.Fatal("struck out after 4 strikes of 5")
	}
	for range 16 { // 20 in all: 15 past the bucket
		c.strike(key)
	}
	if !c.struckOut(key) {
		t.Fatal("not struck out after 20 strikes")
	}
	time.Sleep(1200 * time.Millisecond)
	if !c.struckOut(key) {
		t.Fatal("forgiven a second after 20 strikes of 5: the strikes past the bucket were lost")
	}
	if c.struckOut("127.0.0.10") {
		t.Fatal("another address struck out")
	}
}
