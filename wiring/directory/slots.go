package directory

import (
	"strconv"
	"sync"
)

// Redis Cluster spreads keys over 16,384 hash slots (the CRC16 of a key's
// hash tag, modulo 16,384), and a master that dies with its replicas
// takes its slots' keys with it, whatever the others hold. So a mark that
// says "the sequence counters are restored" must live beside the counters
// it speaks for: RestoreSequences sets one in every slot, and AssignMany,
// asked to, checks the one of its conversation's slot in the same script
// as it takes the seqs (issue 9, outside fault check: a shard lost while
// the one mark lived on another let a restarted routing worker issue
// stored seqs again). On a single Redis the marks are 16,384 small keys.

const slotCount = 16384

// slotTags holds, for each hash slot, a short string whose CRC16 falls in
// it: "{tag}" puts a key in that slot.
var (
	slotTagsOnce sync.Once
	slotTags     [slotCount]string
)

func tagOfSlot(slot uint16) string {
	slotTagsOnce.Do(func() {
		for i, found := 0, 0; found < slotCount; i++ {
			tag := strconv.FormatInt(int64(i), 36)
			if s := keySlot(tag); slotTags[s] == "" {
				slotTags[s] = tag
				found++
			}
		}
	})
	return slotTags[slot]
}

// keySlot is the Redis Cluster hash slot of a key with no braces, or of a
// hash tag.
func keySlot(tag string) uint16 { return crc16(tag) % slotCount }

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial 0), the one Redis
// Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// restoredSlotKey is the "restored" mark of slot.
func restoredSlotKey(slot uint16) string { return "{" + tagOfSlot(slot) + "}:seq:restored" }

// RestoredMarkKey is the key of the "restored" mark beside conversation's
// sequence counter (in its hash slot): for tests that make a directory
// lose a slot's keys, and for operators.
func RestoredMarkKey(conversation string) string {
	return restoredSlotKey(keySlot("c:" + conversation))
}
