//go:build linux && (amd64 || arm64)

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A workload is real programs run for the whole suite: a leak planted at a
// call site of its own, or ordinary work that keeps kernel memory without
// leaking.
type workload struct {
	name string
	// leaks are the functions of the planted leak's call sites, as this
	// kernel names them; none for work that does not leak.
	leaks []string
	// within is how soon after the start the leak must be found.
	within time.Duration
	// run starts the workload's programs and returns when ctx ends.
	run func(ctx context.Context, s *suite) error
}

var workloads = []workload{
	// Leaks.
	{
		name: "SysV message queues made by ipcmk, which exits: 20/min", leaks: []string{"newque"}, within: 3 * time.Minute,
		run: func(ctx context.Context, s *suite) error { return s.ipcmk(ctx, "-Q", 3*time.Second) },
	},
	{
		name: "SysV semaphore sets made by ipcmk, which exits: 4/min", leaks: []string{"newary"}, within: 6 * time.Minute,
		run: func(ctx context.Context, s *suite) error { return s.ipcmk(ctx, "-S", 15*time.Second) },
	},
	{
		// A key and its payload, with its description, and the keyring's
		// index growing with them.
		name: "keys added to root's user keyring by a process that exits: 1/min", leaks: []string{"key_alloc", "user_preparse", "assoc_array_insert"},
		within: 12 * time.Minute,
		run:    func(ctx context.Context, s *suite) error { return s.addKeys(ctx, time.Minute) },
	},
	{
		name: "a process that opens an eventfd every 15 s and never closes it: 4/min", leaks: []string{"do_eventfd"}, within: 6 * time.Minute,
		run: func(ctx context.Context, s *suite) error {
			return s.python(ctx, "import os, time\nfds = []\nwhile True:\n    fds.append(os.eventfd(0))\n    time.sleep(15)\n")
		},
	},
	// Not leaks.
	{
		name: "file walks: every file of a large tree listed with its inode, a tree every 2 min",
		run: func(ctx context.Context, s *suite) error {
			trees := []string{"/usr", s.modCache, "/var", "/root", "/etc", "/opt"}
			for i := 0; ; i++ {
				_ = s.command(ctx, "find", trees[i%len(trees)], "-xdev", "-ls").Run() // killed at the end, unreadable files: all the same
				if !sleep(ctx, 2*time.Minute) {
					return nil
				}
			}
		},
	},
	{
		name: "a log grown with fsync, 20 lines a second",
		run: func(ctx context.Context, s *suite) error {
			return s.python(ctx, fmt.Sprintf("import os, time\nf = open(%q, 'a')\nwhile True:\n"+
				"    f.write('%%f the service did something worth a line in its log\\n' %% time.time())\n"+
				"    f.flush(); os.fsync(f.fileno()); time.sleep(0.05)\n", filepath.Join(s.dir, "service.log")))
		},
	},
	{
		name: "big files written and read into the page cache, 512 MiB every 4 min",
		run: func(ctx context.Context, s *suite) error {
			for i := 0; ; i++ {
				f := filepath.Join(s.dir, fmt.Sprintf("big-%d", i))
				_ = s.command(ctx, "sh", "-c", fmt.Sprintf("head -c 512M /dev/zero > %s && sync %s && cat %s > /dev/null", f, f, f)).Run() // killed at the end
				if !sleep(ctx, 4*time.Minute) {
					return nil
				}
			}
		},
	},
	{
		name: "go build of this project with a fresh build cache, every 10 min",
		run: func(ctx context.Context, s *suite) error {
			for i := 0; ; i++ {
				cmd := s.command(ctx, "go", "build", "-o", os.DevNull, "./cmd/kmemleak-soak")
				cmd.Dir = s.project
				cmd.Env = append(os.Environ(), "GOCACHE="+filepath.Join(s.dir, fmt.Sprintf("gocache-%d", i)))
				if out, err := cmd.CombinedOutput(); err != nil && ctx.Err() == nil {
					return fmt.Errorf("go build: %v: %s", err, out)
				}
				if !sleep(ctx, 10*time.Minute) {
					return nil
				}
			}
		},
	},
	{
		name: "services of long-lived processes started every 2 min (an HTTP server, a sleeper), kept",
		run: func(ctx context.Context, s *suite) error {
			for i := 0; ; i++ {
				cmd := s.command(ctx, "sleep", "infinity")
				if i%2 == 0 {
					cmd = s.command(ctx, "python3", "-m", "http.server", "--bind", "127.0.0.1", strconv.Itoa(18000+i))
				}
				if err := cmd.Start(); err != nil {
					return err
				}
				go func() { _ = cmd.Wait() }() // reaped; how it ends does not matter
				if !sleep(ctx, 2*time.Minute) {
					return nil
				}
			}
		},
	},
	{
		name: "a batch every 9 min that opens 2000 pipes in seconds, holds them 4 min, and exits",
		run: func(ctx context.Context, s *suite) error {
			for {
				s.pythonOnce(ctx, "import os, resource, time\nresource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))\n"+
					"held = [os.pipe() for _ in range(2000)]\ntime.sleep(240)\n")
				if !sleep(ctx, 5*time.Minute) {
					return nil
				}
			}
		},
	},
	{
		name: "loopback TCP: 20 connections a second opened and closed, each leaving a TIME_WAIT",
		run: func(ctx context.Context, s *suite) error {
			return s.python(ctx, "import socket, time\nsrv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(64)\n"+
				"while True:\n    c = socket.create_connection(srv.getsockname()); a, _ = srv.accept()\n"+
				"    c.close(); a.close(); time.sleep(0.05)\n")
		},
	},
	{
		name: "tmpfs files created and kept, 6 a minute",
		run: func(ctx context.Context, s *suite) error {
			dir := filepath.Join(s.dir, "tmpfs")
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return err
			}
			if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
				return fmt.Errorf("mounting a tmpfs: %w", err)
			}
			s.cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
			return s.until(ctx, s.command(ctx, "sh", "-c", fmt.Sprintf("i=0; while :; do echo kept > %s/file-$i; i=$((i+1)); sleep 10; done", dir)))
		},
	},
}

// suite is what the workloads share: a scratch directory, where this
// project and the module cache are, and what to undo at the end.
type suite struct {
	dir, project, modCache string

	mu       sync.Mutex
	cleanups []func()
}

func (s *suite) cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

// undo runs the cleanups, last first.
func (s *suite) undo() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
}

// command is a program of a workload, in a process group of its own that
// is killed whole when ctx ends, and killed if the suite dies.
func (s *suite) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// python runs a script until ctx ends.
func (s *suite) python(ctx context.Context, script string) error {
	return s.until(ctx, s.command(ctx, "python3", "-c", script))
}

// until runs cmd, meant to run until ctx ends: ending sooner is an error.
func (s *suite) until(ctx context.Context, cmd *exec.Cmd) error {
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("%s ended: %v", cmd.Path, err)
}

// pythonOnce runs a script to its end, or until ctx ends.
func (s *suite) pythonOnce(ctx context.Context, script string) {
	_ = s.command(ctx, "python3", "-c", script).Run() // killed when ctx ends
}

var ipcID = regexp.MustCompile(`id: (\d+)`)

// ipcmk makes a SysV IPC object of the kind flag says every interval, with
// a process that exits at once: the objects outlive who made them. They are
// removed at the end.
func (s *suite) ipcmk(ctx context.Context, flag string, interval time.Duration) error {
	args := map[string][]string{"-Q": {"-Q"}, "-S": {"-S", "1"}}[flag]
	for {
		out, err := s.command(ctx, "ipcmk", args...).Output()
		if ctx.Err() != nil {
			return nil
		}
		m := ipcID.FindSubmatch(out)
		if err != nil || m == nil {
			return fmt.Errorf("ipcmk %v: %v: %s", args, err, out)
		}
		id := string(m[1])
		s.cleanup(func() { _ = exec.Command("ipcrm", map[string]string{"-Q": "-q", "-S": "-s"}[flag], id).Run() })
		if !sleep(ctx, interval) {
			return nil
		}
	}
}

// addKey adds a user key to root's user keyring (KEY_SPEC_USER_KEYRING),
// which outlives the process, and prints its serial; invalidate removes
// one. Python has no add_key: ctypes calls the system call.
const (
	addKey = `import ctypes, os, platform, time
nr = {"x86_64": 248, "aarch64": 217}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
desc = b"kmemleak-verdicts-%d" % time.time_ns()
serial = libc.syscall(nr, b"user", desc, b"a payload that stays", 20, -4)
if serial < 0:
    raise OSError(ctypes.get_errno(), "add_key")
print(serial)
`
	invalidate = `import ctypes, platform, sys
nr = {"x86_64": 250, "aarch64": 219}[platform.machine()]
ctypes.CDLL(None).syscall(nr, 21, int(sys.argv[1]))
`
)

// addKeys adds a key every interval, each by a process that exits at once;
// they are invalidated at the end.
func (s *suite) addKeys(ctx context.Context, interval time.Duration) error {
	for {
		out, err := s.command(ctx, "python3", "-c", addKey).Output()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("add_key: %v: %s", err, out)
		}
		serial := strings.TrimSpace(string(out))
		s.cleanup(func() { _ = exec.Command("python3", "-c", invalidate, serial).Run() })
		if !sleep(ctx, interval) {
			return nil
		}
	}
}

// sleep waits d, and says false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
