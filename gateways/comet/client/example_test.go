package client_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/laneim/laneim/gateways/comet/client"
)

// A client that stays in a room: it reconnects by itself, and after each
// reconnect reports what it missed before what is new.
func Example() {
	c, err := client.New(client.Config{
		URL: "ws://127.0.0.1:8080/ws",
		// Called for every login: return a fresh token when yours expires.
		Token: func(ctx context.Context) (string, error) { return os.Getenv("LANEIM_TOKEN"), nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	go func() {
		// Requests wait for a connection (within ctx and the request
		// timeout); the room is joined again after every reconnect.
		if _, err := c.Join(ctx, "lobby"); err != nil {
			log.Print(err)
			return
		}
		if _, err := c.SendRoom(ctx, "lobby", []byte("hello")); err != nil {
			log.Print(err)
		}
	}()
	for ev := range c.Events() {
		switch ev.Kind {
		case client.Connected:
			fmt.Println("connected as", ev.Login.GetUser())
		case client.Disconnected:
			fmt.Println("reconnecting:", ev.Err)
		case client.Messages:
			for _, m := range ev.Messages {
				fmt.Printf("[%s #%d] %s: %s\n", m.GetConversation(), m.GetSeq(), m.GetSender(), m.GetBody())
			}
		case client.Presence:
			fmt.Println(ev.Presence.GetUser(), "online:", ev.Presence.GetOnline())
		}
	}
}
