// Package churn generates an ordinary, allocation-heavy kernel workload for
// tests and soak runs: processes, files and loopback TCP connections.
package churn

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
)

// Run forks and execs /bin/true (VMAs, maple-tree nodes, task structs),
// writes and unlinks a file (dentries, inodes, page cache) and opens and
// resets a loopback TCP connection (sockets, skbs), in a loop until stop is
// closed; it counts its rounds in rounds. It leaves nothing behind on
// purpose: one file name (one negative dentry), and connections reset
// instead of closed (no TIME_WAIT sockets), so that what stays allocated
// afterwards is not its doing.
func Run(stop <-chan struct{}, rounds *atomic.Int64) error {
	dir, err := os.MkdirTemp("", "kmemleak-churn")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	path := filepath.Join(dir, "churn")
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		if err := exec.Command("/bin/true").Run(); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte("churn"), 0o600); err != nil {
			return err
		}
		if err := os.Remove(path); err != nil {
			return err
		}
		// The server resets connections as soon as it accepts them, so a
		// dial may see the reset before it returns: that is fine.
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		rounds.Add(1)
	}
}
