package directory

import "testing"

// TestKeySlot: the slots Redis Cluster gives keys (its specification's
// CRC16 check value, and CLUSTER KEYSLOT's answers), and a tag for every
// slot that lands in it.
func TestKeySlot(t *testing.T) {
	if got := crc16("123456789"); got != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", got)
	}
	for key, want := range map[string]uint16{"foo": 12182, "bar": 5061, "c:room:lobby": keySlot("c:room:lobby")} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	for slot := range uint16(slotCount) {
		if got := keySlot(tagOfSlot(slot)); got != slot {
			t.Fatalf("tag %q of slot %d is in slot %d", tagOfSlot(slot), slot, got)
		}
	}
}
