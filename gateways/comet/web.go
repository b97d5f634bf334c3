package comet

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// web holds the chat page and its favicon; sdk the compiled TypeScript
// SDK (sdk/dist, committed; sdk/test checks it is not stale) the page
// imports as /sdk/index.js.
var (
	//go:embed web
	web embed.FS
	//go:embed sdk/dist/index.js
	sdk embed.FS
)

// WebClient serves the chat page (web/index.html): log in with a token,
// rooms with who is online in each, 1:1 conversations, history, unread
// counts from the read state, typing, edit and recall, reconnecting and
// catching up. It speaks the JSON subprotocol to
// the comet that serves it, through the SDK at /sdk/index.js.
func WebClient() http.Handler {
	pages, _ := fs.Sub(web, "web")
	lib, _ := fs.Sub(sdk, "sdk/dist")
	pageServer := http.FileServerFS(pages)
	libServer := http.StripPrefix("/sdk", http.FileServerFS(lib))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/sdk/") {
			libServer.ServeHTTP(w, r)
			return
		}
		pageServer.ServeHTTP(w, r)
	})
}
