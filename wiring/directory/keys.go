package directory

// Key names. Braces are Redis Cluster hash tags: the keys of one user, one
// room, one session or one conversation share a slot.

func userKey(u string) string         { return "{u:" + u + "}" }
func userRoomsKey(u string) string    { return "{u:" + u + "}:rooms" }
func userBlocksKey(u string) string   { return "{u:" + u + "}:blocks" }
func userSessionsKey(u string) string { return "{u:" + u + "}:sessions" }
func userOnlineKey(u string) string   { return "{u:" + u + "}:online" }

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
func convDedupKey(c, sender, id string) string {
	return "{c:" + c + "}:dedup:" + sender + ":" + id
}

const (
	sessionsDeadlineKey = "sessions:deadline"
	cometsDeadlineKey   = "comets:deadline"
)
