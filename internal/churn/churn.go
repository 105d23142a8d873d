// Package churn generates an ordinary, allocation-heavy kernel workload for
// tests and soak runs: processes, files and loopback TCP connections.
package churn

import (
	"errors"
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
func Run(stop <-chan struct{}, rounds *atomic.Int64) (err error) {
	dir, err := os.MkdirTemp("", "kmemleak-churn")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			reset(c)
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
			reset(c)
		}
		rounds.Add(1)
	}
}

// reset closes a connection with a reset (SO_LINGER 0), which leaves no
// TIME_WAIT socket behind. Its errors are ignored: the other end may have
// reset it first, and either way nothing of it stays.
func reset(c net.Conn) {
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.Close()
}
