//go:build !linux

package bench

import "os/exec"

// dieWithParent does nothing here: only Linux kills a child when its
// parent ends. A bench that exits without stopping its dev cluster
// leaves it running.
func dieWithParent(*exec.Cmd) {}
