package directory

import (
	"strconv"
	"strings"
)

// Key names. Braces are Redis Cluster hash tags: the keys of one user, one
// room, one session or one conversation share a slot.

func userKey(u string) string         { return "{u:" + u + "}" }
func userRoomsKey(u string) string    { return "{u:" + u + "}:rooms" }
func userBlocksKey(u string) string   { return "{u:" + u + "}:blocks" }
func userSessionsKey(u string) string { return "{u:" + u + "}:sessions" }
func userOnlineKey(u string) string   { return "{u:" + u + "}:online" }

// userDeletedKey marks a user id as deleted: SaveUser refuses it.
func userDeletedKey(u string) string { return "{u:" + u + "}:deleted" }

// userSendsKey names a user's send budget; redis_rate stores it under
// "rate:" + this, which keeps the user's hash tag.
func userSendsKey(u string) string { return "{u:" + u + "}:sends" }

func roomKey(r string) string        { return "{r:" + r + "}" }
func roomMembersKey(r string) string { return "{r:" + r + "}:members" }
func roomConnsKey(r string) string   { return "{r:" + r + "}:conns" }
func roomUsersKey(r string) string   { return "{r:" + r + "}:users" }
func roomCometsKey(r string) string  { return "{r:" + r + "}:comets" }

func sessionID(ref SessionRef) string { return ref.Comet + "/" + ref.Conn }
func sessionKey(id string) string     { return "{s:" + id + "}" }
func sessionRoomsKey(id string) string {
	return "{s:" + id + "}:rooms"
}

func convSeqKey(c string) string { return "{c:" + c + "}:seq" }

// convDedupKey names the record of a sender's client_msg_id in a
// conversation. It is unambiguous: a sender without ':' (every valid id,
// and topics.SystemSender) keeps the original form "dedup:<sender>:<id>",
// where the first ':' after "dedup:" ends the sender; any other sender
// gets a length-prefixed form under "dedup#", which the first never
// takes. So ("acme", "alice:m-1") and ("acme:alice", "m-1") never share
// a key, and keys written before this rule keep their meaning.
func convDedupKey(c, sender, id string) string {
	if !strings.Contains(sender, ":") {
		return "{c:" + c + "}:dedup:" + sender + ":" + id
	}
	return "{c:" + c + "}:dedup#" + strconv.Itoa(len(sender)) + ":" + sender + ":" + id
}

const (
	sessionsDeadlineKey = "sessions:deadline"
	cometsDeadlineKey   = "comets:deadline"
)
