package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestDevClusterDiesWithTheBench: a process that started a child with
// dieWithParent and exits without stopping it (as a bench cut short by
// its time limit does) leaves no child behind. Without dieWithParent the
// child (a sleep) outlives it and the test fails.
func TestDevClusterDiesWithTheBench(t *testing.T) {
	if os.Getenv("LANEIM_TEST_ORPHAN_PARENT") == "1" {
		child := exec.Command("sleep", "60")
		dieWithParent(child)
		if err := child.Start(); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(child.Process.Pid)
		os.Exit(0) // without stopping the child
	}
	parent := exec.Command(os.Args[0], "-test.run=^TestDevClusterDiesWithTheBench$")
	parent.Env = append(os.Environ(), "LANEIM_TEST_ORPHAN_PARENT=1")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	_ = parent.Wait()
	pid, err := strconv.Atoi(line[:max(0, len(line)-1)])
	if err != nil {
		t.Fatalf("the parent printed %q, not the child's pid", line)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		// A killed child not yet reaped by init is a zombie: gone too.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && zombie(b) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child %d outlived its parent by 10 s", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// zombie reports whether a /proc/PID/stat line is a zombie's (state Z).
func zombie(stat []byte) bool {
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' {
			return i+2 < len(stat) && stat[i+2] == 'Z'
		}
	}
	return false
}
