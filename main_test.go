package main

import "testing"

// TestEveryCommandIsListed keeps the command table and the usage order in step.
func TestEveryCommandIsListed(t *testing.T) {
	listed := map[string]bool{}
	for _, name := range order {
		listed[name] = true
		c, ok := commands[name]
		if !ok || c.run == nil || c.help == "" {
			t.Errorf("command %q is listed but not defined with a help text", name)
		}
	}
	for name := range commands {
		if !listed[name] {
			t.Errorf("command %q is missing from the usage order", name)
		}
	}
}
