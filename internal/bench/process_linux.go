package bench

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill cmd when the bench process ends,
// however it ends: a bench cut short by its time limit (os.Exit) or
// killed does not leave its dev cluster running. (The signal comes when
// the thread that started cmd ends; the bench never locks a goroutine to
// its thread, so Go's threads end only with the process.)
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
