package comet

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed web
var web embed.FS

// WebClient serves the small chat page (web/index.html): log in with a
// token, join a room, see who is online, send and receive. It speaks the
// JSON subprotocol to the comet that serves it.
func WebClient() http.Handler {
	sub, _ := fs.Sub(web, "web")
	return http.FileServerFS(sub)
}
